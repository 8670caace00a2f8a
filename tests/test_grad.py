"""fastdeconv.conv_transpose_backward against finite differences, the adjoint identities and torch autograd."""

import subprocess
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st
from reference import conv_transpose_ref
from strategies import geometries, geometry_kwargs

import fastdeconv as fd
from fastdeconv import _conv_gemm, _forward


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
    _gemm_form_matches_direct_form(g, batch, dtype, seed, COL_ELEMENTS=block)


def _gemm_form_matches_direct_form(g, batch, dtype, seed, **gemm_settings):
    """The gradients of random inputs from the GEMM form (forced, with ``gemm_settings`` patched into
    ``_conv_gemm``) == those of the direct kernels, in the inputs' dtype."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(g, rng, batch, dtype)
    kw = _geometry(g)
    gy = rng.standard_normal(fd.conv_transpose(x, w, **kw).shape).astype(dtype)
    with mock.patch.object(_forward, "use_gemm", lambda plan: False):
        direct = fd.conv_transpose_backward(gy, x, w, **kw)
    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(_forward, "use_gemm", lambda plan: True))
        for name, value in gemm_settings.items():
            patches.enter_context(mock.patch.object(_conv_gemm, name, value))
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


@given(g=transposed_geometries(), batch=st.sampled_from([None, 1, 3]), dtype=st.sampled_from([np.float32, np.float64]),
       block=st.sampled_from([1, 30, 1 << 22]), seed=st.integers(0, 2**16))
def test_gemm_form_by_row_blocks_matches_direct_form(g, batch, dtype, block, seed):
    """A weight-heavy layer's gradients by row blocks of the output and the weight gradient (forced: one row a
    block, columns in chunks of any size) == the direct kernels."""
    _gemm_form_matches_direct_form(g, batch, dtype, seed, by_rows=lambda plan, pixels: True, ROW_BLOCK=1,
                                   COL_ELEMENTS=block)


def test_a_weight_heavy_layers_gradients_go_by_row_blocks_with_the_same_bits_on_any_thread_count():
    """512 -> 128 channels on a 2x2 input (more output channels than pixels): by row blocks, bitwise the same on
    one thread and on the pool, and equal to the direct kernels."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 512, 2, 2)).astype(np.float32)
    w = rng.standard_normal((512, 128, 4, 4)).astype(np.float32)
    kw = dict(stride=2, padding=1)
    gy = rng.standard_normal(fd.conv_transpose(x, w, **kw).shape).astype(np.float32)
    adjoint = _forward.make_conv_plan(gy.shape, w.shape, np.float32, np.float32, **kw)
    assert _conv_gemm.by_rows(adjoint, 4)
    calls = []
    with mock.patch.object(_conv_gemm, "_by_rows", side_effect=_conv_gemm._by_rows) as spy:
        pooled = fd.conv_transpose_backward(gy, x, w, **kw)
        calls.append(spy.call_count)
    before = fd.get_num_threads()
    try:
        fd.set_num_threads(1)
        single = fd.conv_transpose_backward(gy, x, w, **kw)
    finally:
        fd.set_num_threads(before)
    assert calls == [1]
    for a, b in zip(pooled, single):
        np.testing.assert_array_equal(a, b)
    with mock.patch.object(_forward, "use_gemm", lambda plan: False):
        direct = fd.conv_transpose_backward(gy, x, w, **kw)
    for a, b in zip(pooled, direct):
        np.testing.assert_allclose(a, b, **tolerance(np.float32))


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


# --------------------------------------------------------------------------- huge stride / dilation (issue 18)

