"""fastdeconv.compat: every adapter against the float64 reference, its layout mapping, and the decisions.

The reference (tests/reference.py) computes the uncropped scatter output ``full`` literally; each test
states the framework's rule for ``start`` and ``size`` (written here from SEMANTICS.md, independently of
compat.py) and compares ``full[start : start + size]`` with the adapter.
"""

import json
import pathlib

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import assume, given
from hypothesis import strategies as st
from reference import conv_transpose_ref, crop, full_output
from test_core import SEED000_INPUT, SEED000_PRINTED, SEED000_WEIGHTS

import fastdeconv as fd
from fastdeconv import compat

ONNX_CASES = json.loads((pathlib.Path(__file__).parent / "data" / "onnx_convtranspose.json").read_text())


def _expected(x_nc, w, starts, sizes, stride, dilation, groups=1, bias=None):
    """full[start : start + size] per axis (zeros past the ends) of channels-first float64 inputs."""
    full = full_output(np.asarray(x_nc, np.float64), np.asarray(w, np.float64), stride, groups, dilation)
    y = crop(full, starts, sizes)
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * len(starts))
    return y


# --------------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("case", ONNX_CASES, ids=[c["name"] for c in ONNX_CASES])
def test_onnx_conformance_cases(case):
    x, w = np.asarray(case["x"], np.float32), np.asarray(case["w"], np.float32)
    b = np.asarray(case["b"], np.float32) if case.get("b") is not None else None
    y = compat.onnx_conv_transpose(x, w, b, **case["attrs"])
    assert y.dtype == np.float32
    assert y.shape == tuple(case["expected_shape"])
    np.testing.assert_allclose(y, np.asarray(case["expected"], np.float32).reshape(y.shape), rtol=1e-5, atol=1e-5)
    geometry = case["resolved_geometry"]
    assert list(y.shape[2:]) == geometry["output_spatial"]


