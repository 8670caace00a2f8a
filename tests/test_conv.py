"""fastdeconv.conv: forward cross-correlation against a NumPy reference, torch, and as conv_transpose's adjoint."""

import itertools
from unittest import mock

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import assume, given
from hypothesis import strategies as st
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _conv_gemm, _forward, _s2d, _threads
from fastdeconv._kernels.conv import correlate_small


def conv_ref(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Slow float64 forward convolution, PyTorch semantics plus (before, after) pairs and 'valid'/'same'."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    rank = w.ndim - 2
    unbatched = x.ndim == rank + 1
    if unbatched:
        x = x[None]
    stride = tuple(stride) if np.ndim(stride) else (stride,) * rank
    dilation = tuple(dilation) if np.ndim(dilation) else (dilation,) * rank
    kernel = w.shape[2:]
    if isinstance(padding, str):
        totals = [(k - 1) * d if padding == "same" else 0 for k, d in zip(kernel, dilation)]
        pairs = [(t // 2, t - t // 2) for t in totals]
    elif np.ndim(padding) == 0:
        pairs = [(padding, padding)] * rank
    else:
        pairs = [(p, p) if np.ndim(p) == 0 else tuple(p) for p in padding]
    xp = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pairs])
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, d, s in zip(xp.shape[2:], kernel, dilation, stride)]
    c_out, c_in_g = w.shape[:2]
    c_out_g = c_out // groups
    y = np.zeros((x.shape[0], c_out) + tuple(out))
    for g in range(groups):
        xg = xp[:, g * c_in_g:(g + 1) * c_in_g]
        wg = w[g * c_out_g:(g + 1) * c_out_g]
        for tap in itertools.product(*(range(k) for k in kernel)):
            window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilation, out, stride))
            y[:, g * c_out_g:(g + 1) * c_out_g] += np.einsum("ni...,oi->no...", xg[(Ellipsis,) + window],
                                                             wg[(slice(None), slice(None)) + tap])
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * rank)
    return y[0] if unbatched else y


