"""fastdeconv.conv_matrix: C @ x == conv(x), C.T @ y == conv_transpose(y), seed 002's 4x16 example."""

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given
from hypothesis import strategies as st
from reference import conv_transpose_ref
from test_conv import SEED002_INPUT, SEED002_KERNEL, conv_geometries, conv_ref

import fastdeconv as fd


def test_seed002_matrix():
    """4x4 input, 3x3 kernel: C is 4x16 with 9 entries a row, each row the kernel rows laid out with gaps."""
    w = np.array(SEED002_KERNEL, np.float64)[None, None]
    c = fd.conv_matrix(w, (4, 4))
    assert isinstance(c, scipy.sparse.csr_array) and c.shape == (4, 16) and c.dtype == np.float64
    np.testing.assert_array_equal(np.diff(c.indptr), [9, 9, 9, 9])
    k = np.array(SEED002_KERNEL, np.float64)
    first = np.concatenate([k[0], [0], k[1], [0], k[2], [0, 0, 0, 0, 0]])
    expected = np.stack([np.roll(first, shift) for shift in (0, 1, 4, 5)])
    np.testing.assert_array_equal(c.toarray(), expected)
    x = np.array(SEED002_INPUT, np.float64)
    np.testing.assert_array_equal(c @ x.ravel(), [122, 148, 126, 134])
    # the transposed convolution is C.T: the 2x2 input spreads back to 4x4 (one-to-many)
    y = np.array([[2.0, 1.0], [4.0, 4.0]])
    back = fd.conv_transpose(y[None, None], w)[0, 0]
    np.testing.assert_array_equal(back.ravel(), c.T @ y.ravel())
    np.testing.assert_array_equal(back, [[2, 9, 6, 1], [6, 29, 30, 7], [10, 29, 33, 13], [12, 24, 16, 4]])


