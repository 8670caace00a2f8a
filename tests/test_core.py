"""conv_transpose: every method against the reference, the seeds' examples, dtypes, layouts, ``out=``."""

import numpy as np
import pytest
from conftest import METHODS, tolerance
from hypothesis import given
from hypothesis import strategies as st
from reference import conv_transpose_ref
from strategies import geometries, geometry_kwargs

import fastdeconv as fd

# ---------------------------------------------------------------------------------------------- seeds

SEED000_INPUT = [[[1, 0, 1], [0, 2, 1], [1, 1, 0]], [[2, 0, 2], [0, 1, 0], [1, 0, 0]],
                 [[1, 1, 1], [2, 2, 0], [1, 1, 1]], [[1, 1, 2], [1, 0, 1], [0, 2, 2]]]
SEED000_WEIGHTS = [
    [[[1, 0, 1], [-1, 1, 0], [0, -1, 0]], [[-1, 0, 1], [0, 0, 1], [1, 1, 1]],
     [[0, 1, 1], [2, 0, 1], [1, 2, 1]], [[1, 1, 1], [0, 2, 1], [1, 0, 1]]],
    [[[1, 0, 2], [-2, 1, 1], [1, -1, 0]], [[-1, 0, 1], [-1, 2, 1], [1, 1, 1]],
     [[0, 0, 0], [2, 2, 1], [1, -1, 1]], [[2, 1, 1], [0, -1, 1], [1, 1, 1]]]]
SEED000_PRINTED = [
    [[4, 3, 6, 2, 7, 3], [4, 3, 3, 2, 7, 5], [8, 6, 8, 5, 11, 2],
     [3, 2, 7, 2, 3, 3], [5, 5, 11, 3, 9, 3], [2, 1, 4, 5, 4, 4]],
    [[4, 1, 7, 0, 7, 2], [5, 6, 0, 1, 8, 5], [8, 0, 8, -2, 14, 2],
     [3, 3, 9, 8, 1, 0], [3, 0, 13, 0, 11, 2], [3, 5, 3, 1, 3, 0]]]


@pytest.mark.parametrize("method", METHODS)
def test_seed000_golden(method):
    x = np.asarray(SEED000_INPUT, np.float32)
    w = np.asarray(SEED000_WEIGHTS, np.float32)  # [out, in, k, k], zero-fill-then-correlate weights
    y = fd.conv_transpose(x, np.flip(w, (2, 3)).swapaxes(0, 1), stride=2, padding="same", method=method)
    assert y.shape == (2, 6, 6) and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.asarray(SEED000_PRINTED, np.float32))


def test_seed000_zero_fill_matches_fill_zeros():
    x = np.asarray(SEED000_INPUT, np.float32)
    expected = np.zeros((4, 7, 7), np.float32)  # seed 000's fill_zeros: rs[i, 2j+1, 2k+1] = input[i, j, k]
    expected[:, 1::2, 1::2] = x
    z = fd.zero_fill(x, 2, padding=1)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z, expected)