@st.composite
def onnx_calls(draw):
    rank = draw(st.integers(1, 3))
    group = draw(st.integers(1, 2))
    c, m_g = group * draw(st.integers(1, 2)), draw(st.integers(1, 2))
    spatial = draw(st.lists(st.integers(1, {1: 7, 2: 5, 3: 3}[rank]), min_size=rank, max_size=rank))
    kernel = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    strides = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dilations = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    op = [draw(st.integers(0, s - 1)) for s in strides]
    mode = draw(st.sampled_from(["pads", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "output_shape"]))
    full = [(i - 1) * s + (k - 1) * d + 1 for i, k, s, d in zip(spatial, kernel, strides, dilations)]
    attrs = dict(strides=strides, dilations=dilations, group=group, output_padding=op)
    if mode == "pads":
        pads = [draw(st.integers(0, 3)) for _ in range(2 * rank)]
        sizes = [f + o - pads[a] - pads[a + rank] for a, (f, o) in enumerate(zip(full, op))]
        if min(sizes) < 1:
            pads = [0] * (2 * rank)
            sizes = [f + o for f, o in zip(full, op)]
        attrs["pads"], starts = pads, pads[:rank]
    elif mode in ("NOTSET", "VALID"):
        attrs["auto_pad"], starts, sizes = mode, [0] * rank, [f + o for f, o in zip(full, op)]
    elif mode.startswith("SAME"):
        attrs["auto_pad"] = mode
        totals = [max(0, f + o - i * s) for f, o, i, s in zip(full, op, spatial, strides)]
        starts = [t // 2 if mode == "SAME_UPPER" else (t + 1) // 2 for t in totals]
        sizes = [f + o - t for f, o, t in zip(full, op, totals)]
    else:
        auto_pad = draw(st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
        sizes = [draw(st.integers(1, f + s - 1)) for f, s in zip(full, strides)]
        totals = [max(0, f + o - n) for f, o, n in zip(full, op, sizes)]
        starts = [t // 2 if auto_pad == "SAME_UPPER" else (t + 1) // 2 for t in totals]
        attrs.update(auto_pad=auto_pad, output_shape=sizes)
        if auto_pad == "NOTSET" and draw(st.booleans()):
            attrs["pads"] = [draw(st.integers(0, 2)) for _ in range(2 * rank)]  # ignored with output_shape
    return dict(rank=rank, c=c, m_g=m_g, group=group, spatial=spatial, kernel=kernel, attrs=attrs,
                starts=starts, sizes=sizes)


@given(call=onnx_calls(), batch=st.integers(0, 2), dtype=st.sampled_from([np.float32, np.float64]),
       use_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_onnx_matches_reference(call, batch, dtype, use_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, call["c"]) + tuple(call["spatial"])).astype(dtype)
    w = rng.standard_normal((call["c"], call["m_g"]) + tuple(call["kernel"])).astype(dtype)
    b = rng.standard_normal(call["m_g"] * call["group"]).astype(dtype) if use_bias else None
    attrs = call["attrs"]
    y = compat.onnx_conv_transpose(x, w, b, **attrs)
    expected = _expected(x, w, call["starts"], call["sizes"], attrs["strides"], attrs["dilations"], call["group"], b)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **tolerance(dtype))


def test_onnx_is_the_core_with_pads_as_pairs():
    """Layout mapping: ONNX's X/W/B are the core's x/weight/bias; pads [b1.., e1..] are (before, after) pairs."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 5, 3)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(6)
    y = compat.onnx_conv_transpose(x, w, b, group=2, strides=[2, 3], pads=[1, 0, 2, 1], output_padding=[1, 2],
                                   dilations=[1, 2], kernel_shape=[3, 2])
    core = fd.conv_transpose(x, w, b, stride=(2, 3), padding=[(1, 2), (0, 1)], output_padding=(1, 2), groups=2,
                             dilation=(1, 2))
    np.testing.assert_array_equal(y, core)


def test_onnx_decisions():
    """Where the ONNX text and its implementations disagree, onnxruntime 1.32 is followed (SEMANTICS 2, 4)."""
    x = np.arange(1.0, 5.0).reshape(1, 1, 4)
    w = np.array([1.0, 10.0, 100.0]).reshape(1, 1, 3)
    full = full_output(x, w, (3,), 1, (1,))[0, 0]  # length 12
    run = compat.onnx_conv_transpose
    # total padding +1: NOTSET/SAME_LOWER/VALID crop the odd extra at the beginning, SAME_UPPER at the end
    for auto_pad in ("NOTSET", "SAME_LOWER", "VALID"):
        np.testing.assert_array_equal(run(x, w, strides=[3], output_shape=[11], auto_pad=auto_pad)[0, 0], full[1:])
    np.testing.assert_array_equal(run(x, w, strides=[3], output_shape=[11], auto_pad="SAME_UPPER")[0, 0], full[:11])
    # output_shape above the natural size: no crop, zeros at the END, up to (in - 1) * s + Keff + s - 1 = 14
    for auto_pad in ONNX_AUTO_PADS:
        y = run(x, w, strides=[3], output_shape=[14], auto_pad=auto_pad)[0, 0]
        np.testing.assert_array_equal(y, np.concatenate([full, [0.0, 0.0]]))
        with pytest.raises(ValueError, match="output_shape"):
            run(x, w, strides=[3], output_shape=[15], auto_pad=auto_pad)
    # SAME with (k - 1) * d + 1 < stride: the natural size (onnxruntime), not input * stride
    one = np.ones((1, 1, 1))
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        np.testing.assert_array_equal(run(x, one, strides=[2], auto_pad=auto_pad)[0, 0], [1, 0, 2, 0, 3, 0, 4])
    # output_padding must be < stride, even when it is < dilation
    with pytest.raises(ValueError, match="output_padding"):
        run(x, w, strides=[1], dilations=[2], output_padding=[1])
    # pads are ignored when output_shape is given
    np.testing.assert_array_equal(run(x, w, strides=[3], pads=[2, 2], output_shape=[12])[0, 0], full)


ONNX_AUTO_PADS = compat.ONNX_AUTO_PADS


# --------------------------------------------------------------------------------------------- TensorFlow


def _tf_rule(padding, i, k, s, d):
    """Accepted output sizes and the crop start of each, from TF's conv_grad_shape_utils (floor form)."""
    keff = (k - 1) * d + 1
    full = (i - 1) * s + keff
    if padding == "SAME":
        return {o: max(0, full - o) // 2 for o in range((i - 1) * s + 1, i * s + 1)}
    b, a = (0, 0) if padding == "VALID" else padding
    return {o: b for o in range(max(full - b - a, 0), full - b - a + s)}


@st.composite
def tf_calls(draw):
    rank = draw(st.integers(1, 3))
    channels_last = draw(st.booleans())
    fmt = compat.TF_FORMATS[rank][0 if channels_last else 1]
    groups = draw(st.integers(1, 2))
    c_in, c_out_g = groups * draw(st.integers(1, 2)), draw(st.integers(1, 2))
    spatial = draw(st.lists(st.integers(1, {1: 7, 2: 5, 3: 3}[rank]), min_size=rank, max_size=rank))
    kernel = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    strides = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dilations = draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank))
    kind = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    pads = [kind if kind != "explicit" else (draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank)]
    rules = [_tf_rule(p, i, k, s, d) for p, i, k, s, d in zip(pads, spatial, kernel, strides, dilations)]
    assume(all(rules))  # explicit pads can leave no valid size at all
    out = [draw(st.sampled_from(sorted(r))) for r in rules]
    if kind == "explicit":
        pairs = [[0, 0]] + [list(p) for p in pads] + [[0, 0]]
        padding = pairs if channels_last else [pairs[0], pairs[-1]] + pairs[1:-1]
    else:
        padding = kind
    n = draw(st.integers(0, 2))
    full_shape = draw(st.booleans()) or groups > 1
    c_out = c_out_g * groups
    shape = ([n] + out + [c_out] if channels_last else [n, c_out] + out) if full_shape else out
    if not full_shape:
        c_out, groups = c_out_g, 1
        c_in = draw(st.integers(1, 2))
    stride_form = draw(st.sampled_from(["list", "full", "int"])) if len(set(strides)) == 1 else "list"
    strides_arg = {"int": strides[0], "list": strides,
                   "full": [1] + strides + [1] if channels_last else [1, 1] + strides}[stride_form]
    return dict(rank=rank, channels_last=channels_last, fmt=fmt, groups=groups, c_in=c_in, c_out=c_out,
                c_out_g=c_out_g, spatial=spatial, kernel=kernel, strides=strides, dilations=dilations,
                padding=padding, shape=shape, out=out, starts=[r[o] for r, o in zip(rules, out)], n=n,
                strides_arg=strides_arg)


@given(call=tf_calls(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_tf_matches_reference(call, dtype, seed):
    rng = np.random.default_rng(seed)
    rank, cl = call["rank"], call["channels_last"]
    x_nc = rng.standard_normal((call["n"], call["c_in"]) + tuple(call["spatial"])).astype(dtype)
    filters = rng.standard_normal(tuple(call["kernel"]) + (call["c_out_g"], call["c_in"])).astype(dtype)
    x = np.moveaxis(x_nc, 1, -1) if cl else x_nc
    y = compat.tf_conv_transpose(x, filters, call["shape"], call["strides_arg"], call["padding"], call["fmt"],
                                 call["dilations"])
    if rank == 2:
        y2 = compat.tf_conv2d_transpose(x, filters, call["shape"], call["strides_arg"], call["padding"],
                                        call["fmt"], call["dilations"])
        np.testing.assert_array_equal(y, y2)
    # the layout mapping: filters [*k, C_out/g, C_in] -> (C_in, C_out/g, *k)
    w = np.moveaxis(np.moveaxis(filters, -1, 0), -1, 1)
    expected = _expected(x_nc, w, call["starts"], call["out"], call["strides"], call["dilations"], call["groups"])
    if cl:
        expected = np.moveaxis(expected, 1, -1)
    assert y.dtype == dtype and y.shape == expected.shape
    if len(call["shape"]) == rank + 2:
        assert list(y.shape) == call["shape"]
    np.testing.assert_allclose(y, expected, **tolerance(dtype))


@given(rank=st.integers(1, 3), padding=st.sampled_from(["SAME", "VALID", "explicit"]), data=st.data())
def test_tf_output_shape_is_a_constraint(rank, padding, data):
    """Exactly the sizes whose forward convolution gives the input size are accepted; all others refused."""
    i, k = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    s, d = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    pad = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) if padding == "explicit" else padding
    accepted = _tf_rule(pad, i, k, s, d)
    x = np.ones((1,) + (i,) * rank + (1,))
    f = np.ones((k,) * rank + (1, 1))
    tf_padding = [[0, 0]] + [list(pad)] * rank + [[0, 0]] if padding == "explicit" else padding
    for o in range(0, (i + 1) * s + (k - 1) * d + 2):
        shape = [1] + [o] + [i * s] * (rank - 1) + [1]
        ok_rest = all(i * s in _tf_rule(pad, i, k, s, d) for _ in range(rank - 1))
        if o in accepted and ok_rest:
            assert compat.tf_conv_transpose(x, f, shape, s, tf_padding, dilations=d).shape == tuple(shape)
        elif o not in accepted:
            with pytest.raises(ValueError, match="output_shape"):
                compat.tf_conv_transpose(x, f, shape, s, tf_padding, dilations=d)


def test_tf_layouts_agree():
    """NHWC and NCHW give the same numbers; strides/dilations as int, [v], [h, w] or [1, h, w, 1] agree."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 3, 6))  # NHWC
    f = rng.standard_normal((3, 2, 5, 6))
    ref = compat.tf_conv2d_transpose(x, f, [2, 8, 6, 5], [1, 2, 2, 1], "SAME")
    assert ref.shape == (2, 8, 6, 5) and ref.flags.c_contiguous
    nchw = compat.tf_conv2d_transpose(np.moveaxis(x, -1, 1), f, [2, 5, 8, 6], [1, 1, 2, 2], "SAME", "NCHW")
    # (NHWC runs the channels-last kernels, which add the same terms in another order: equal to rounding)
    np.testing.assert_allclose(np.moveaxis(nchw, 1, -1), ref, rtol=1e-13, atol=1e-13)
    for strides in (2, [2], [2, 2]):
        np.testing.assert_array_equal(compat.tf_conv2d_transpose(x, f, [8, 6], strides), ref)
    for dil in (None, 1, [1], [1, 1], [1, 1, 1, 1]):
        np.testing.assert_array_equal(compat.tf_conv2d_transpose(x, f, [8, 6], 2, dilations=dil), ref)
    # SAME with out == input * stride is the core's padding="same"
    core = fd.conv_transpose(np.moveaxis(x, -1, 1), np.transpose(f, (3, 2, 0, 1)), stride=2, padding="same")
    np.testing.assert_allclose(np.moveaxis(core, 1, -1), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tf_large_channels_last_input(dtype):
    """A large, non-contiguous NHWC input runs the channels-last kernels: the NCHW call's numbers (to rounding: the
    same terms in another order)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 97, 131, 70)).astype(dtype)[:, ::-1]  # > 4 MiB, not contiguous
    f = rng.standard_normal((1, 2, 2, 70)).astype(np.float32)
    y = compat.tf_conv2d_transpose(x, f, [1, 97, 262, 2], [1, 2], "VALID")
    nchw = compat.tf_conv2d_transpose(np.moveaxis(x, -1, 1), f, [1, 2, 97, 262], [1, 2], "VALID", "NCHW")
    assert y.dtype == np.result_type(dtype, np.float32)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, np.moveaxis(nchw, 1, -1), rtol=tol, atol=tol)