@st.composite
def conv_geometries(draw, allow_same=True):
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    max_in = {1: 12, 2: 7, 3: 5}[rank]
    spatial = draw(st.lists(st.integers(1, max_in), min_size=rank, max_size=rank))
    kernel = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    stride = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dilation = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    kinds = ["int", "axes", "pairs", "valid"] + (["same"] if allow_same else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "same":
        stride = [1] * rank
        padding = "same"
        pairs = [((k - 1) * d // 2, (k - 1) * d - (k - 1) * d // 2) for k, d in zip(kernel, dilation)]
    elif kind == "valid":
        padding, pairs = "valid", [(0, 0)] * rank
    elif kind == "int":
        p = draw(st.integers(0, 3))
        padding, pairs = p, [(p, p)] * rank
    elif kind == "axes":
        padding = draw(st.lists(st.integers(0, 3), min_size=rank, max_size=rank))
        pairs = [(p, p) for p in padding]
    else:
        padding = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(rank)]
        pairs = padding
    assume(all(i + b + a >= (k - 1) * d + 1 for i, (b, a), k, d in zip(spatial, pairs, kernel, dilation)))
    return dict(rank=rank, groups=groups, c_in=c_in, c_out=c_out, spatial=spatial, kernel=kernel, stride=stride,
                dilation=dilation, padding=padding)


def _make(g, batch, dtype, rng, use_bias=False):
    lead = (g["c_in"],) if batch is None else (batch, g["c_in"])
    x = rng.standard_normal(lead + tuple(g["spatial"])).astype(dtype)
    w = rng.standard_normal((g["c_out"], g["c_in"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)
    bias = rng.standard_normal(g["c_out"]).astype(dtype) if use_bias else None
    return x, w, bias


def _kwargs(g):
    return {k: g[k] for k in ("stride", "padding", "dilation", "groups")}


# ---------------------------------------------------------------------------------------------- seed 002

SEED002_INPUT = [[4, 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]]
SEED002_KERNEL = [[1, 4, 1], [1, 4, 3], [3, 3, 1]]


def test_seed002_convolution():
    """Seed 002's figure: 122 comes from the 9 input numbers under the kernel (4x4 input, 3x3 kernel)."""
    y = fd.conv(np.array(SEED002_INPUT, np.float32)[None, None], np.array(SEED002_KERNEL, np.float32)[None, None])
    assert y.dtype == np.float32 and y.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(y[0, 0], [[122, 148], [126, 134]])


# ---------------------------------------------------------------------------------------------- properties


@given(g=conv_geometries(), batch=st.sampled_from([None, 1, 2]), dtype=st.sampled_from([np.float32, np.float64]),
       use_bias=st.booleans(), layout=st.sampled_from(["c", "fortran", "strided"]), seed=st.integers(0, 2**16))
def test_conv_matches_reference(g, batch, dtype, use_bias, layout, seed):
    rng = np.random.default_rng(seed)
    x, w, bias = _make(g, batch, dtype, rng, use_bias)
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "strided":
        big = np.zeros(tuple(2 * n for n in x.shape), x.dtype)
        big[tuple(slice(None, None, 2) for _ in x.shape)] = x
        x = big[tuple(slice(None, None, 2) for _ in x.shape)]
    before = x.copy()
    expected = conv_ref(x, w, bias, **_kwargs(g))
    y = fd.conv(x, w, bias, **_kwargs(g))
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **tolerance(dtype))
    np.testing.assert_array_equal(x, before)


@given(g=conv_geometries(), batch=st.sampled_from([None, 3]), dtype=st.sampled_from([np.float32, np.float64]),
       block=st.sampled_from([1, 40, 1 << 22]), seed=st.integers(0, 2**16))
def test_gemm_form_matches_reference(g, batch, dtype, block, seed):
    """The im2col + BLAS form, forced on every geometry, with column buffers from one output row to all."""
    rng = np.random.default_rng(seed)
    x, w, bias = _make(g, batch, dtype, rng, True)
    with mock.patch.object(_forward, "use_gemm", lambda plan: True), \
            mock.patch.object(_conv_gemm, "COL_ELEMENTS", block):
        y = fd.conv(x, w, bias, **_kwargs(g))
    np.testing.assert_allclose(y, conv_ref(x, w, bias, **_kwargs(g)), **tolerance(dtype))


def test_both_forms_are_chosen():
    small = _forward.make_conv_plan((1, 2, 8), (3, 2, 3), np.float32, np.float32)
    big = _forward.make_conv_plan((2, 16, 64, 64), (32, 16, 3, 3), np.float32, np.float32, padding=1)
    depthwise = _forward.make_conv_plan((2, 16, 64, 64), (16, 1, 3, 3), np.float32, np.float32, groups=16)
    long_row = _forward.make_conv_plan((1, 16, 1 << 20), (16, 16, 5), np.float32, np.float32)
    assert not _forward.use_gemm(small) and _forward.use_gemm(big) and not _forward.use_gemm(depthwise)
    assert not _forward.use_gemm(long_row)  # one row of columns would exceed the buffer
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal((2, 16, 20, 18)), rng.standard_normal((32, 8, 3, 3))
    np.testing.assert_allclose(fd.conv(x, w, stride=(1, 2), padding=1, groups=2),
                               conv_ref(x, w, stride=(1, 2), padding=1, groups=2), rtol=1e-10, atol=1e-10)


@given(g=conv_geometries(), seed=st.integers(0, 2**16))
def test_conv_is_adjoint_of_conv_transpose(g, seed):
    """<conv(x, w), y> == <x, conv_transpose(y, w)> with the same weight array and geometry."""
    rng = np.random.default_rng(seed)
    x, w, _ = _make(g, 2, np.float64, rng)
    y = fd.conv(x, w, **_kwargs(g))
    v = rng.standard_normal(y.shape)
    padding = g["padding"]
    if padding == "same":  # PyTorch's conv 'same' pads (k - 1) * d // 2 first; conv_transpose's 'same' is TF's
        padding = [((k - 1) * d // 2, (k - 1) * d - (k - 1) * d // 2) for k, d in zip(g["kernel"], g["dilation"])]
    back = fd.conv_transpose(v, w, stride=g["stride"], padding=padding, dilation=g["dilation"], groups=g["groups"],
                             output_size=g["spatial"])
    np.testing.assert_allclose(back, conv_transpose_ref(v, w, stride=g["stride"], padding=padding,
                                                        dilation=g["dilation"], groups=g["groups"],
                                                        output_size=g["spatial"]), rtol=1e-10, atol=1e-10)
    assert np.vdot(y, v) == pytest.approx(np.vdot(x, back), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_matches_torch(rank, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(rank)
    spatial = {1: (23,), 2: (9, 11), 3: (5, 6, 7)}[rank]
    kernel = {1: (4,), 2: (3, 2), 3: (2, 3, 2)}[rank]
    x = rng.standard_normal((2, 6) + spatial).astype(dtype)
    w = rng.standard_normal((4, 3) + kernel).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    fn = getattr(torch.nn.functional, f"conv{rank}d")
    for kw in (dict(stride=2, padding=1, dilation=1), dict(stride=1, padding="same", dilation=2),
               dict(stride=(1, 3, 2)[:rank], padding=(2, 0, 1)[:rank], dilation=(2, 1, 2)[:rank])):
        expected = fn(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), groups=2, **kw).numpy()
        np.testing.assert_allclose(fd.conv(x, w, b, groups=2, **kw), expected, **tolerance(dtype))


def test_larger_than_tiles():
    rng = np.random.default_rng(4)
    for xs, ws, s, p, d in [((1, 2, 5000), (3, 2, 5), 3, 2, 2), ((2, 3, 60, 70), (2, 3, 3, 3), 1, 1, 1),
                            ((1, 1, 10, 9, 12), (2, 1, 3, 2, 3), 2, 1, 1)]:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        np.testing.assert_allclose(fd.conv(x, w, stride=s, padding=p, dilation=d),
                                   conv_ref(x, w, stride=s, padding=p, dilation=d), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------- details


def test_dtype_rules_and_lists():
    x32, w32 = np.ones((1, 2, 5), np.float32), np.ones((3, 2, 2), np.float32)
    assert fd.conv(x32, w32).dtype == np.float32
    assert fd.conv(x32, w32.astype(np.float64)).dtype == np.float64
    assert fd.conv(x32.astype(np.int16), w32).dtype == np.float64
    assert fd.conv(x32, w32, bias=np.ones(3, np.float64)).dtype == np.float32
    np.testing.assert_array_equal(fd.conv([[1, 2, 3]], [[[1, 1]]]), [[3.0, 5.0]])
    with pytest.raises(TypeError, match="x must be real"):
        fd.conv(x32.astype(np.complex64), w32)
    with pytest.raises(TypeError, match="bias"):
        fd.conv(x32, w32, bias=np.array(["a", "b", "c"]))


def test_read_only_inputs():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((2, 2, 3, 3))
    x.flags.writeable = False
    w.flags.writeable = False
    np.testing.assert_allclose(fd.conv(x, w, padding=1), conv_ref(x, w, padding=1), rtol=1e-12)


def test_empty_batch_and_channels():
    assert fd.conv(np.zeros((0, 2, 5)), np.ones((3, 2, 2))).shape == (0, 3, 4)
    assert fd.conv(np.zeros((1, 2, 5)), np.ones((0, 2, 2))).shape == (1, 0, 4)
    y = fd.conv(np.zeros((1, 0, 5)), np.ones((2, 0, 2)), bias=[1.0, 2.0], padding=1)
    np.testing.assert_array_equal(y[0], [[1] * 6, [2] * 6])


def test_nan_propagates():
    x = np.zeros((1, 1, 6))
    x[0, 0, 2] = np.nan
    y = fd.conv(x, np.ones((1, 1, 2)), stride=2)
    np.testing.assert_array_equal(np.isnan(y[0, 0]), [False, True, False])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(weight=np.ones((2, 2))), ValueError, "weight must have shape"),
    (dict(x=np.ones((1, 1, 1, 4))), ValueError, "x must have shape"),
    (dict(x=np.ones((1, 3, 4))), ValueError, "input channels"),
    (dict(groups=2), ValueError, "divisible by groups"),
    (dict(groups=0), ValueError, "groups must be >= 1"),
    (dict(groups=1.5), TypeError, "groups"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(dilation=[1, 2]), ValueError, "dilation must be an int or a sequence of 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="full"), ValueError, "unknown padding"),
    (dict(padding="same", stride=2), ValueError, "'same' needs stride 1"),
    (dict(weight=np.ones((3, 2, 9))), ValueError, "output size must be >= 1"),
    (dict(bias=np.ones(2)), ValueError, "bias must have shape"),
    (dict(x=np.ones((1, 2, 0))), ValueError, "spatial sizes must be >= 1"),
    (dict(weight=np.ones((3, 2, 0))), ValueError, "kernel sizes"),
])
def test_bad_arguments(kwargs, exc, match):
    args = dict(x=np.ones((1, 2, 5)), weight=np.ones((3, 2, 2)))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fd.conv(**args)


def test_huge_output_refused_before_allocation():
    x = np.broadcast_to(np.ones(1), (1, 1, 2**40))  # a view: no memory behind it
    with pytest.raises(ValueError, match="the output .* would need"):
        fd.conv(x, np.ones((64, 1, 1)))


@given(g=conv_geometries(), dtype=st.sampled_from([np.float32, np.float64]), columns=st.sampled_from([2, 64, 1 << 20]),
       seed=st.integers(0, 2**16))
def test_gemm_form_with_samples_side_by_side(g, dtype, columns, seed):
    """Blocks of whole samples (one matrix product over several samples' columns, then scattered back),
    forced on every geometry, with the padding written into the columns by im2col."""
    rng = np.random.default_rng(seed)
    x, w, bias = _make(g, 5, dtype, rng, True)
    with mock.patch.object(_forward, "use_gemm", lambda plan: True), \
            mock.patch.object(_conv_gemm, "MIN_TASKS", 1), mock.patch.object(_conv_gemm, "GEMM_COLUMNS", columns):
        y = fd.conv(x, w, bias, **_kwargs(g))
    np.testing.assert_allclose(y, conv_ref(x, w, bias, **_kwargs(g)), **tolerance(dtype))


def _through_winograd(x, w, bias, kw):
    """conv with the transposed-convolution route forced wherever it applies; also whether it was taken."""
    calls = []
    run = _forward._conv_winograd

    def spy(*args):
        done = run(*args)
        calls.append(done)
        return done

    with mock.patch.object(_forward, "_winograd_pays", lambda plan, tplan: True), \
            mock.patch.object(_forward, "_conv_winograd", spy):
        y = fd.conv(x, w, bias, **kw)
    return y, any(calls)


@given(g=conv_geometries(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_transposed_route_matches_reference(g, dtype, seed):
    """conv as a stride-1 transposed convolution (flipped, channel-swapped weight), forced on every geometry it
    applies to."""
    rng = np.random.default_rng(seed)
    x, w, bias = _make(g, 2, dtype, rng, True)
    y, _ = _through_winograd(x, w, bias, _kwargs(g))
    np.testing.assert_allclose(y, conv_ref(x, w, bias, **_kwargs(g)), **tolerance(dtype))


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((2, 6, 9, 8), (4, 3, 3, 3), dict(padding=1, groups=2)),
    ((1, 3, 11, 10), (5, 3, 4, 2), dict(padding=((2, 1), (1, 0)), dilation=(1, 2))),
    ((2, 4, 20), (6, 4, 3), dict(dilation=2, padding=((3, 1),))),
    ((1, 2, 6, 7, 5), (4, 2, 2, 3, 2), dict(padding=(1, 0, 1))),
    ((1, 4, 8, 8), (4, 4, 3, 3), dict(padding="same")),
])
def test_transposed_route_is_taken_and_right(x_shape, w_shape, kw):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    y, taken = _through_winograd(x, w, b, kw)
    assert taken
    np.testing.assert_allclose(y, conv_ref(x, w, b, **kw), rtol=1e-10, atol=1e-10)


def test_transposed_route_is_bitwise_reproducible_across_thread_counts():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 16, 18, 18)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2, 1, 2):
            fd.set_num_threads(threads)
            y, taken = _through_winograd(x, w, None, dict(padding=1))
            assert taken
            results.append(y)
    finally:
        fd.set_num_threads(_threads.max_threads())
    assert all(np.array_equal(r, results[0]) for r in results[1:])


@pytest.mark.parametrize("kernel, stride", [(3, 2), (4, 2), (9, 2), (5, 3), (2, 4), (1, 3)])
def test_phase_split_direct_form(kernel, stride, monkeypatch):
    """The direct form on phase-split rows (strides 2-4 along W), with phases of unequal tap counts: equal to
    the reference, and an infinite input stays infinite (no padded zero tap multiplies it). (These layers are
    small enough to run unsplit, and depthwise: the split is forced.)"""
    monkeypatch.setattr(_forward, "small", lambda plan: False)
    monkeypatch.setattr(_forward, "use_depthwise", lambda plan: False)
    rng = np.random.default_rng(kernel * 10 + stride)
    x = rng.standard_normal((2, 3, 7, 23))
    w = rng.standard_normal((3, 1, 2, kernel))
    plan = _forward.make_conv_plan(x.shape, w.shape, x.dtype, w.dtype, (1, stride), (0, 1), 1, 3)
    assert _forward.plan_phases(plan) and not _forward.use_gemm(plan)
    y = fd.conv(x, w, stride=(1, stride), padding=(0, 1), groups=3)
    np.testing.assert_allclose(y, conv_ref(x, w, stride=(1, stride), padding=(0, 1), groups=3), rtol=1e-12,
                               atol=1e-12)
    x[0, 1, 3, 10] = np.inf
    w = np.abs(w)
    y = fd.conv(x, w, stride=(1, stride), padding=(0, 1), groups=3)
    expected = conv_ref(x, w, stride=(1, stride), padding=(0, 1), groups=3)
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
    assert not np.isnan(y).any()


# ---------------------------------------------------------------------------------------------- space-to-depth


def _through_s2d(x, w, bias, kw, tiles=1, block=1 << 21):
    """conv with the space-to-depth Winograd form (``_s2d``) forced, with at least ``tiles`` tiles per GEMM and
    ``block`` elements of V per task (small ones split the samples and their tile rows); also whether it ran."""
    calls = []
    run = _s2d.run

    def spy(*args):
        calls.append(True)
        return run(*args)

    with mock.patch.object(_forward, "use_gemm", lambda plan: True), \
            mock.patch.object(_forward, "use_s2d", lambda plan, backward=False: True), \
            mock.patch.object(_s2d, "MIN_TILES", tiles), mock.patch.object(_s2d, "BLOCK_ELEMENTS", block), \
            mock.patch.object(_s2d, "run", spy):
        y = fd.conv(x, w, bias, **kw)
    return y, bool(calls)


# kernel = 2 x stride on every axis (the form's layers), 1-D to 3-D, strides 1 to 4, paddings and odd sizes, groups
S2D_LAYERS = [
    ((2, 6, 9, 8), (4, 3, 4, 4), dict(stride=2, padding=1, groups=2)),                 # DCGAN-like, odd size
    ((1, 3, 17, 16), (5, 3, 8, 4), dict(stride=(4, 2), padding=((2, 3), (1, 0)))),     # 4x and 2x, pairs
    ((3, 4, 21), (6, 2, 6), dict(stride=3, padding=2, groups=2)),                      # 1-D, stride 3
    ((1, 2, 6, 7, 5), (4, 2, 4, 2, 4), dict(stride=(2, 1, 2), padding=1)),             # 3-D, a stride-1 axis
    ((2, 3, 9, 10, 8), (2, 3, 4, 4, 4), dict(stride=2, padding=(0, 1, 2))),            # 3-D, all strided
    ((1, 4, 40, 9), (4, 4, 4, 4), dict(stride=2, padding=1)),                          # one sample, many rows
    ((2, 4, 8, 8), (8, 1, 4, 4), dict(stride=2, padding=1, groups=4)),                 # one channel per group
]


@pytest.mark.parametrize("x_shape, w_shape, kw", S2D_LAYERS)
@pytest.mark.parametrize("tiles, block", [(1, 300), (1, 1 << 21), (256, 1 << 21)])
def test_space_to_depth_winograd_form(x_shape, w_shape, kw, tiles, block):
    """The strided correlation as a stride-1 one on the space-to-depth input with Winograd F(2, 2), forced, with
    tasks from single tile rows of one sample to all samples, against the float64 reference."""
    rng = np.random.default_rng(len(x_shape) + w_shape[2])
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    y, taken = _through_s2d(x, w, b, kw, tiles, block)
    assert taken
    np.testing.assert_allclose(y, conv_ref(x, w, b, **kw), rtol=1e-10, atol=1e-10)
    y32, _ = _through_s2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), kw, tiles, block)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, conv_ref(x, w, b, **kw), **tolerance(np.float32))


