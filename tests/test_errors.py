"""The input contract: one test per row of the table in docs/errors.md (core, Dask and compat).

Every invalid call raises ValueError or TypeError whose message names the argument (checked with ``match``),
before anything large is allocated; sizes beyond the machine's memory are refused by the shape rules with a
ValueError, never a MemoryError; NaN and Inf propagate as in the reference.
"""

import numpy as np
import pytest
from conftest import METHODS
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _geometry as geo
from fastdeconv import compat

X = np.ones((1, 2, 3, 3))  # core / ONNX: (N, C_in, H, W)
W = np.ones((2, 1, 2, 2))  # (C_in, C_out // groups, kH, kW)
XT = np.ones((1, 3, 4, 2))  # TF NHWC
FT = np.ones((3, 3, 1, 2))  # TF [kH, kW, C_out // groups, C_in]
HUGE = [114078056, 179835296]
BEYOND_MEMORY = geo._physical_memory() // 4 + 1  # float32 elements


def _ct(x=X, weight=W, **kw):
    return lambda: fd.conv_transpose(x, weight, **kw)


def _tf(x=XT, f=FT, shape=(1, 6, 8, 1), strides=2, **kw):
    return lambda: compat.tf_conv2d_transpose(x, f, list(shape), strides, **kw)


def _onnx(x=X, w=W, b=None, **kw):
    return lambda: compat.onnx_conv_transpose(x, w, b, **kw)


def _check(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------------------------- core


@pytest.mark.parametrize("call, exc, match", [
    (_ct(x=X + 0j), TypeError, "x must be real"),
    (_ct(x=np.array([["a"]])), TypeError, "x must be numeric"),
    (_ct(x=[[1.0], [1.0, 2.0]]), TypeError, "x must be array-like"),
    (_ct(weight=np.ones((2, 1)) + 0j), TypeError, "weight must be real"),
    (_ct(weight=np.ones((2, 1))), ValueError, "weight must have shape"),
    (_ct(weight=np.ones((2, 1, 1, 1, 1, 1))), ValueError, "weight must have shape"),
    (_ct(x=np.ones((1, 1, 2, 3, 3))), ValueError, "x must have shape"),
    (_ct(x=np.ones((1, 3, 3, 3))), ValueError, r"weight.shape\[0\]"),
    (_ct(weight=np.ones((2, 1, 0, 2))), ValueError, "kernel sizes"),
    (_ct(x=np.ones((1, 2, 0, 3))), ValueError, "x spatial sizes"),
])
def test_core_x_and_weight(call, exc, match):
    _check(call, exc, match)


def _masked(a):
    return np.ma.masked_array(a, mask=np.zeros(np.shape(a), bool))


def _requires_grad(a):
    torch = pytest.importorskip("torch")
    return torch.tensor(a).requires_grad_(True)


@pytest.mark.parametrize("name", ["x", "weight", "bias"])
@pytest.mark.parametrize("make, match", [
    (_masked, "must not be a masked array"),
    (_requires_grad, r"is a tensor that requires grad: pass .*\.detach\(\)\.numpy\(\)"),
])
def test_core_array_objects(name, make, match):
    """ndarray subclasses (np.matrix) are taken as their data and any byte order as its precision
    (tests/test_hostile.py); masked arrays and tensors that require grad are refused, naming the argument."""
    args = dict(x=X, weight=W, bias=np.ones(1))
    args[name] = make(args[name])
    _check(lambda: fd.conv_transpose(**args), TypeError, f"{name} {match}")


@pytest.mark.parametrize("call, match", [
    (_ct(stride=2**63), "stride must fit in a 64-bit signed integer"),
    (_ct(dilation=(2**63, 1)), "dilation must fit in a 64-bit signed integer"),
    (_ct(padding=((0, 2**64), (0, 0))), "padding must fit in a 64-bit signed integer"),
    (_ct(output_padding=-(2**63) - 1), "output_padding must fit in a 64-bit signed integer"),
    (_ct(groups=2**63), "groups must fit in a 64-bit signed integer"),
    (_ct(output_size=(2**63, 4)), "output_size must fit in a 64-bit signed integer"),
    (lambda: fd.plan((1, 2, 2**63, 3), W.shape), "x_shape must fit in a 64-bit signed integer"),
    (_ct(stride=2**62, padding=((0, 2**63 - 1), (0, 0))), "stride and dilation are too large on spatial axis 0"),
])
def test_core_geometry_ints_fit_int64(call, match):
    _check(call, ValueError, match)


@pytest.mark.parametrize("call, exc, match", [
    (_ct(bias=np.ones(3)), ValueError, "bias must have shape"),
    (_ct(bias=np.ones((1, 1))), ValueError, "bias must have shape"),
    (_ct(bias=np.array(["a"])), TypeError, "bias must be numeric"),
    (_ct(bias=np.ones(1) + 0j), TypeError, "bias"),
])
def test_core_bias(call, exc, match):
    _check(call, exc, match)


@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value, exc, match", [
    (1.5, TypeError, "must be an int"), (True, TypeError, "not bool"), ("2", TypeError, "must be an int"),
    (0, ValueError, ">= 1"), (-2, ValueError, ">= 1"), ((1, 1, 1), ValueError, "sequence of 2 ints"),
    ([1, (2, 3)], TypeError, "must be an int"),
])
def test_core_stride_and_dilation(name, value, exc, match):
    _check(_ct(**{name: value}), exc, f"{name} {match}" if match.startswith("must") else f"{name}.*{match}")