HUGE_GEOMETRY_SCRIPT = textwrap.dedent("""
    import resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path[:0] = sys.argv[2:4]
    import numpy as np
    import fastdeconv as fd
    from reference import conv_transpose_ref

    CASES = [  # tiny outputs: only the stride / dilation / padding values are huge
        ((1, 1, 1), (1, 1, 2), dict(dilation=2**36, padding=((0, 2**36 - 3),))),  # issue 18's case
        ((1, 1, 1), (1, 1, 3), dict(dilation=2**36, padding=((0, 2**37 - 3),))),
        ((1, 1, 1), (1, 1, 3), dict(dilation=2**36, padding=((2**36, 2**36 - 3),))),
        ((1, 1, 1), (1, 1, 3), dict(dilation=2**36, padding=((2**37 - 3, 0),))),
        ((1, 1, 1), (1, 1, 3), dict(stride=2**62)),
        ((2, 3, 2), (3, 4, 3), dict(stride=2**40, dilation=7, padding=((0, 2**40 - 5),))),
        ((1, 2, 3), (2, 2, 3), dict(stride=3, dilation=2**40, padding=((2**40, 2**40 - 3),))),
        ((1, 2, 2, 1), (2, 1, 2, 3), dict(stride=(2**40, 1), dilation=(1, 2**36), groups=2,
                                          padding=((0, 2**40 - 3), (2**36, 2**36 - 4)))),
    ]

    for xs, ws, kw in CASES:
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        y = conv_transpose_ref(x, w, **kw)
        assert y.size <= 256, y.shape
        gy = rng.standard_normal(y.shape)
        gx, gw, gb = fd.conv_transpose_backward(gy, x, w, **kw)
        # y is linear in x and in w: each gradient element is <gy, y(basis vector)>
        basis = lambda shape, j: np.eye(1, int(np.prod(shape)), j).reshape(shape)
        ex = [np.vdot(gy, conv_transpose_ref(basis(xs, j), w, **kw)) for j in range(x.size)]
        ew = [np.vdot(gy, conv_transpose_ref(x, basis(ws, j), **kw)) for j in range(w.size)]
        assert np.allclose(gx.ravel(), ex, rtol=1e-10, atol=1e-12), (kw, gx.ravel(), ex)
        assert np.allclose(gw.ravel(), ew, rtol=1e-10, atol=1e-12), (kw, gw.ravel(), ew)
        assert np.allclose(gb, gy.sum(axis=tuple(i for i in range(gy.ndim) if i != 1)))
    print("ok")
""")


def test_backward_does_not_grow_with_stride_or_dilation_values():
    """grad_x is a forward convolution whose padded input would span the dilated kernel (256 GiB for the first
    case): it gathers its columns from x instead, within the sizes of x, the kernel and the output."""
    tests = Path(__file__).parent
    args = [str(6 * 2**30), str(tests.parent / "src"), str(tests)]
    done = subprocess.run([sys.executable, "-c", HUGE_GEOMETRY_SCRIPT] + args, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_forward_conv_matches_the_padded_one(dtype):
    """The gathered-columns form (used when the padded input would be mostly zeros) gives the padded form's
    result, with groups, a batch, bias, stride, dilation and asymmetric padding."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(stride=(2, 3), dilation=(3, 5), padding=((4, 1), (0, 6)), groups=2)
    with mock.patch.object(_conv_gemm, "SPARSE_RATIO", 10**9):
        dense = fd.conv(x, w, b, **kw)
    with mock.patch.object(_conv_gemm, "SPARSE_RATIO", 0):
        sparse = fd.conv(x, w, b, **kw)
    np.testing.assert_allclose(sparse, dense, **tolerance(np.dtype(dtype)))
    wt = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    kw = dict(stride=(2, 3), dilation=(2, 1), padding=((1, 2), (0, 1)), output_padding=(1, 0))
    gy = rng.standard_normal(conv_transpose_ref(x, wt, **kw).shape).astype(dtype)
    with mock.patch.object(_conv_gemm, "SPARSE_RATIO", 0):
        sparse_grads = fd.conv_transpose_backward(gy, x, wt, **kw)
    for got, expected in zip(sparse_grads, fd.conv_transpose_backward(gy, x, wt, **kw)):
        np.testing.assert_allclose(got, expected, **tolerance(np.dtype(dtype)))


@given(g=transposed_geometries(), dtype=st.sampled_from([np.float32, np.float64]),
       columns=st.sampled_from([2, 1 << 20]), seed=st.integers(0, 2**16))
def test_gemm_form_with_samples_side_by_side(g, dtype, columns, seed):
    """grad_x and grad_weight from blocks of whole samples (the dual's columns gathered in the block's order)."""
    _gemm_form_matches_direct_form(g, 5, dtype, seed, MIN_TASKS=1, GEMM_COLUMNS=columns)


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((2, 4, 5, 6), (4, 3, 4, 4), dict(stride=2, padding=1)),
    ((3, 4, 7), (4, 2, 5), dict(stride=3, padding=2, output_padding=1, groups=2, dilation=2)),
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), dict(stride=(2, 1, 2), padding=(0, 1, 1))),
    ((4, 8), (4, 1, 3), dict(stride=2, groups=4)),  # unbatched
])
def test_operator_backward_matches_torch_autograd(x_shape, w_shape, kw):
    """ConvTranspose.backward(x, grad_y) == torch.autograd of conv_transpose with the operator's weight and bias."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1] * kw.get(
        "groups", 1))
    op = fd.ConvTranspose(w, b, **kw)
    y = op(x)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = op.backward(x, gy)
    rank = len(w_shape) - 2
    xt = torch.tensor(x, requires_grad=True)
    wt, bt = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    yt = (torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d,
          torch.nn.functional.conv_transpose3d)[rank - 1](xt, wt, bt, **kw)
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=1e-10, atol=1e-10)
    tx, tw, tb = torch.autograd.grad(yt, (xt, wt, bt), torch.tensor(gy))
    for ours, theirs in ((gx, tx), (gw, tw), (gb, tb)):
        assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float64
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="grad_output"):
        op.backward(x, gy[..., :-1])