def test_space_to_depth_form_is_chosen_by_its_estimate_and_reproducible():
    """A DCGAN block's adjoint runs it (estimated below the GEMM form); a layer whose stride does not halve the
    kernel, an RGB layer or one whose transformed input would be too large does not; the same call twice, and on
    1 and 2 threads, gives the same bits."""
    dcgan = _forward.make_conv_plan((64, 128, 16, 16), (256, 128, 4, 4), np.float32, np.float32, 2, 1)
    assert _s2d.pays(dcgan) and _forward.use_s2d(dcgan) and _forward.use_s2d(dcgan, backward=True)
    assert not _s2d.applies(_forward.make_conv_plan((4, 64, 16, 16), (64, 64, 3, 3), np.float32, np.float32, 2, 1))
    rgb = _forward.make_conv_plan((64, 3, 64, 64), (64, 3, 4, 4), np.float32, np.float32, 2, 1)
    assert _s2d.pays(rgb) and not _forward.use_s2d(rgb)  # three input channels: the transforms cost more
    with mock.patch.object(_s2d, "MOST_ELEMENTS", 1 << 20):
        assert not _s2d.pays(dcgan)  # its transformed input would exceed the bound
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 16, 10, 10)).astype(np.float32)
    w = rng.standard_normal((32, 16, 4, 4)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2, 1, 2):
            fd.set_num_threads(threads)
            y, taken = _through_s2d(x, w, None, dict(stride=2, padding=1), 4, 4000)
            assert taken
            results.append(y)
    finally:
        fd.set_num_threads(_threads.max_threads())
    assert all(np.array_equal(r, results[0]) for r in results[1:])
    np.testing.assert_allclose(results[0], conv_ref(x, w, stride=2, padding=1), **tolerance(np.float32))


