"""fastdeconv.linear_operator: a matrix-free LinearOperator C (matvec = conv, rmatvec = conv_transpose = C.T).

The dot-product test <C x, y> = <x, C.T y> and equality with conv_matrix on random geometries (1-D to 3-D, stride,
int / per-axis / (before, after) / "valid" / "same" padding, dilation, groups); batched products against
column-by-column ones; shapes and dtypes; scipy's iterative solvers on tiny problems; argument validation.
"""

import pickle

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st
from test_conv import conv_geometries

import fastdeconv as fd


def _weight(g, rng, dtype=np.float64):
    return rng.standard_normal((g["c_out"], g["c_in"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)


def _geometry(g):
    return {k: g[k] for k in ("stride", "padding", "dilation", "groups")}


@settings(max_examples=settings.default.max_examples // 2)  # the profile's count: 60 in CI
@given(g=conv_geometries(), seed=st.integers(0, 2**16))
def test_dot_product_test(g, seed):
    """<C x, y> == <x, C.T y> to rounding: rmatvec is the adjoint of matvec, on every geometry."""
    rng = np.random.default_rng(seed)
    c = fd.linear_operator(_weight(g, rng), g["spatial"], **_geometry(g))
    x, y = rng.standard_normal(c.shape[1]), rng.standard_normal(c.shape[0])
    cx, cty = c.matvec(x), c.rmatvec(y)
    assert cx.shape == (c.shape[0],) and cty.shape == (c.shape[1],)
    scale = np.linalg.norm(cx) * np.linalg.norm(y) + np.linalg.norm(x) * np.linalg.norm(cty)
    assert abs(np.dot(cx, y) - np.dot(x, cty)) <= 1e-12 * scale + 1e-300


@settings(max_examples=settings.default.max_examples // 3)
@given(g=conv_geometries(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_equals_conv_matrix_and_batches_equal_columns(g, dtype, seed):
    """C @ v and C.T @ u equal the sparse conv_matrix's products; matmat / rmatmat (one batched call) equal
    matvec / rmatvec column by column; the shapes follow conv's output and the dtype the weight's."""
    rng = np.random.default_rng(seed)
    w = _weight(g, rng, dtype)
    kw = _geometry(g)
    c = fd.linear_operator(w, g["spatial"], **kw)
    m = fd.conv_matrix(w, g["spatial"], **kw)
    out = fd.conv(rng.standard_normal((g["c_in"],) + tuple(g["spatial"])), w, **kw).shape
    assert c.shape == m.shape == (int(np.prod(out)), g["c_in"] * int(np.prod(g["spatial"])))
    assert c.dtype == m.dtype == dtype and c.output_shape == out
    assert c.input_shape == (g["c_in"],) + tuple(g["spatial"])
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    v = rng.standard_normal((c.shape[1], 3)).astype(dtype)
    u = rng.standard_normal((c.shape[0], 3)).astype(dtype)
    cv, ctu = c.matmat(v), c.rmatmat(u)
    assert cv.shape == (c.shape[0], 3) and ctu.shape == (c.shape[1], 3) and cv.dtype == ctu.dtype == dtype
    np.testing.assert_allclose(cv, m @ v, **tol)
    np.testing.assert_allclose(ctu, m.T @ u, **tol)
    np.testing.assert_allclose(c @ v, cv, rtol=0, atol=0)  # @ with a 2-D operand is matmat
    np.testing.assert_allclose(c.T @ u, ctu, rtol=0, atol=0)
    for j in range(3):
        np.testing.assert_allclose(c.matvec(v[:, j]), cv[:, j], **tol)
        np.testing.assert_allclose(c.rmatvec(u[:, j]), ctu[:, j], **tol)
        np.testing.assert_allclose(c.H @ u[:, j], ctu[:, j], **tol)


def test_matmat_is_one_batched_call(monkeypatch):
    """matmat runs the k columns as one batch of k samples: one conv / conv_transpose call, not k."""
    rng = np.random.default_rng(0)
    c = fd.linear_operator(rng.standard_normal((3, 2, 3, 3)), (6, 5), stride=2, padding=1)
    calls = []
    forward, transposed = c._forward, c._transposed

    def spy(run):
        def wrapped(batch):
            calls.append(batch.shape)
            return run(batch)
        return wrapped

    monkeypatch.setattr(c, "_forward", spy(forward))
    monkeypatch.setattr(c, "_transposed", spy(transposed))
    c.matmat(rng.standard_normal((c.shape[1], 4)))
    c.rmatmat(rng.standard_normal((c.shape[0], 5)))
    assert calls == [(4, 2, 6, 5), (5, 3, 3, 3)]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_dtypes_of_products():
    """float32 weight -> float32 operator; a product follows conv's rule for its operand's dtype."""
    rng = np.random.default_rng(1)
    w32 = rng.standard_normal((2, 1, 3)).astype(np.float32)
    c = fd.linear_operator(w32, (8,), padding="same")
    assert c.dtype == np.float32 and c.shape == (16, 8)
    assert c.matvec(np.ones(8, np.float32)).dtype == np.float32
    assert c.matvec(np.ones(8)).dtype == np.float64
    assert c.matvec(np.arange(8)).dtype == np.float64  # ints are converted, as conv does
    np.testing.assert_allclose(c.matvec(np.arange(8)), c.matvec(np.arange(8.0)))
    assert c.rmatvec(np.ones(16, bool)).dtype == np.float64
    for w in (w32.astype(np.float64), w32.astype(np.float16), np.ones((2, 1, 3), np.int64)):
        assert fd.linear_operator(w, (8,)).dtype == np.float64
    v = rng.standard_normal(8) + 1j * rng.standard_normal(8)  # a complex operand: C is real
    cv = fd.linear_operator(w32.astype(np.float64), (8,)).matvec(v)
    assert cv.dtype == np.complex128
    c64 = fd.linear_operator(w32.astype(np.float64), (8,))
    np.testing.assert_allclose(cv, c64.matvec(v.real) + 1j * c64.matvec(v.imag), rtol=0, atol=0)
    col = c.matvec(np.ones((8, 1), np.float32))  # an (N, 1) operand gives (M, 1)
    assert col.shape == (16, 1)
    mat = c.matvec(np.asmatrix(np.ones((8, 1))))
    assert isinstance(mat, np.matrix) and mat.shape == (16, 1)
    assert c.matmat(np.ones((8, 0))).shape == (16, 0)


def test_weight_is_copied_and_operator_pickles():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((2, 2, 3, 3))
    c = fd.linear_operator(w, (5, 4), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))
    v = rng.standard_normal(c.shape[1])
    before = c.matvec(v)
    w[...] = 0
    np.testing.assert_array_equal(c.matvec(v), before)
    assert not c.weight.flags.writeable
    again = pickle.loads(pickle.dumps(c))
    np.testing.assert_array_equal(again.matvec(v), before)
    assert "fastdeconv conv LinearOperator" in repr(c) and "(2, 5, 4)" in repr(c)


def test_zero_channels():
    c = fd.linear_operator(np.ones((0, 2, 2)), (4,))
    assert c.shape == (0, 8)
    assert c.matvec(np.ones(8)).shape == (0,)
    np.testing.assert_array_equal(c.rmatvec(np.ones(0)), np.zeros(8))


# --------------------------------------------------------------------------------------------- solvers


def _full_rank(rng, dtype=np.float64):
    """A 2-D stride-1 convolution with full padding (more outputs than inputs): C has full column rank."""
    w = rng.standard_normal((2, 2, 3, 3)).astype(dtype)
    w[:, :, 1, 1] += 4 * np.eye(2)  # well conditioned
    return fd.linear_operator(w, (6, 5), padding=2), w


def test_lsqr_and_lsmr_recover_the_input():
    rng = np.random.default_rng(3)
    c, w = _full_rank(rng)
    x_true = rng.standard_normal(c.shape[1])
    b = c @ x_true
    for solve, limit in ((spla.lsqr, "iter_lim"), (spla.lsmr, "maxiter")):
        x, istop, itn = solve(c, b, atol=1e-10, btol=1e-10, **{limit: 200})[:3]
        assert istop in (1, 2) and itn < 200  # converged, not stopped by the iteration limit
        np.testing.assert_allclose(x, x_true, rtol=1e-7, atol=1e-7)
    # damped (regularised) lsqr gives the same iterate as on the explicit sparse matrix
    x_op = spla.lsqr(c, b, damp=0.5, iter_lim=8)[0]
    x_sparse = spla.lsqr(fd.conv_matrix(w, (6, 5), padding=2), b, damp=0.5, iter_lim=8)[0]
    np.testing.assert_allclose(x_op, x_sparse, rtol=1e-10, atol=1e-10)


def test_cg_on_normal_equations():
    rng = np.random.default_rng(4)
    c, _ = _full_rank(rng)
    x_true = rng.standard_normal(c.shape[1])
    normal = c.T @ c  # a LinearOperator: C.T C, SPD
    assert normal.shape == (c.shape[1],) * 2
    x, info = spla.cg(normal, c.rmatvec(c @ x_true), rtol=1e-12, atol=0, maxiter=200)
    assert info == 0
    np.testing.assert_allclose(x, x_true, rtol=1e-7, atol=1e-7)
    explicit = spla.LinearOperator(normal.shape, matvec=lambda v: c.rmatvec(c.matvec(v)), dtype=c.dtype)
    np.testing.assert_allclose(spla.cg(explicit, c.rmatvec(c @ x_true), rtol=1e-12, atol=0, maxiter=200)[0], x,
                               rtol=1e-10, atol=1e-10)


def test_gmres_on_a_square_operator():
    """Stride 1, padding 'same', C_in == C_out: C is square (and here well conditioned)."""
    rng = np.random.default_rng(5)
    w = 0.1 * rng.standard_normal((3, 3, 3, 3))
    w[:, :, 1, 1] += np.eye(3)
    c = fd.linear_operator(w, (7, 6), padding="same")
    assert c.shape == (3 * 7 * 6,) * 2
    x_true = rng.standard_normal(c.shape[1])
    x, info = spla.gmres(c, c @ x_true, rtol=1e-12, atol=0, restart=50, maxiter=20)
    assert info == 0
    np.testing.assert_allclose(x, x_true, rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args, kw, exc, match", [
    ((np.ones((2, 2)), (4,)), {}, ValueError, "weight must have shape"),
    ((np.ones((1, 1, 3), np.complex128), (4,)), {}, TypeError, "weight must be real"),
    ((np.array([[["a"]]]), (4,)), {}, TypeError, "weight must be numeric"),
    ((np.ones((1, 1, 3)), 4), {}, TypeError, "input_shape must be a sequence"),
    ((np.ones((1, 1, 3)), (4, 4)), {}, ValueError, "input_shape must hold the 1 spatial"),
    ((np.ones((1, 1, 3)), (0,)), {}, ValueError, "input_shape must be >= 1"),
    ((np.ones((1, 1, 3)), (4.0,)), {}, TypeError, "input_shape must be an int"),
    ((np.ones((1, 1, 3)), (2,)), {}, ValueError, "output size must be >= 1"),
    ((np.ones((1, 1, 3)), (4,)), {"stride": 0}, ValueError, "stride must be >= 1"),
    ((np.ones((1, 1, 3)), (4,)), {"stride": 2, "padding": "same"}, ValueError, "padding='same' needs stride 1"),
    ((np.ones((1, 1, 3)), (4,)), {"padding": -1}, ValueError, "padding must be >= 0"),
    ((np.ones((1, 1, 3)), (4,)), {"dilation": 1.5}, TypeError, "dilation must be an int"),
    ((np.ones((3, 1, 3)), (4,)), {"groups": 2}, ValueError, "divisible by groups"),
    ((np.ones((2, 1, 3)), (4,)), {"groups": True}, TypeError, "groups must be an int"),
    ((np.ones((1, 1, 3), np.float32), (2**40,)), {"padding": 1}, ValueError, "the output .* would need .* GiB"),
    ((np.ones((1, 1, 3), np.float32), (2**40,)), {"stride": 2**20}, ValueError,
     "the input of one sample .* would need .* GiB"),
])
def test_bad_arguments(args, kw, exc, match):
    with pytest.raises(exc, match=match):
        fd.linear_operator(*args, **kw)


def test_bad_operands():
    c = fd.linear_operator(np.ones((1, 1, 3)), (5,))
    with pytest.raises(ValueError, match="dimension mismatch"):
        c.matvec(np.ones(4))
    with pytest.raises(TypeError, match="the operand must be numeric"):
        c.matvec(np.array(["a"] * 5))
    with pytest.raises(TypeError, match="the operand must be numeric"):
        c.rmatmat(np.array([[None]] * 3))