@pytest.mark.parametrize("value, exc, match", [
    (-1, ValueError, "padding must be >= 0"), ("full", ValueError, "unknown padding string"),
    ((1, 1, 1), ValueError, "padding must be an int, 2 ints"), ([(1, 1, 1), (0, 0)], ValueError, "padding pairs"),
    (0.5, TypeError, "padding must be an int"), (b"same", TypeError, "padding must be"),
    (3, ValueError, "padding too large"),
])
def test_core_padding(value, exc, match):
    _check(_ct(padding=value), exc, match)
    assert fd.conv_transpose(X, W, padding=[1, (0, 1)]).shape == (1, 1, 2, 3)  # mixed per-axis forms are fine


@pytest.mark.parametrize("kw, match", [
    (dict(stride=2, output_padding=2), "output_padding must be smaller than max"),
    (dict(stride=1, dilation=2, output_padding=2), "output_padding must be smaller than max"),
    (dict(stride=2, output_padding=-1), "output_padding must be >= 0"),
    (dict(stride=2, padding="same", output_padding=1), "output_padding must be 0 with padding='same'"),
])
def test_core_output_padding(kw, match):
    _check(_ct(**kw), ValueError, match)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(stride=2, output_size=(9, 9)), ValueError, "output_size .* is not reachable"),
    (dict(stride=2, output_size=HUGE), ValueError, "output_size .* is not reachable"),
    (dict(output_size=5), TypeError, "output_size must be a sequence"),
    (dict(output_size=(1, 1, 1, 1, 4)), ValueError, "output_size must have 2 spatial entries"),
    (dict(output_size=(0, 4)), ValueError, "output_size entries must be >= 1"),
    (dict(stride=2, output_size=(7, 7), output_padding=1), ValueError, "output_size or output_padding"),
    (dict(stride=2, padding="same", output_size=(5, 5)), ValueError, "output_size .* padding='same'"),
])
def test_core_output_size(kw, exc, match):
    _check(_ct(**kw), exc, match)


@pytest.mark.parametrize("value, exc, match", [
    (0, ValueError, "groups must be >= 1"), (3, ValueError, "divisible by groups"),
    (1.0, TypeError, "groups must be an int"),
])
def test_core_groups(value, exc, match):
    _check(_ct(groups=value), exc, match)


@pytest.mark.parametrize("value", ["fft", "", None, 1])
def test_core_method(value):
    _check(_ct(method=value), ValueError, "method must be one of")


@pytest.mark.parametrize("out, exc, match", [
    ([1.0], TypeError, "out must be a numpy.ndarray"),
    (np.empty((1, 1, 4, 5)), ValueError, "out must have the result's shape"),
    (np.empty((1, 1, 4, 4), np.float32), TypeError, "out must have the result's dtype"),
])
def test_core_out(out, exc, match):
    _check(_ct(out=out), exc, match)
    read_only = np.empty((1, 1, 4, 4))
    read_only.flags.writeable = False
    _check(_ct(out=read_only), ValueError, "out must be writeable")