def test_space_to_depth_form_leaves_non_finite_values_to_the_exact_form():
    """An infinity in x (its transform would meet its own negation) or a value whose products could overflow runs
    the GEMM form: the definition's Inf/NaN pattern and finite values, never a NaN of the transforms."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 4, 8, 8)), np.abs(rng.standard_normal((4, 4, 4, 4)))
    x[1, 2, 3, 4] = np.inf
    y, _ = _through_s2d(x, w, None, dict(stride=2, padding=1))
    expected = conv_ref(x, w, stride=2, padding=1)
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
    assert not np.isnan(y).any()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-10, atol=1e-10)
    big = np.full((1, 4, 6, 6), 3e38, np.float32)
    plan = _forward.make_conv_plan(big.shape, w.shape, np.float32, np.float32, 2, 1)
    assert not _s2d.finite(plan, big, w.astype(np.float32))
    assert _s2d.finite(plan, big / 1e30, w.astype(np.float32))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_space_to_depth_form_matches_torch(rank):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(20 + rank)
    spatial = {1: (30,), 2: (13, 10), 3: (6, 7, 8)}[rank]
    kernel = {1: (8,), 2: (4, 6), 3: (4, 4, 2)}[rank]
    stride = {1: 4, 2: (2, 3), 3: (2, 2, 1)}[rank]
    x = rng.standard_normal((2, 6) + spatial).astype(np.float32)
    w = rng.standard_normal((4, 3) + kernel).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    fn = getattr(torch.nn.functional, f"conv{rank}d")
    expected = fn(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=stride, padding=1,
                  groups=2).numpy()
    y, taken = _through_s2d(x, w, b, dict(stride=stride, padding=1, groups=2))
    assert taken
    np.testing.assert_allclose(y, expected, **tolerance(np.float32))


# strides that do not divide the kernel (zero phase taps), through conv_transpose's Winograd form
ROUTED_LAYERS = [
    ((2, 4, 11, 9), (4, 4, 3, 3), dict(stride=2, padding=1)),
    ((1, 4, 13, 12), (6, 2, 5, 4), dict(stride=(3, 2), padding=(2, 1), groups=2)),
    ((2, 4, 15), (4, 4, 9), dict(stride=4, padding=3)),
    ((1, 2, 7, 6, 7), (4, 2, 3, 4, 2), dict(stride=(2, 2, 1), padding=1)),
    ((2, 4, 12, 10), (4, 4, 6, 4), dict(stride=2, padding=(2, 1))),  # divisible: 3 and 2 taps per phase
]


def _through_route(x, w, kw):
    calls = []
    run = _forward._conv_s2d

    def spy(*args):
        done = run(*args)
        calls.append(done)
        return done

    with mock.patch.object(_forward, "use_gemm", lambda plan: True), \
            mock.patch.object(_forward, "use_s2d", lambda plan, backward=False: False), \
            mock.patch.object(_forward, "plan_s2d", _forward.s2d_form), \
            mock.patch.object(_forward, "_winograd_pays", lambda plan, tplan: True), \
            mock.patch.object(_forward, "_conv_s2d", spy):
        y = fd.conv(x, w, **kw)
    return y, any(calls)


@pytest.mark.parametrize("x_shape, w_shape, kw", ROUTED_LAYERS)
def test_space_to_depth_winograd_route(x_shape, w_shape, kw):
    """Strided layers as the stride-1 correlation of their space-to-depth input through conv_transpose's Winograd
    form, also where the stride does not divide the kernel; an infinite input there runs the GEMM form (a zero
    phase tap would multiply it), with the definition's pattern."""
    rng = np.random.default_rng(w_shape[2] * 7)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y, taken = _through_route(x, w, kw)
    assert taken
    np.testing.assert_allclose(y, conv_ref(x, w, **kw), rtol=1e-10, atol=1e-10)
    x[(0, 1) + tuple(n // 2 for n in x_shape[2:])] = np.inf
    w = np.abs(w)
    y, taken = _through_route(x, w, kw)
    expected = conv_ref(x, w, **kw)
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
    assert not np.isnan(y).any()
    assert taken == all(k % s == 0 for k, s in zip(w_shape[2:], np.broadcast_to(kw["stride"], len(w_shape) - 2)))


def test_repeated_calls_reuse_the_plan_and_inexact_geometry_is_still_refused(monkeypatch):
    """A repeated call finds its validated plan by its exact arguments (no second validation), runs small layers
    unsplit, and a float or bool geometry never matches an int's entry: it is refused as on a first call."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 2, 6, 6)).astype(np.float32), rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    first = fd.conv(x, w, stride=2, padding=1)
    plan = _forward.make_conv_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1)
    assert _forward.plan_phases(plan) and _forward.small(plan)
    made = []
    monkeypatch.setattr(_forward, "make_conv_plan", lambda *a, **k: made.append(a) or plan)
    assert np.array_equal(fd.conv(x, w, stride=2, padding=1), first) and made == []
    monkeypatch.undo()
    for bad in (2.0, True):
        with pytest.raises(TypeError, match="stride"):
            fd.conv(x, w, stride=bad, padding=1)
    np.testing.assert_allclose(first, conv_ref(x.astype(np.float64), w.astype(np.float64), stride=2, padding=1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((1, 2, 6, 6), (4, 2, 3, 3), dict(stride=2, padding=1)),
    ((2, 4, 9), (4, 2, 3), dict(stride=1, padding=2, dilation=2, groups=2)),
    ((1, 2, 4, 5, 3), (2, 1, 2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 0, 1), groups=2)),
    ((1, 3, 5, 5), (3, 3, 2, 2), dict(padding="same")),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_layers_read_x_directly_with_the_padded_copys_bits(x_shape, w_shape, kw, dtype, monkeypatch):
    """Below CONV_TINY_WORK multiply-adds ``conv`` reads x in place (each term bounds checked): the same terms in
    the same order as the correlation of the padded copy, so the same bits, an infinite weight on a padded tap
    giving the same NaN."""
    rng = np.random.default_rng(sum(x_shape))
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    plan = _forward.make_conv_plan(x.shape, w.shape, x.dtype, w.dtype, kw.get("stride", 1), kw.get("padding", 0),
                                   kw.get("dilation", 1), kw.get("groups", 1))
    assert _forward.tiny(plan) and _forward._tiny_call(plan) is not None  # (conv's own fast path)
    np.testing.assert_array_equal(fd.conv(x, w, None, **kw), fd.conv(x, w, np.zeros_like(b), **kw))
    np.testing.assert_allclose(fd.conv(x, w, b, **kw), conv_ref(x.astype(np.float64), w.astype(np.float64),
                                                                b.astype(np.float64), **kw), rtol=1e-5, atol=1e-5)
    w[0, 0, ..., 0] = np.inf
    direct = fd.conv(x, w, b, **kw)
    assert np.isnan(direct).any() or np.isinf(direct).any()
    monkeypatch.setattr(_forward, "tiny", lambda plan: False)
    fd.clear_caches()  # (the routes memoised for this plan)
    try:
        assert _forward._tiny_call(plan) is None
        np.testing.assert_array_equal(direct, fd.conv(x, w, b, **kw))
        w[0, 0, ..., 0] = 0.5
        padded = fd.conv(x, w, b, **kw)
        monkeypatch.undo()
        fd.clear_caches()
        np.testing.assert_array_equal(padded, fd.conv(x, w, b, **kw))
    finally:
        fd.clear_caches()


# ---------------------------------------------------------------------------------------------- depthwise

DEPTHWISE_CASES = [  # (x shape, weight shape, geometry): one input channel per group
    ((2, 4, 22, 26), (4, 1, 4, 4), dict(stride=2, padding=1, groups=4)),  # depthwise_s2's adjoint, smaller
    ((2, 3, 23, 25), (6, 1, 3, 5), dict(stride=3, padding=0, groups=3)),  # multiplier 2, shorter last phases
    ((1, 2, 17, 19), (6, 1, 3, 4), dict(padding="same", groups=2)),  # stride 1, the odd zero at the end
    ((2, 2, 41, 60), (2, 1, 3, 3), dict(stride=(2, 4), padding=((2, 0), (1, 3)), dilation=(2, 1), groups=2)),
    ((2, 2, 29, 41), (2, 1, 3, 3), dict(stride=2, padding=1, dilation=2, groups=2)),  # dilation along W
    ((3, 8, 401), (8, 1, 3), dict(stride=2, padding=1, groups=8)),  # 1-D
    ((2, 3, 495), (6, 1, 5), dict(stride=3, padding=2, groups=3)),  # 1-D, multiplier 2
    ((1, 2, 7, 9, 11), (4, 1, 3, 2, 3), dict(stride=(2, 1, 2), padding=1, groups=2)),  # 3-D
    ((2, 1, 30, 31), (2, 1, 4, 4), dict(stride=2, padding=1)),  # one channel, groups=1
]


def _correlation_bits(x, w, b, kw):
    """The padded correlation's result, bit for bit (``correlate_small``: the bias, then every term in (kD, kH,
    kW) order, a tap outside x multiplying a zero), in the canonical 5-D shapes of ``conv``'s plan."""
    plan = _forward.make_conv_plan(x.shape, w.shape, x.dtype, w.dtype, kw.get("stride", 1), kw.get("padding", 0),
                                   kw.get("dilation", 1), kw.get("groups", 1))
    y = np.empty((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes), plan.dtype)
    b = np.zeros(plan.c_out, plan.dtype) if b is None else b
    correlate_small(x.reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes)),
                    w.reshape(w.shape[:2] + tuple(a.kernel for a in plan.axes)), b, y, plan.groups,
                    plan.arrays("stride"), plan.arrays("dilation"), plan.arrays("start"))
    return y.reshape(plan.out_shape)