@given(g=transposed_geometries(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_backward_with_grad_x_on_the_transposed_route(g, dtype, seed):
    """grad_x through conv's transposed-convolution route (forced wherever it applies), grad_weight then from
    its own columns: both equal the direct kernels' gradients."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(g, rng, 2, dtype)
    kw = _geometry(g)
    gy = rng.standard_normal(fd.conv_transpose(x, w, **kw).shape).astype(dtype)
    with mock.patch.object(_forward, "use_gemm", lambda plan: False):
        direct = fd.conv_transpose_backward(gy, x, w, **kw)
    with mock.patch.object(_forward, "_winograd_pays", lambda plan, tplan: True):
        routed = fd.conv_transpose_backward(gy, x, w, **kw)
    for a, b in zip(routed, direct):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, **tolerance(dtype))


# conv_transpose layers whose adjoint has kernel = 2 x stride on every axis: the space-to-depth Winograd form
S2D_BACKWARD = [
    ((2, 4, 5, 4), (4, 3, 4, 4), dict(stride=2, padding=1, groups=2)),
    ((1, 3, 4, 5), (3, 5, 8, 4), dict(stride=(4, 2), padding=(2, 1))),
    ((3, 4, 7), (4, 6, 6), dict(stride=3, padding=2, output_padding=1)),
    ((1, 2, 3, 4, 3), (2, 4, 4, 2, 4), dict(stride=(2, 1, 2), padding=1)),
    ((3, 4, 5, 6), (4, 4, 4, 4), dict(stride=2, padding=0, output_padding=1)),
    ((4, 5, 3), (4, 2, 4, 4), dict(stride=2, padding=1)),  # unbatched (C_in, H, W)
]


@pytest.mark.parametrize("x_shape, w_shape, kw", S2D_BACKWARD)
@pytest.mark.parametrize("tiles, block", [(1, 300), (1, 1 << 21)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_on_the_space_to_depth_form(x_shape, w_shape, kw, tiles, block, dtype):
    """grad_x and grad_weight from one transformed input (the space-to-depth Winograd form, forced; tasks from
    single tile rows to all samples, runs of them with their partial sums) == the direct kernels'."""
    from fastdeconv import _s2d
    rng = np.random.default_rng(sum(x_shape))
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(fd.conv_transpose(x, w, **kw).shape).astype(dtype)
    with mock.patch.object(_forward, "use_gemm", lambda plan: False):
        direct = fd.conv_transpose_backward(gy, x, w, **kw)
    calls = []
    run = _s2d.run
    with mock.patch.object(_forward, "use_gemm", lambda plan: True), \
            mock.patch.object(_forward, "use_s2d", lambda plan, backward=False: True), \
            mock.patch.object(_s2d, "MIN_TILES", tiles), mock.patch.object(_s2d, "BLOCK_ELEMENTS", block), \
            mock.patch.object(_s2d, "run", lambda *a: calls.append(a[5] is not None) or run(*a)):
        got = fd.conv_transpose_backward(gy, x, w, **kw)
        again = fd.conv_transpose_backward(gy, x, w, **kw)
    assert calls == [True, True]  # the form ran, with the dual (the weight gradient)
    for a, b, c in zip(got, direct, again):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, **tolerance(dtype))
        np.testing.assert_array_equal(a, c)


def test_backward_on_the_space_to_depth_form_matches_torch_and_keeps_its_bits_across_threads():
    torch = pytest.importorskip("torch")
    from fastdeconv import _s2d, _threads
    rng = np.random.default_rng(31)
    x = rng.standard_normal((6, 8, 6, 5)).astype(np.float32)
    w = rng.standard_normal((8, 6, 4, 4)).astype(np.float32)
    kw = dict(stride=2, padding=1)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.conv_transpose2d(tx, tw, **kw)
    gy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.from_numpy(gy))
    results = []
    try:
        for threads in (1, 2, 1, 2):
            fd.set_num_threads(threads)
            with mock.patch.object(_forward, "use_gemm", lambda plan: True), \
                    mock.patch.object(_forward, "use_s2d", lambda plan, backward=False: True), \
                    mock.patch.object(_s2d, "MIN_TILES", 4), mock.patch.object(_s2d, "BLOCK_ELEMENTS", 5000):
                results.append(fd.conv_transpose_backward(gy, x, w, **kw))
    finally:
        fd.set_num_threads(_threads.max_threads())
    for r in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(r, results[0]))
    np.testing.assert_allclose(results[0][0], tx.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(results[0][1], tw.grad.numpy(), rtol=1e-4, atol=1e-3)