def test_tf_groups_from_output_channels():
    """groups = output channels / filters.shape[-2]; each group of C_in feeds its block of C_out."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 3, 3, 4))
    f = rng.standard_normal((2, 2, 3, 4))  # [kH, kW, C_out // groups, C_in]: 6 output channels -> groups = 2
    y = compat.tf_conv2d_transpose(x, f, [1, 6, 6, 6], 2, "VALID")
    for g in range(2):
        part = compat.tf_conv2d_transpose(x[..., 2 * g:2 * g + 2], f[..., 2 * g:2 * g + 2], [1, 6, 6, 3], 2, "VALID")
        np.testing.assert_allclose(y[..., 3 * g:3 * g + 3], part, rtol=1e-12)
    assert compat.tf_conv2d_transpose(x, f, [6, 6], 2, "VALID").shape == (1, 6, 6, 3)  # no channels: groups 1


def test_tf_empty_inputs():
    f = np.ones((3, 3, 1, 1), np.float32)
    y = compat.tf_conv2d_transpose(np.zeros((0, 3, 4, 1), np.float32), f, [0, 6, 8, 1], 2)
    assert y.shape == (0, 6, 8, 1) and y.dtype == np.float32
    y = compat.tf_conv2d_transpose(np.zeros((1, 0, 4, 1), np.float32), f, [1, 1, 9, 1], 2, "VALID")
    np.testing.assert_array_equal(y, np.zeros((1, 1, 9, 1)))
    # TF divides in C (toward zero): (0 - 3 + 2) / 2 == 0 == input size, so an empty output is accepted
    assert compat.tf_conv2d_transpose(np.zeros((1, 0, 4, 1)), f, [1, 0, 9, 1], 2, "VALID").shape == (1, 0, 9, 1)
    with pytest.raises(ValueError, match="output_shape"):
        compat.tf_conv2d_transpose(np.zeros((1, 0, 4, 1)), f, [1, 3, 9, 1], 2, "VALID")
    y = compat.tf_conv2d_transpose(np.ones((1, 1, 1, 1), np.float32), f, [1, 0, 1, 1], 2,
                                   [[0, 0], [2, 1], [1, 1], [0, 0]])
    assert y.shape == (1, 0, 1, 1)


def _bilinear(size):
    """Seed 003's upsample_filt: the bilinear interpolation kernel for factor (size + 1) // 2."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