def _through_depthwise(x, w, b, kw):
    """``fd.conv`` with a spy on the depthwise route: the result and the blocks of its calls."""
    calls, real = [], _forward.depthwise

    def spy(*args):
        calls.append(tuple(args[-1]))
        return real(*args)

    with mock.patch.object(_forward, "depthwise", spy):
        y = fd.conv(x, w, b, **kw)
    return y, calls


@pytest.mark.parametrize("x_shape, w_shape, kw", DEPTHWISE_CASES)
@pytest.mark.parametrize("dtype, use_bias", [(np.float32, True), (np.float32, False), (np.float64, True)])
def test_depthwise_route_matches_the_reference_with_the_correlations_bits(x_shape, w_shape, kw, dtype, use_bias):
    """Layers with one input channel per group run on the depthwise kernel (padding and the strides' phase split
    in its scratch): equal to the reference, and bit for bit the padded correlation (the same terms in the same
    order), whole planes per task or blocks of one output element, on 1 or 2 threads."""
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if use_bias else None
    expected = conv_ref(x, w, b, **kw)
    bits = _correlation_bits(x, w, b, kw)
    before = _threads.get_num_threads()
    try:
        for threads in (1, 2):
            fd.set_num_threads(threads)
            y, calls = _through_depthwise(x, w, b, kw)
            assert len(calls) == 1 and y.dtype == dtype and y.shape == expected.shape
            np.testing.assert_allclose(y, expected, **tolerance(dtype))
            np.testing.assert_array_equal(y, bits)
            with mock.patch.object(_forward, "_depthwise_block", lambda plan, threads: np.ones(2, np.int64)):
                tiny_blocks, calls = _through_depthwise(x, w, b, kw)
            assert calls == [(1, 1)]
            np.testing.assert_array_equal(tiny_blocks, bits)
    finally:
        fd.set_num_threads(before)