@given(g=conv_geometries(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_matrix_products_match_conv_and_conv_transpose(g, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((g["c_in"],) + tuple(g["spatial"]))
    w = rng.standard_normal((g["c_out"], g["c_in"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)
    kw = {k: g[k] for k in ("stride", "padding", "dilation", "groups")}
    c = fd.conv_matrix(w, g["spatial"], **kw)
    y_ref = conv_ref(x, w, **kw)
    assert c.dtype == dtype and c.shape == (y_ref.size, x.size)
    assert c.has_canonical_format and np.all(np.diff(c.indices[c.indptr[0]:c.indptr[1]]) > 0)
    c64 = c.astype(np.float64)
    cx = c64 @ x.ravel()
    np.testing.assert_allclose(cx, y_ref.ravel(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cx, fd.conv(x, w.astype(np.float64), **kw).ravel(), rtol=1e-10, atol=1e-10)
    v = rng.standard_normal(y_ref.shape)
    padding = g["padding"]
    if padding == "same":  # PyTorch conv 'same' as explicit pairs for conv_transpose
        padding = [((k - 1) * d // 2, (k - 1) * d - (k - 1) * d // 2) for k, d in zip(g["kernel"], g["dilation"])]
    ct = dict(stride=g["stride"], padding=padding, dilation=g["dilation"], groups=g["groups"],
              output_size=g["spatial"])
    cty = c64.T @ v.ravel()
    np.testing.assert_allclose(cty, conv_transpose_ref(v, w, **ct).ravel(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cty, fd.conv_transpose(v, w.astype(np.float64), **ct).ravel(), rtol=1e-10, atol=1e-10)
    assert np.dot(cx, v.ravel()) == pytest.approx(np.dot(x.ravel(), cty), rel=1e-10, abs=1e-10)


def test_matrix_columns_are_impulse_responses():
    """Column j of C is conv of the j-th unit input: C is exactly the operator, entry by entry."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 1, 2, 3))
    kw = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
    c = fd.conv_matrix(w, (3, 4), **kw).toarray()
    eye = np.eye(2 * 3 * 4).reshape(-1, 2, 3, 4)
    columns = fd.conv(eye, w, **kw).reshape(len(eye), -1).T
    np.testing.assert_array_equal(c, columns)


def test_batch_product_and_float32():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((3, 2, 3)).astype(np.float32)
    x = rng.standard_normal((5, 2, 10)).astype(np.float32)
    c = fd.conv_matrix(w, (10,), stride=2, padding=1)
    assert c.dtype == np.float32
    y = (c @ x.reshape(5, -1).T).T.reshape(5, 3, -1)
    np.testing.assert_allclose(y, fd.conv(x, w, stride=2, padding=1), rtol=1e-5, atol=1e-5)


def test_padding_only_rows_are_empty():
    c = fd.conv_matrix(np.ones((1, 1, 2)), (1,), padding=3)
    assert c.shape == (6, 1)
    np.testing.assert_array_equal(np.diff(c.indptr), [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(c.toarray().ravel(), fd.conv(np.ones((1, 1)), np.ones((1, 1, 2)), padding=3)[0])
    assert fd.conv_matrix(np.ones((0, 2, 2)), (4,)).shape == (0, 8)


def test_huge_matrix_is_refused_before_building():
    with pytest.raises(ValueError, match="conv matrix's stored entries .* would need .* GiB"):
        fd.conv_matrix(np.ones((64, 64, 3, 3), np.float32), (100_000, 100_000), padding=1)


@pytest.mark.parametrize("args, exc, match", [
    ((np.ones((2, 2)), (4,)), ValueError, "weight must have shape"),
    ((np.ones((1, 1, 3)), (4, 4)), ValueError, "input_shape must hold the 1 spatial"),
    ((np.ones((1, 1, 3)), 4), TypeError, "input_shape must be a sequence"),
    ((np.ones((1, 1, 3)), (0,)), ValueError, "input_shape must be >= 1"),
    ((np.ones((1, 1, 3)), (2,)), ValueError, "output size must be >= 1"),
    ((np.ones((1, 1, 3), np.complex128), (4,)), TypeError, "weight must be real"),
])
def test_bad_arguments(args, exc, match):
    with pytest.raises(exc, match=match):
        fd.conv_matrix(*args)


def test_bad_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        fd.conv_matrix(np.ones((3, 1, 3)), (5,), groups=2)
    with pytest.raises(TypeError, match="groups"):
        fd.conv_matrix(np.ones((2, 1, 3)), (5,), groups="2")


def test_huge_input_shape_is_refused_naming_it_before_any_temporary():
    """A long input axis is refused with a ValueError naming input_shape, before anything as long as the axis
    is built (before, a per-axis (outputs x taps) temporary raised MemoryError)."""
    with pytest.raises(ValueError, match=r"input_shape \(68719476736,\).*too large for memory"):
        fd.conv_matrix(np.ones((1, 1, 3)), (2**36,))
    with pytest.raises(ValueError, match=r"input_shape \(1,\).*row offsets"):  # a padding of 2**40 empty rows
        fd.conv_matrix(np.ones((1, 1, 1)), (1,), padding=2**40)
    with pytest.raises(ValueError, match="input_shape"):
        fd.conv_matrix(np.ones((2, 1, 2, 2), np.float32), (2**20, 2**20))


@pytest.mark.parametrize("kw, size", [
    (dict(stride=3, padding=((4, 0),), dilation=2), 11),
    (dict(stride=2**40, padding=((0, 2**40),)), 3),  # two rows, one 2**40 past the input
    (dict(dilation=2**40, padding=((2**40, 2**40),)), 3),  # taps far apart: each reaches one row at most
    (dict(stride=1, padding=((7, 7),), dilation=3), 2),  # rows reached by no tap
])
def test_row_lengths_from_exact_tap_ranges(kw, size):
    """The stored entries counted from each tap's range of rows (exact integers, no per-axis temporary) match
    the rows built, and the matrix is still the operator."""
    w = np.arange(1.0, 4.0).reshape(1, 1, 3)
    c = fd.conv_matrix(w, (size,), **kw)
    assert c.indptr[-1] == c.nnz == len(c.indices) == len(c.data)
    eye = np.eye(size).reshape(size, 1, size)
    np.testing.assert_array_equal(c.toarray(), fd.conv(eye, w, **kw).reshape(size, -1).T)