def test_seed003_shape_example_reduced():
    """Seed 003: pool (1, 375, 250, 64) -> (1, 750, 500, 3), here with 15 x 10 pixels."""
    rng = np.random.default_rng(3)
    pool = rng.standard_normal((1, 15, 10, 64)).astype(np.float32)
    kernel2 = np.zeros((3, 3, 3, 64), np.float32)
    for i in range(3):
        kernel2[:, :, i, i] = _bilinear(3)
    output_shape = [pool.shape[0], pool.shape[1] * 2, pool.shape[2] * 2, 3]
    y = compat.tf_conv2d_transpose(pool, kernel2, output_shape, strides=[1, 2, 2, 1], padding="SAME")
    assert y.shape == (1, 30, 20, 3) and y.dtype == np.float32
    w = np.transpose(kernel2, (3, 2, 0, 1)).astype(np.float64)
    expected = _expected(np.moveaxis(pool, -1, 1), w, [0, 0], [30, 20], (2, 2), (1, 1))  # full 31 x 21, crop end
    np.testing.assert_allclose(y, np.moveaxis(expected, 1, -1), rtol=1e-5, atol=1e-5)
    # the bilinear kernel upsamples channel i of the first three: a constant stays constant inside
    flat = compat.tf_conv2d_transpose(np.ones((1, 15, 10, 64), np.float32), kernel2, output_shape, 2)
    np.testing.assert_allclose(flat[0, 1:-1, 1:-1], 1.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------- seed 000


def test_seed000_through_from_correlation_weights():
    w = compat.from_correlation_weights(np.asarray(SEED000_WEIGHTS, np.float32))
    assert w.shape == (4, 2, 3, 3) and w.dtype == np.float32 and w.flags.c_contiguous
    y = fd.conv_transpose(np.asarray(SEED000_INPUT, np.float32), w, stride=2, padding="same")
    np.testing.assert_array_equal(y, np.asarray(SEED000_PRINTED, np.float32))


def _correlate(z, w):
    """Dense stride-1 cross-correlation, z (C_in, *n), w (C_out, C_in, *k) -> (C_out, *(n - k + 1))."""
    rank = w.ndim - 2
    windows = np.lib.stride_tricks.sliding_window_view(z, w.shape[2:], axis=tuple(range(1, rank + 1)))
    out, taps = "abc"[:rank], "xyz"[:rank]
    return np.einsum(f"i{out}{taps},oi{taps}->o{out}", windows, w)


@given(rank=st.integers(1, 3), data=st.data())
def test_from_correlation_weights_is_zero_fill_then_correlate(rank, data):
    c_in, c_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    spatial = data.draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    kernel = data.draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    s = data.draw(st.integers(1, 3))
    pads = [data.draw(st.integers(0, min(k - 1, ((i - 1) * s + k - 1) // 2))) for i, k in zip(spatial, kernel)]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal((c_in,) + tuple(spatial))
    w = rng.standard_normal((c_out, c_in) + tuple(kernel))
    z = np.zeros((c_in,) + tuple((i - 1) * s + 1 + 2 * (k - 1 - p) for i, k, p in zip(spatial, kernel, pads)))
    z[(slice(None),) + tuple(slice(k - 1 - p, k - 1 - p + (i - 1) * s + 1, s)
                             for i, k, p in zip(spatial, kernel, pads))] = x
    expected = _correlate(z, w)
    y = fd.conv_transpose(x, compat.from_correlation_weights(w), stride=s, padding=pads)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    # and it is the reference's transposed convolution with flipped, channel-swapped weights
    np.testing.assert_allclose(y, conv_transpose_ref(x, np.flip(w, tuple(range(2, w.ndim))).swapaxes(0, 1),
                                                     stride=s, padding=pads), rtol=1e-10, atol=1e-10)