@pytest.mark.parametrize("call, match", [
    (_ct(stride=10**9), "the output of shape"),
    (_ct(stride=10**5, method="zerofill"), "the output of shape"),
    (lambda: fd.zero_fill(X, 10**9), "the zero-filled array"),
    (_tf(shape=HUGE), "output_shape .* is refused"),  # TF's shape rule, not the allocator
    (_tf(x=np.ones((1, 1, 1, 2)), shape=HUGE, strides=HUGE), "the output of shape"),
    (_onnx(output_shape=HUGE), "output_shape .* is not reachable"),
    (_onnx(strides=HUGE), "the output of shape"),
    # a broadcast view of one element is a real array to copy: refused like every other oversized buffer
    (_ct(x=np.broadcast_to(np.float32(1), (1, 1, BEYOND_MEMORY)), weight=np.ones((1, 1, 1), np.float32),
         padding=((0, BEYOND_MEMORY - 4),)), "a contiguous float32 copy of x of shape"),
])
def test_too_large_outputs_are_refused_by_shape_rules(call, match):
    _check(call, ValueError, match)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fd.zero_fill(X, 0), ValueError, "stride must be >= 1"),
    (lambda: fd.zero_fill(X, 2, "same"), ValueError, "padding for zero_fill"),
    (lambda: fd.zero_fill(X, 2, -1), ValueError, "padding must be >= 0"),
    (lambda: fd.zero_fill(np.ones(3), 2), ValueError, "x must be"),
    (lambda: fd.zero_fill(np.ones((2, 3)), (2, 2, 2)), ValueError, "x must have 1 or 2 leading axes"),
    (lambda: fd.zero_fill(np.ones((1, 2, 0)), 2), ValueError, "x spatial sizes"),
    (lambda: fd.zero_fill(X + 0j, 2), TypeError, "x must be real"),
])
def test_zero_fill_arguments(call, exc, match):
    _check(call, exc, match)


@pytest.mark.parametrize("make, shape, exc, match", [
    ("conv_matrix", None, TypeError, "input_shape must be a sequence"),
    ("linear_operator", None, TypeError, "input_shape must be a sequence"),
    ("linear_operator", (3.0,), TypeError, "input_shape must be an int"),
    ("linear_operator", (3, 3), ValueError, "input_shape must hold the 1 spatial"),
    ("linear_operator", (0,), ValueError, "input_shape must be >= 1"),
    ("linear_operator", (1,), ValueError, "output size must be >= 1"),
    ("linear_operator", (BEYOND_MEMORY,), ValueError, "the input of one sample of shape .* would need"),
])
def test_input_shape_of_one_sample(make, shape, exc, match):
    shape = 3 if shape is None else shape  # None: a bare int where a sequence belongs
    weight = np.ones((1, 1, 2), np.float32)
    kw = {"stride": BEYOND_MEMORY} if match.startswith("the input") else {}
    _check(lambda: getattr(fd, make)(weight, shape, **kw), exc, match)


@pytest.mark.parametrize("operand, method, exc, match", [
    (np.ones(4), "matvec", ValueError, "dimension mismatch"),
    (np.ones((3, 3)), "rmatmat", ValueError, "dimension mismatch"),
    (np.array(["a"] * 3), "matvec", TypeError, "the operand must be numeric"),
    (np.array([[None]] * 2), "rmatmat", TypeError, "the operand must be numeric"),
])
def test_linear_operator_operands(operand, method, exc, match):
    op = fd.linear_operator(np.ones((1, 1, 2)), (3,))  # 2 x 3
    _check(lambda: getattr(op, method)(operand), exc, match)