@pytest.mark.parametrize("method", METHODS)
def test_seed001_tf_examples(method):
    ones = np.ones
    # VALID, stride 1: 3x3 ones, 2x2 kernel -> 4x4 with the overlap counts
    y = fd.conv_transpose(ones((1, 1, 3, 3)), ones((1, 1, 2, 2)), padding="valid", method=method)
    np.testing.assert_array_equal(y[0, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    # VALID, stride 2: 2x2 -> 4x4 of ones
    y = fd.conv_transpose(ones((1, 1, 2, 2)), ones((1, 1, 2, 2)), stride=2, padding="valid", method=method)
    np.testing.assert_array_equal(y[0, 0], ones((4, 4)))
    # SAME, stride 1: 4x4 -> 4x4, the full 5x5 result cropped by one at the end
    y = fd.conv_transpose(ones((1, 1, 4, 4)), ones((1, 1, 2, 2)), padding="same", method=method)
    np.testing.assert_array_equal(y[0, 0], [[1, 2, 2, 2], [2, 4, 4, 4], [2, 4, 4, 4], [2, 4, 4, 4]])


# ---------------------------------------------------------------------------------------------- properties


@given(g=geometries(), batch=st.sampled_from([None, 1, 2]), dtype=st.sampled_from([np.float32, np.float64]),
       use_bias=st.booleans(), layout=st.sampled_from(["c", "fortran", "strided", "reversed"]),
       seed=st.integers(0, 2**16))
def test_every_method_matches_reference(g, batch, dtype, use_bias, layout, seed):
    rng = np.random.default_rng(seed)
    lead = (g["c_in"],) if batch is None else (batch, g["c_in"])
    x = rng.standard_normal(lead + tuple(g["spatial"])).astype(dtype)
    w = rng.standard_normal((g["c_in"], g["c_out"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)
    bias = rng.standard_normal(g["c_out"]).astype(dtype) if use_bias else None
    x = _relayout(x, layout, rng)
    x_before = x.copy()
    kw = geometry_kwargs(g)
    expected = conv_transpose_ref(x, w, bias, **kw)
    for method in METHODS:
        y = fd.conv_transpose(x, w, bias, method=method, **kw)
        assert y.dtype == dtype and y.shape == expected.shape, method
        np.testing.assert_allclose(y, expected, err_msg=method, **tolerance(dtype))
    np.testing.assert_array_equal(x, x_before)


def _relayout(a, layout, rng):
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "reversed":
        rev = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
        assert rev.strides[-1] < 0 or a.shape[-1] == 1
        return rev
    return a


# ---------------------------------------------------------------------------------------------- details


def test_dtype_rules():
    x32, w32 = np.ones((1, 2, 3), np.float32), np.ones((2, 1, 2), np.float32)
    assert fd.conv_transpose(x32, w32).dtype == np.float32
    assert fd.conv_transpose(x32, w32.astype(np.float64)).dtype == np.float64
    assert fd.conv_transpose(x32.astype(np.int32), w32).dtype == np.float64
    assert fd.conv_transpose(x32.astype(bool), w32.astype(np.int64)).dtype == np.float64
    assert fd.conv_transpose(x32.astype(np.float16), w32).dtype == np.float64
    assert fd.conv_transpose(x32, w32, bias=np.ones(1, np.float64)).dtype == np.float32
    with pytest.raises(TypeError, match="x must be real"):
        fd.conv_transpose(x32.astype(np.complex64), w32)
    with pytest.raises(TypeError, match="weight must be real"):
        fd.conv_transpose(x32, w32.astype(np.complex128))
    with pytest.raises(TypeError, match="bias"):
        fd.conv_transpose(x32, w32, bias=np.ones(1, np.complex64))


def test_lists_and_integers_accepted():
    y = fd.conv_transpose([[[1, 2]]], [[[1, 1]]], stride=2)
    np.testing.assert_array_equal(y, [[[1, 1, 2, 2]]])


def test_read_only_inputs_are_not_modified():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    x.flags.writeable = False
    w.flags.writeable = False
    y = fd.conv_transpose(x, w, stride=2, padding=1)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, stride=2, padding=1), rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_out_argument(method):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    expected = conv_transpose_ref(x, w, stride=2, padding=1)
    out = np.full(expected.shape, np.nan, np.float32)
    assert fd.conv_transpose(x, w, stride=2, padding=1, method=method, out=out) is out
    np.testing.assert_allclose(out, expected, **tolerance(np.float32))
    fortran = np.asfortranarray(np.full(expected.shape, np.nan, np.float32))
    assert fd.conv_transpose(x, w, stride=2, padding=1, method=method, out=fortran) is fortran
    np.testing.assert_allclose(fortran, expected, **tolerance(np.float32))


def test_out_may_alias_input():
    x = np.arange(8.0).reshape(1, 1, 8)
    w = np.array([[[2.0]]])
    fd.conv_transpose(x, w, out=x)
    np.testing.assert_array_equal(x[0, 0], 2 * np.arange(8.0))


def test_output_size_chooses_output_padding():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 3, 3, 3))
    for size in [(7, 7), (8, 7), (8, 8)]:
        y = fd.conv_transpose(x, w, stride=2, padding=1, output_size=size)
        op = [s - 7 for s in size]
        np.testing.assert_allclose(y, conv_transpose_ref(x, w, stride=2, padding=1, output_padding=op))
    y = fd.conv_transpose(x, w, stride=2, padding=1, output_size=(1, 3, 8, 8))
    assert y.shape == (1, 3, 8, 8)


def test_empty_batch_and_channels():
    y = fd.conv_transpose(np.zeros((0, 2, 3)), np.ones((2, 3, 2)), stride=2)
    assert y.shape == (0, 3, 6)
    y = fd.conv_transpose(np.zeros((1, 2, 3)), np.ones((2, 0, 2)), stride=2)
    assert y.shape == (1, 0, 6)
    for method in METHODS:  # no input channel: every form writes the bias alone
        y = fd.conv_transpose(np.zeros((1, 0, 3)), np.ones((0, 2, 2)), bias=[1.0, 2.0], method=method)
        np.testing.assert_array_equal(y[0], [[1, 1, 1, 1], [2, 2, 2, 2]])


@pytest.mark.parametrize("method", METHODS)
def test_nan_and_inf_propagate(method):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 2] = np.nan
    x[0, 0, 3, 0] = np.inf
    w = np.ones((1, 1, 2, 2))
    y = fd.conv_transpose(x, w, stride=2, method=method)
    expected = conv_transpose_ref(x, w, stride=2)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))


@pytest.mark.parametrize("method", METHODS)
def test_larger_than_tiles(method):
    """Planes big enough to be split into tiles across threads, 1-D to 3-D."""
    rng = np.random.default_rng(3)
    cases = [((1, 1, 3000), (1, 1, 5), 3, 2), ((1, 1, 70, 40), (1, 1, 4, 3), 2, 1),
             ((1, 1, 9, 8, 7), (1, 1, 3, 2, 3), 2, 1)]
    for xs, ws, s, p in cases:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        y = fd.conv_transpose(x, w, stride=s, padding=p, method=method)
        np.testing.assert_allclose(y, conv_transpose_ref(x, w, stride=s, padding=p), rtol=1e-10, atol=1e-10)


def test_zero_fill_shapes_and_ranks():
    x = np.arange(1.0, 7.0).reshape(1, 2, 3)  # int stride + 3-D -> (C, H, W)
    z = fd.zero_fill(x, 2)
    assert z.shape == (1, 3, 5)
    np.testing.assert_array_equal(z[0, ::2, ::2], x[0])
    z = fd.zero_fill(x, (3,), padding=[(1, 2)])  # explicit rank 1 -> (N, C, L)
    assert z.shape == (1, 2, 1 + 7 + 2)
    np.testing.assert_array_equal(z[0, :, 1:8:3], x[0])
    z = fd.zero_fill(np.ones((2, 1, 2, 2, 2), np.float32), (1, 2, 3), padding=1)
    assert z.shape == (2, 1, 4, 5, 6) and z.dtype == np.float32 and z.sum() == 16