def test_depthwise_route_is_chosen_for_depthwise_s2_and_reproducible():
    """depthwise_s2's adjoint (8 x 64 x 64 x 64, 4x4 kernel, stride 2, groups 64) runs on the depthwise kernel,
    in blocks that do not depend on the thread count's bits: equal bits on 1 and 2 threads and across calls."""
    plan = _forward.make_conv_plan((8, 64, 64, 64), (64, 1, 4, 4), np.float32, np.float32, 2, 1, 1, 64)
    assert _forward.use_depthwise(plan) and not _forward.use_gemm(plan)
    rng = np.random.default_rng(30)
    x = rng.standard_normal((8, 64, 64, 64)).astype(np.float32)
    w = rng.standard_normal((64, 1, 4, 4)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=64)
    before = _threads.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 2, 1):
            fd.set_num_threads(threads)
            y, calls = _through_depthwise(x, w, b, kw)
            assert len(calls) == 1
            results.append(y)
    finally:
        fd.set_num_threads(before)
    assert all(np.array_equal(r, results[0]) for r in results[1:])
    np.testing.assert_array_equal(results[0], _correlation_bits(x, w, b, kw))
    np.testing.assert_allclose(results[0][:2, :8], conv_ref(x[:2, :8], w[:8], b[:8], stride=2, padding=1, groups=8),
                               **tolerance(np.float32))