@pytest.mark.parametrize("method", METHODS)
def test_nan_and_inf_propagate_as_in_the_reference(method):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 2, 4, 5)), rng.standard_normal((2, 3, 3, 2))
    x[0, 1, 2, 3], x[1, 0, 0, 0], x[1, 1, 3, 4] = np.nan, np.inf, -np.inf
    expected = conv_transpose_ref(x, w, stride=2, padding=1)
    y = fd.conv_transpose(x, w, stride=2, padding=1, method=method)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)  # equal_nan; inf positions and signs match
    assert np.isnan(y).any() and np.isinf(y).any()
    if method != "zerofill":  # see test_zerofill_multiplies_inserted_zeros_by_inf_weights
        w[0, 1, 1, 0], w[1, 2, 0, 1] = np.inf, np.nan
        x = rng.standard_normal((2, 2, 4, 5))
        y = fd.conv_transpose(x, w, stride=2, padding=1, method=method)
        np.testing.assert_allclose(y, conv_transpose_ref(x, w, stride=2, padding=1), rtol=1e-10, atol=1e-10)
    # the adapters run the same kernels
    x32 = x.astype(np.float32)
    y = compat.onnx_conv_transpose(x32, w, strides=[2, 2], pads=[1, 1, 1, 1])
    np.testing.assert_allclose(y, conv_transpose_ref(x32, w, stride=2, padding=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["x", "weight", "bias"])
def test_dask_blocks_have_their_declared_shapes(name):
    """fastdeconv.dask: a computed block whose real shape contradicts its Dask array's declared one is refused
    (ValueError naming the argument), never reshaped or broadcast."""
    da = pytest.importorskip("dask.array")
    import dask

    import fastdeconv.dask as fdd

    declared = dict(x=(1, 2, 6), weight=(2, 3, 2), bias=(3,))
    real = dict(declared, **{name: dict(x=(1, 6, 2), weight=(3, 2, 2), bias=(1, 3))[name]})
    args = {k: da.from_delayed(dask.delayed(np.ones)(real[k]), shape=declared[k], dtype=np.float64) for k in real}
    y = fdd.conv_transpose(args["x"], args["weight"], args["bias"], stride=2)
    _check(lambda: y.compute(scheduler="synchronous"), ValueError, f"a block of {name} has shape")


def test_zerofill_multiplies_inserted_zeros_by_the_weights():
    """zerofill is the textbook route: it really multiplies the inserted zeros (0 * inf = nan, IEEE 754), where
    scatter and gather, like the reference, never touch them. Documented in docs/errors.md."""
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3))
    w[0, 0, 0, 1] = np.inf
    ref_nan = np.isnan(conv_transpose_ref(x, w, stride=2, padding=1))
    for method in ("scatter", "gather"):
        y = fd.conv_transpose(x, w, stride=2, padding=1, method=method)
        np.testing.assert_array_equal(np.isnan(y), ref_nan)
    y = fd.conv_transpose(x, w, stride=2, padding=1, method="zerofill")
    assert np.isnan(y).sum() > ref_nan.sum()  # outputs fed only by inserted zeros times the inf tap
    finite = ~np.isnan(y)
    np.testing.assert_array_equal(y[finite], conv_transpose_ref(x, w, stride=2, padding=1)[finite])

# --------------------------------------------------------------------------------------------- TensorFlow


@pytest.mark.parametrize("call, exc, match", [
    (_tf(f=np.ones((3, 3, 1))), ValueError, "filters must have shape"),
    (lambda: compat.tf_conv_transpose(XT, np.ones((1,) * 6), [1, 6, 8, 1], 2), ValueError, "filters must have"),
    (_tf(x=np.ones((3, 4, 2))), ValueError, "input must have shape NHWC"),
    (_tf(x=np.ones((1, 3, 4, 3))), ValueError, r"filters.shape\[-1\] \(C_in\)"),
    (_tf(x=XT + 0j), TypeError, "input must be real"),
    (_tf(f=FT.astype(str)), TypeError, "filters must be numeric"),
    (_tf(f=np.ones((0, 3, 1, 2))), ValueError, "filters spatial sizes"),
    (_tf(f=np.ones((3, 3, 0, 2)), shape=(6, 8)), ValueError, r"filters.shape\[2\]"),
])
def test_tf_input_and_filters(call, exc, match):
    _check(call, exc, match)


