"""fastdeconv.conv_transpose_backward against finite differences, the adjoint identities and torch autograd."""

from unittest import mock

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st
from reference import conv_transpose_ref
from strategies import geometries, geometry_kwargs

import fastdeconv as fd
from fastdeconv import _forward


def transposed_geometries():
    return geometries(channels=(2, 2), max_in=(8, 5, 3), kernel=4, stride=3, dilation=2, int_padding=2,
                      pair_padding=3)


def _geometry(g):
    return geometry_kwargs(g)


def _inputs(g, rng, batch=2, dtype=np.float64):
    lead = (g["c_in"],) if batch is None else (batch, g["c_in"])
    x = rng.standard_normal(lead + tuple(g["spatial"])).astype(dtype)
    w = rng.standard_normal((g["c_in"], g["c_out"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)
    return x, w


@given(g=transposed_geometries(), batch=st.sampled_from([None, 1, 3]), seed=st.integers(0, 2**16))
def test_gradients_are_the_adjoints(g, batch, seed):
    """y is linear in x and w: <gy, y(dx, w)> == <gx, dx>, <gy, y(x, dw)> == <gw, dw>, <gy, 1_c> == gb[c]."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(g, rng, batch)
    kw = _geometry(g)
    gy = rng.standard_normal(conv_transpose_ref(x, w, **kw).shape)
    gx, gw, gb = fd.conv_transpose_backward(gy, x, w, **kw)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (g["c_out"],)
    dx, dw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    assert np.vdot(gy, conv_transpose_ref(dx, w, **kw)) == pytest.approx(np.vdot(gx, dx), rel=1e-9, abs=1e-9)
    assert np.vdot(gy, conv_transpose_ref(x, dw, **kw)) == pytest.approx(np.vdot(gw, dw), rel=1e-9, abs=1e-9)
    channel_axis = 0 if batch is None else 1
    np.testing.assert_allclose(gb, gy.sum(axis=tuple(a for a in range(gy.ndim) if a != channel_axis)), rtol=1e-12)


@given(g=transposed_geometries(), batch=st.sampled_from([None, 2]), dtype=st.sampled_from([np.float32, np.float64]),
       block=st.sampled_from([1, 30, 1 << 22]), seed=st.integers(0, 2**16))
def test_gemm_form_matches_direct_form(g, batch, dtype, block, seed):
    """grad_x and grad_weight from one set of im2col columns (forced, any block size) == the direct kernels."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(g, rng, batch, dtype)
    kw = _geometry(g)
    gy = rng.standard_normal(fd.conv_transpose(x, w, **kw).shape).astype(dtype)
    with mock.patch.object(_forward, "use_gemm", lambda plan: False):
        direct = fd.conv_transpose_backward(gy, x, w, **kw)
    with mock.patch.object(_forward, "use_gemm", lambda plan: True), \
            mock.patch.object(_forward, "_COL_ELEMENTS", block):
        gemm = fd.conv_transpose_backward(gy, x, w, **kw)
    for a, b in zip(gemm, direct):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, **tolerance(dtype))


def test_finite_differences_of_a_nonlinear_loss():
    """L = sum(sin(conv_transpose(x, w, b))): central differences on every entry of w and b and some of x."""
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 4, 3, 4)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(6)
    kw = dict(stride=(2, 1), padding=((1, 0), (0, 1)), output_padding=(1, 0), groups=2, dilation=(1, 2))

    def loss(x, w, b):
        return np.sin(fd.conv_transpose(x, w, b, **kw)).sum()

    gy = np.cos(fd.conv_transpose(x, w, b, **kw))
    gx, gw, gb = fd.conv_transpose_backward(gy, x, w, **kw)
    eps = 1e-6

    def numeric(array, index):
        plus, minus = array.copy(), array.copy()
        plus[index] += eps
        minus[index] -= eps
        args_p = [plus if a is array else a for a in (x, w, b)]
        args_m = [minus if a is array else a for a in (x, w, b)]
        return (loss(*args_p) - loss(*args_m)) / (2 * eps)

    for index in np.ndindex(w.shape):
        assert gw[index] == pytest.approx(numeric(w, index), rel=1e-6, abs=1e-6)
    for index in np.ndindex(b.shape):
        assert gb[index] == pytest.approx(numeric(b, index), rel=1e-6, abs=1e-6)
    for flat in rng.choice(x.size, 12, replace=False):
        index = np.unravel_index(flat, x.shape)
        assert gx[index] == pytest.approx(numeric(x, index), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_autograd(rank, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10 + rank)
    spatial = {1: (13,), 2: (6, 7), 3: (3, 4, 5)}[rank]
    kernel = {1: (5,), 2: (3, 4), 3: (2, 3, 3)}[rank]
    geometries = [dict(stride=2, padding=1, output_padding=1, dilation=1),
                  dict(stride=(3, 1, 2)[:rank], padding=(0, 2, 1)[:rank], output_padding=(2, 0, 1)[:rank],
                       dilation=(1, 2, 2)[:rank])]
    fn = getattr(torch.nn.functional, f"conv_transpose{rank}d")
    for kw in geometries:
        x = rng.standard_normal((3, 4) + spatial).astype(dtype)
        w = rng.standard_normal((4, 3) + kernel).astype(dtype)
        b = rng.standard_normal(6).astype(dtype)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        y = fn(tx, tw, tb, groups=2, **kw)
        gy = rng.standard_normal(tuple(y.shape)).astype(dtype)
        y.backward(torch.from_numpy(gy))
        gx, gw, gb = fd.conv_transpose_backward(gy, x, w, groups=2, **kw)
        assert gx.dtype == gw.dtype == gb.dtype == dtype
        tol = tolerance(dtype) if dtype == np.float64 else {"rtol": 1e-4, "atol": 1e-3}
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
        np.testing.assert_allclose(gw, tw.grad.numpy(), **tol)
        np.testing.assert_allclose(gb, tb.grad.numpy(), **tol)


def test_grad_x_is_the_forward_conv():
    """grad_x == conv(grad_output, weight) with the same geometry; grad_weight sums over the batch."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((2, 3, 3, 3))
    gy = rng.standard_normal(fd.conv_transpose(x, w, stride=2, padding=1).shape)
    gx, gw, _ = fd.conv_transpose_backward(gy, x, w, stride=2, padding=1)
    np.testing.assert_allclose(gx, fd.conv(gy, w, stride=2, padding=1), rtol=1e-12)
    per_sample = [fd.conv_transpose_backward(gy[i:i + 1], x[i:i + 1], w, stride=2, padding=1)[1] for i in range(3)]
    np.testing.assert_allclose(gw, sum(per_sample), rtol=1e-10)


def test_large_rows_and_dtype_rules():
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 1, 3000)), rng.standard_normal((1, 2, 7))
    gy = rng.standard_normal(fd.conv_transpose(x, w, stride=3, padding=2).shape)
    gx, gw, gb = fd.conv_transpose_backward(gy, x, w, stride=3, padding=2)
    dw = rng.standard_normal(w.shape)
    assert np.vdot(gy, conv_transpose_ref(x, dw, stride=3, padding=2)) == pytest.approx(np.vdot(gw, dw), rel=1e-10)
    f32 = [a.astype(np.float32) for a in (gy, x, w)]
    assert all(a.dtype == np.float32 for a in fd.conv_transpose_backward(*f32, stride=3, padding=2))
    f32[0] = gy
    assert all(a.dtype == np.float64 for a in fd.conv_transpose_backward(*f32, stride=3, padding=2))


def test_empty_batch():
    gx, gw, gb = fd.conv_transpose_backward(np.zeros((0, 3, 6)), np.zeros((0, 2, 3)), np.ones((2, 3, 2)), stride=2)
    assert gx.shape == (0, 2, 3)
    np.testing.assert_array_equal(gw, np.zeros((2, 3, 2)))
    np.testing.assert_array_equal(gb, np.zeros(3))


def test_bad_arguments():
    x, w = np.ones((1, 2, 4)), np.ones((2, 3, 3))
    with pytest.raises(ValueError, match="grad_output must have the shape of conv_transpose's output"):
        fd.conv_transpose_backward(np.ones((1, 3, 5)), x, w)
    with pytest.raises(TypeError, match="grad_output must be real"):
        fd.conv_transpose_backward(np.ones((1, 3, 6), np.complex128), x, w)
    with pytest.raises(ValueError, match="input channels"):
        fd.conv_transpose_backward(np.ones((1, 3, 6)), x, w, groups=4)
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        fd.conv_transpose_backward(np.ones((1, 3, 7)), x, w, output_padding=1)