def test_depthwise_route_keeps_infinities_and_small_layers_keep_their_routes():
    """No product with a padded zero weight is formed (an infinite input stays infinite, no NaN); a tiny layer
    still reads x in place, and a channel multiplier the GEMM form takes stays on the GEMM form."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 29, 35))
    w = np.abs(rng.standard_normal((3, 1, 3, 5)))
    x[1, 2, 7, 8] = np.inf
    kw = dict(stride=(2, 3), padding=1, groups=3)
    y, calls = _through_depthwise(x, w, None, kw)
    assert len(calls) == 1 and not np.isnan(y).any()
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(conv_ref(x, w, **kw)))
    tiny = _forward.make_conv_plan((1, 2, 6, 6), (2, 1, 3, 3), np.float32, np.float32, 2, 1, 1, 2)
    assert _forward.tiny(tiny) and not _forward.use_depthwise(tiny)
    gemm = _forward.make_conv_plan((4, 16, 64, 64), (128, 1, 3, 3), np.float32, np.float32, 1, 1, 1, 16)
    assert _forward.use_gemm(gemm)
    xg, wg = rng.standard_normal((4, 16, 64, 64)).astype(np.float32), rng.standard_normal((128, 1, 3, 3))
    assert _through_depthwise(xg, wg.astype(np.float32), None, dict(padding=1, groups=16))[1] == []


def test_depthwise_route_serves_the_gradient_and_the_linear_operator():
    """conv_transpose_backward's grad_x of a depthwise transposed convolution and linear_operator's matvec go
    through run_conv, so through the depthwise kernel, with conv's bits."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 4, 11, 13)), rng.standard_normal((4, 1, 4, 4))
    gy = rng.standard_normal(fd.conv_transpose(x, w, stride=2, padding=1, groups=4).shape)
    calls, real = [], _forward.depthwise

    def spy(*args):
        calls.append(args[-1])
        return real(*args)

    with mock.patch.object(_forward, "depthwise", spy):
        gx, _, _ = fd.conv_transpose_backward(gy, x, w, stride=2, padding=1, groups=4)
        c = fd.linear_operator(w, gy.shape[2:], stride=2, padding=1, groups=4)
        v = c.matvec(gy[0].ravel())
    assert len(calls) == 2
    kw = dict(stride=2, padding=1, groups=4)
    np.testing.assert_array_equal(gx, _correlation_bits(gy, w, None, kw))
    np.testing.assert_allclose(gx, conv_ref(gy, w, **kw), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(v, _correlation_bits(gy[:1], w, None, kw).ravel())


# (x shape, weight shape, geometry, the route the reference profile plans for conv)
ROUTE_CASES = [
    ((1, 2, 6, 6), (4, 2, 3, 3), dict(stride=2), "tiny"),
    ((8, 16, 32, 32), (16, 1, 4, 4), dict(stride=2, padding=1, groups=16), "depthwise"),
    ((8, 64, 16, 16), (64, 64, 3, 3), dict(padding=1), "winograd"),
    ((8, 128, 16, 16), (64, 128, 4, 4), dict(stride=2, padding=1), "s2d-winograd"),
    ((2, 16, 24, 24), (32, 16, 3, 3), dict(stride=2, padding=1), "gemm"),
    ((4, 3, 200, 200), (2, 3, 3, 3), dict(stride=2, padding=1), "phases"),
    ((2, 3, 40, 40), (2, 3, 3, 3), dict(stride=2, padding=1), "direct"),
    ((1, 2, 9, 9), (3, 2, 3, 3), dict(padding=200, stride=50), "sparse"),
]
# what each route calls (patched to record it, then called through)
RUNNERS = {"tiny": (_forward, "correlate_small"), "depthwise": (_forward, "depthwise"),
           "winograd": (_forward, "_conv_winograd"), "s2d-winograd": (_s2d, "run"),
           "s2d-transposed": (_forward, "_conv_s2d"), "gemm": (_conv_gemm, "conv_gemm"),
           "phases": (_forward, "_conv_phases"), "direct": (_forward, "correlate"),
           "sparse": (_conv_gemm, "conv_sparse")}


@pytest.mark.parametrize("case", range(len(ROUTE_CASES)))
def test_plan_shows_the_route_conv_runs(case, monkeypatch):
    """``fastdeconv.plan(..., op="conv")`` names the route ``conv`` then takes (the one whose runner is called),
    with the model's estimates where it prices the route, and the same on channels-last shapes."""
    x_shape, w_shape, kw, expected = ROUTE_CASES[case]
    choice = fd.plan(x_shape, w_shape, op="conv", **kw)
    assert choice.method == "conv" and choice.variant == expected and choice.reason == _forward.ROUTES[expected]
    assert [e for e, _ in choice.estimates] == sorted(dict(choice.estimates), key=dict(choice.estimates).get)
    if expected in ("winograd", "s2d-winograd", "gemm"):
        assert expected in dict(choice.estimates)
    rank = len(w_shape) - 2
    last = (x_shape[0],) + x_shape[2:] + (x_shape[1],)
    assert fd.plan(last, w_shape, op="conv", data_format="channels_last", **kw).variant == expected
    called = []
    for name, (module, attr) in RUNNERS.items():
        original = getattr(module, attr)
        monkeypatch.setattr(module, attr, lambda *a, _o=original, _n=name, **k: called.append(_n) or _o(*a, **k))
    rng = np.random.default_rng(case)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y = fd.conv(x, w, **kw)
    assert called[:1] == [expected]
    np.testing.assert_allclose(y, conv_ref(x, w, **kw), rtol=1e-9, atol=1e-9)
    assert rank == x.ndim - 2


def test_plan_of_conv_refuses_what_conv_does_not_take():
    for bad, message in [(dict(op="convolution"), "op must be"), (dict(op="conv", output_padding=1), "output_padding"),
                         (dict(op="conv", output_size=(12, 12)), "output_size"),
                         (dict(op="conv", method="scatter"), "method")]:
        with pytest.raises(ValueError, match=message):
            fd.plan((1, 2, 6, 6), (4, 2, 3, 3), **bad)
    with pytest.raises(ValueError, match="channels"):
        fd.plan((1, 2, 6, 6), (4, 2, 3, 3), op="conv", data_format="channels_last")


def test_wide_stride_depthwise_layers_keep_the_padded_correlation():
    """A depthwise layer with a stride above DEPTHWISE_MAX_STRIDE (FCN-32s' bilinear adjoint: kernel 64, stride
    32) runs the padded correlation, whose runs are not cut into stride x stride phases; up to it, the depthwise
    kernel. Both against the reference."""
    rng = np.random.default_rng(5)
    for stride, expected in ((16, "direct"), (_forward.DEPTHWISE_MAX_STRIDE, "depthwise")):
        x = rng.standard_normal((1, 3, 4 * stride + 8, 4 * stride + 8))
        w = rng.standard_normal((3, 1, 2 * stride, 2 * stride))
        kw = dict(stride=stride, padding=stride // 2, groups=3)
        assert fd.plan(x.shape, w.shape, op="conv", **kw).variant == expected
        np.testing.assert_allclose(fd.conv(x, w, **kw), conv_ref(x, w, **kw), rtol=1e-9, atol=1e-9)