@pytest.mark.parametrize("shape, exc, match", [
    ((1, 6, 8), ValueError, "output_shape must have 4 entries"),
    ((1, -6, 8, 1), ValueError, "output_shape entries must be >= 0"),
    ((1, 6.0, 8, 1), TypeError, "output_shape must be"),
    ((2, 6, 8, 1), ValueError, "output_shape batch"),
    ((1, 6, 8, 3), ValueError, "divisible by groups"),
    ((1, 6, 8, 0), ValueError, "output_shape channels"),
    ((1, 5, 9, 1), ValueError, r"output_shape \[5, 9\] is refused on spatial axis 1"),
    ((1, 4, 8, 1), ValueError, r"output_shape \[4, 8\] is refused on spatial axis 0.*out in \[5, 6\]"),
])
def test_tf_output_shape(shape, exc, match):
    _check(_tf(shape=shape), exc, match)
    _check(lambda: compat.tf_conv2d_transpose(XT, FT, 6, 2), TypeError, "output_shape must be a 1-D sequence")


@pytest.mark.parametrize("name", ["strides", "dilations"])
@pytest.mark.parametrize("value, exc, match", [
    ([2, 2, 2], ValueError, "list of length 1, 2 or 4"), ([2, 2, 2, 1], ValueError, "batch and channel"),
    ([1, 1, 1, 2], ValueError, "batch and channel"), (0, ValueError, ">= 1"), (2.0, TypeError, "must be an int"),
    ("2", TypeError, "must be an int"), ([1, (2, 2)], TypeError, "must be an int"),
])
def test_tf_strides_and_dilations(name, value, exc, match):
    call = _tf(strides=value) if name == "strides" else _tf(strides=1, shape=(1, 3, 4, 1), dilations=value)
    _check(call, exc, f"{name}.*{match}")


@pytest.mark.parametrize("value, exc, match", [
    ("same", ValueError, "padding must be 'SAME', 'VALID'"), ("EXPLICIT", ValueError, "padding must be 'SAME'"),
    ([[1, 0], [1, 1]], ValueError, "explicit padding must be a list of 4"),
    ([[0, 0], [-1, 0], [1, 1], [0, 0]], ValueError, "explicit padding must be >= 0"),
    ([[1, 0], [1, 0], [1, 1], [0, 0]], ValueError, "batch and channel dimensions must be \\[0, 0\\]"),
    ([[0, 0], [1, 0, 0], [1, 1], [0, 0]], ValueError, "explicit padding entries must be"),
    (1, TypeError, "padding must be 'SAME', 'VALID' or a list"),
])
def test_tf_padding(value, exc, match):
    _check(_tf(padding=value), exc, match)


@pytest.mark.parametrize("call", [
    _tf(data_format="NWHC"), _tf(data_format=None), _tf(data_format="NCW"),
    lambda: compat.tf_conv_transpose(XT, FT, [1, 6, 8, 1], 2, data_format="NWC"),
    lambda: compat.tf_conv_transpose(np.ones((1, 3, 1)), np.ones((3, 1, 1)), [1, 6, 1], 2, data_format="NHWC"),
])
def test_tf_data_format(call):
    _check(call, ValueError, "data_format must be")


# --------------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("call, exc, match", [
    (_onnx(x=X[0]), ValueError, "X must have shape"),
    (_onnx(w=np.ones((2, 1))), ValueError, "W must have shape"),
    (_onnx(x=np.ones((1, 3, 3, 3))), ValueError, r"W.shape\[0\]"),
    (_onnx(x=np.ones((1, 2, 0, 3))), ValueError, "X spatial sizes"),
    (_onnx(w=np.ones((2, 1, 0, 2))), ValueError, "W spatial sizes"),
    (_onnx(b=np.ones(2)), ValueError, r"B must have shape \(M,\)"),
    (_onnx(x=X + 0j), TypeError, "X must be real"),
    (_onnx(b=np.ones(1) + 0j), TypeError, "B must be real"),
])
def test_onnx_x_w_b(call, exc, match):
    _check(call, exc, match)


@pytest.mark.parametrize("kw, match", [
    (dict(auto_pad="SAME"), "auto_pad must be one of"), (dict(auto_pad="same_upper"), "auto_pad must be one of"),
    (dict(auto_pad=None), "auto_pad must be one of"),
    (dict(auto_pad="VALID", pads=[0, 0, 0, 0]), "pads and auto_pad"),
    (dict(auto_pad="SAME_UPPER", pads=[1, 1, 1, 1]), "pads and auto_pad"),
    (dict(pads=[1, 1]), r"pads must have 2 \* 2 = 4 entries"),
    (dict(pads=[-1, 0, 0, 0]), "pads must be >= 0"),
    (dict(pads=[2, 0, 2, 0]), "output size on axis 0 would be 0"),
])
def test_onnx_auto_pad_and_pads(kw, match):
    _check(_onnx(**kw), ValueError, match)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(strides=[0, 1]), ValueError, "strides must be >= 1"),
    (dict(strides=[1]), ValueError, "strides must be an int or a sequence of 2"),
    (dict(dilations=[-1, 1]), ValueError, "dilations must be >= 1"),
    (dict(dilations=[1.5, 1]), TypeError, "dilations must be an int"),
    (dict(output_padding=[-1, 0]), ValueError, "output_padding must be >= 0"),
    (dict(strides=[2, 2], output_padding=[2, 0]), ValueError, "output_padding must be smaller than strides"),
    (dict(dilations=[2, 2], output_padding=[1, 0]), ValueError, "output_padding must be smaller than strides"),
])
def test_onnx_strides_dilations_output_padding(kw, exc, match):
    _check(_onnx(**kw), exc, match)


@pytest.mark.parametrize("value, exc, match", [
    ([-1, 4], ValueError, "output_shape must be >= 1"), ([0, 4], ValueError, "output_shape must be >= 1"),
    ([1, 1, 4, 4], ValueError, "output_shape must be an int or a sequence of 2"),
    ([5, 4], ValueError, r"output_shape \[5, 4\] is not reachable on axis 0: it must be at most .* = 4"),
    (HUGE, ValueError, "output_shape .* is not reachable"),
    ("44", TypeError, "output_shape"),
])
def test_onnx_output_shape(value, exc, match):
    _check(_onnx(output_shape=value), exc, match)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(kernel_shape=[3, 3]), ValueError, r"kernel_shape \[3, 3\] must match W.shape\[2:\]"),
    (dict(kernel_shape=[2]), ValueError, "kernel_shape must be an int or a sequence of 2"),
    (dict(group=0), ValueError, "group must be >= 1"), (dict(group=3), ValueError, "divisible by group"),
    (dict(group=2.0), TypeError, "group must be an int"),
])
def test_onnx_kernel_shape_and_group(kw, exc, match):
    _check(_onnx(**kw), exc, match)


# --------------------------------------------------------------------------------------------- seed 000


@pytest.mark.parametrize("w, exc, match", [
    (np.ones((2, 2)), ValueError, "w must have shape"), (np.ones((1,) * 6), ValueError, "w must have shape"),
    (np.array([[["a"]]]), TypeError, "w must be numeric"), (np.ones((1, 1, 2)) + 0j, TypeError, "w must be real"),
])
def test_from_correlation_weights_w(w, exc, match):
    _check(lambda: compat.from_correlation_weights(w), exc, match)


def test_plan_cache_does_not_accept_bool_or_float_after_an_int():
    """1, 1.0 and True hash alike: a cached plan for stride=1 must not let stride=True or 1.0 through."""
    x, w = np.ones((1, 1, 3)), np.ones((1, 1, 2))
    fd.conv_transpose(x, w, stride=1, dilation=1)
    with pytest.raises(TypeError, match="stride"):
        fd.conv_transpose(x, w, stride=True)
    with pytest.raises(TypeError, match="dilation"):
        fd.conv_transpose(x, w, dilation=1.0)
    with pytest.raises(TypeError, match="stride"):
        fd.compat.onnx_conv_transpose(x, w, strides=[1.0])


def test_hot_path_keys_tuples_exactly():
    """Per-axis tuples take the cached path too; a float or bool inside one never matches an int key."""
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    fd.conv_transpose(x, w, stride=(2, 2), padding=((1, 0), (0, 1)))
    with pytest.raises(TypeError, match="stride"):
        fd.conv_transpose(x, w, stride=(2.0, 2), padding=((1, 0), (0, 1)))
    with pytest.raises(TypeError, match="padding"):
        fd.conv_transpose(x, w, stride=(2, 2), padding=((True, 0), (0, 1)))
