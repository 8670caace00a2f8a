"""A strided forward convolution as a stride-1 one on its space-to-depth input, run with Winograd F(2, 2).

Along an axis with stride ``s`` and kernel ``k = 2 s`` (no dilation), tap ``j * s + p`` reads the padded input at
``o * s + j * s + p``: element ``o + j`` of its phase ``p`` (every ``s``-th element from ``p``). With the phases as
channels, ``xs[n, c', q] = x_padded[n, ci, q * s + p]`` and the weight ``ws[co, c', j] = w[co, ci, j * s + p]`` with
``c' = (group * P + p) * C_in_g + ci`` (``P`` the product of the strides, ``p`` the phase index over the axes,
``ci`` within the group: a group's channels stay together, a phase's are one run), the strided correlation is a
stride-1 valid one with two taps per axis on ``C_in * P`` channels: the DCGAN blocks (kernel 4, stride 2),
super-resolution and 3-D up-convolutions' adjoints. (A stride-1 axis with kernel 2 is the case ``s = 1``.)

Two taps per axis are Winograd's F(2, 2): per axis three transform points for two outputs instead of four
products, in 2-D 9 instead of 16 (1.78x fewer multiplications), in 3-D 27 instead of 64. Its transforms hold
only 0 and +-1 (one addition per point and axis), so the channel contraction, two large GEMMs per point over
all the tiles, is nearly all of the work. The weight gradient of the same correlation is F(2, 2)
too, transposed (``dg = G^T [(A dy) . (B^T d)]`` summed over the tiles), and shares the input's transform: the
backward of a transposed convolution does both contractions on one transformed input.
"""

from __future__ import annotations

from math import prod as _prod

import numpy as np

from . import _geometry as geo
from . import _model
from ._kernels.s2d import s2d_dual, s2d_inverse, s2d_pack, s2d_transform, s2d_weight, s2d_weight_grad
from ._runtime import run_parallel
from ._scan import max_abs
from ._threads import max_threads
from .variants import _terms

# Elements of one block's transformed input (points x channels x tiles): the blocks of samples (or tile rows of
# one sample) that the copies and transforms run in are cut to stay within it, and into at least ``MIN_TASKS``
# where the layer allows, so that every thread has work; properties of the layer, never of the thread count.
BLOCK_ELEMENTS = 1 << 21
MIN_TASKS = 8
# Tiles of one block at least where the layer has them (each block's calls have a fixed cost), but two blocks
# of half as many where that gives the pool work for two threads.
MIN_TILES = 256
# Elements of the transformed input and the point products together at most (128 MiB in float32).
MOST_ELEMENTS = 1 << 25


def applies(plan) -> bool:
    """Whether the layer is a strided one this form runs: on every spatial axis ``kernel == 2 * stride`` with no
    dilation where the stride is above 1 (``kernel == 2`` where it is 1), some stride above 1, and channels on
    both sides of a group (``plan``: a forward convolution's ``ConvPlan``)."""
    axes = plan.axes[geo.MAX_RANK - plan.rank:]
    if all(a.stride == 1 for a in axes) or plan.batch == 0:
        return False
    if plan.c_in // plan.groups == 0 or plan.c_out // plan.groups == 0:
        return False
    return all(a.kernel == 2 * a.stride and a.dilation == 1 for a in axes)


def pays(plan) -> bool:
    """Whether it applies, its transformed input and products (points x tiles x channels) stay within
    ``MOST_ELEMENTS`` (beyond, the GEMM form's bounded column blocks run the layer), and its transformed weight is
    at most twice its transformed input: on weight-heavy layers (few tiles, DCGAN's first block at batch 16) the
    weight's transform and its reading by every GEMM outweigh the products saved."""
    if not applies(plan):
        return False
    total = plan.batch * _prod(_tiles(plan))
    c_all = plan.c_in * _prod(a.stride for a in plan.axes)
    weight = plan.c_out * c_all // plan.groups
    return _points(plan) * total * (c_all + plan.c_out) <= MOST_ELEMENTS and weight <= 2 * total * c_all


def _tiles(plan) -> tuple[int, int, int]:
    """Tiles per canonical axis (1 on the leading unit axes): two outputs per tile."""
    lead = geo.MAX_RANK - plan.rank
    return tuple(1 if i < lead else -(-a.size_out // 2) for i, a in enumerate(plan.axes))


def _points(plan) -> int:
    return 3 ** plan.rank


def _split(plan) -> tuple[int, list[tuple[int, int, int, int]]]:
    """(canonical axis the tile rows of one sample are split along, the blocks ``(n_lo, n_hi, r_lo, r_hi)`` the
    copies, transforms and inverses run in): whole samples per block, or tile rows of one sample where a sample
    exceeds ``BLOCK_ELEMENTS`` or the samples are too few for the pool."""
    tiles = _tiles(plan)
    per_sample = _prod(tiles)
    c_all = plan.c_in * _prod(a.stride for a in plan.axes)
    points = _points(plan)
    lead = geo.MAX_RANK - plan.rank
    axis = lead if plan.rank > 1 else 2  # (1-D: a sample is one row, the blocks are whole samples)
    most = BLOCK_ELEMENTS // (points * c_all * per_sample)  # whole samples per task within the budget
    if plan.rank > 1 and tiles[axis] > 1 and (most == 0 or (plan.batch < MIN_TASKS and per_sample >= 2 * MIN_TILES)):
        row_tiles = per_sample // tiles[axis]
        rows = max(1, min(tiles[axis], BLOCK_ELEMENTS // (points * c_all * row_tiles)))
        wanted = -(-tiles[axis] // -(-MIN_TASKS // plan.batch))  # tile rows per task for MIN_TASKS tasks
        rows = min(rows, max(wanted, -(-MIN_TILES // row_tiles)))
        return axis, [(n, n + 1, r, min(tiles[axis], r + rows)) for n in range(plan.batch)
                      for r in range(0, tiles[axis], rows)]
    total = plan.batch * per_sample
    count = max(min(2, total // max(1, MIN_TILES // 2)), min(MIN_TASKS, total // MIN_TILES),
                -(-plan.batch // max(1, most)))
    nb = -(-plan.batch // max(1, min(plan.batch, count)))
    return axis, [(n, min(plan.batch, n + nb), 0, tiles[axis]) for n in range(0, plan.batch, nb)]


def estimate(plan, backward: bool = False, threads: int | None = None) -> float:
    """Estimated seconds on ``threads`` threads (the pool's by default): the GEMMs per point at the BLAS rate their
    sides allow (twice with the weight gradient), the passes of the kernels over their arrays at the per-element
    costs below, the BLAS calls."""
    threads = threads or max_threads()
    s = _terms.sizes(plan)
    phases = _prod(a.stride for a in plan.axes)
    cin_g = s.cin_g * phases
    points = _points(plan)
    tiles = _tiles(plan)
    total = plan.batch * _prod(tiles)
    flops = 2.0 * points * s.cout_g * cin_g * plan.groups * total
    gemm = _terms.gemm_time(flops, -(-total // 2), s.cout_g, cin_g, 1, s.scale)
    q = [1 if i < geo.MAX_RANK - plan.rank else 2 * t + 1 for i, t in enumerate(tiles)]
    packed = plan.batch * plan.c_in * phases * _prod(q)
    v = points * plan.c_in * phases * total
    m = points * plan.c_out * total
    u = points * plan.c_out * cin_g
    # (per element: ``_model.S2D_*``, from the profile; the dual's transform writes as many as the point products,
    # the weight gradient's point sums as many as U)
    work = (packed * _model.S2D_PACK_ELEMENT + v * _model.S2D_TRANSFORM_ELEMENT + m * _model.S2D_INVERSE_ELEMENT
            + u * _model.S2D_WEIGHT_ELEMENT)
    calls = 2 * points * plan.groups * _model.LAUNCH_GEMM + 4 * _model.LAUNCH_POOL
    if backward:
        gemm += _terms.gemm_time(flops, s.cout_g, -(-cin_g // 2), total, 1, s.scale)
        work += m * _model.S2D_INVERSE_ELEMENT + 2 * u * _model.S2D_WEIGHT_ELEMENT
        calls *= 2
    return (gemm + work) / threads + calls


def finite(plan, x5: np.ndarray, w5: np.ndarray, dual5: np.ndarray | None = None) -> bool:
    """Whether the transforms give the definition's finite result on these values: every value finite and no
    transformed value, product or sum able to overflow (the transforms at most double a magnitude per axis and
    add ``C_in * P`` products per point). Otherwise the caller runs an exact form."""
    limit = float(np.finfo(plan.dtype).max) / 2
    gain = 2.0 ** plan.rank
    terms = plan.c_in // plan.groups * _prod(a.stride for a in plan.axes) * gain
    v, u = gain * max_abs(x5), gain * max_abs(w5)
    if not (v <= limit and u <= limit and terms * v * u <= limit):
        return False
    if dual5 is None:
        return True
    d = gain * max_abs(dual5)
    count = plan.batch * _prod(_tiles(plan)) * gain
    return d <= limit and count * d * v <= limit


def _weight(plan, w5: np.ndarray) -> np.ndarray:
    """The transformed weight ``U`` (points, C_out, P * C_in_g): the phase weight ``ws`` (module docstring) through
    ``G`` per axis, its channels phase-major (``_kernels/s2d``), in blocks of output channels on the pool."""
    phases = _prod(a.stride for a in plan.axes)
    u = np.empty((_points(plan), plan.c_out, plan.c_in // plan.groups * phases), plan.dtype)
    stride, wino = plan.arrays("stride"), _wino(plan)
    step = max(1, -(-plan.c_out // MIN_TASKS))
    run_parallel(lambda part: [s2d_weight(w5, u, stride, wino, lo, min(plan.c_out, lo + step)) for lo in part],
                 list(range(0, plan.c_out, step)))
    return u


def _wino(plan) -> np.ndarray:
    """1 on the spatial axes (two taps, three points), 0 on the leading unit ones."""
    return np.array([0 if i < geo.MAX_RANK - plan.rank else 1 for i in range(geo.MAX_RANK)], np.int64)


def _weight_grad(plan, q: np.ndarray, grad_weight: np.ndarray) -> None:
    """``grad_weight`` from the point sums ``q`` (points, C_out, P * C_in_g, phase-major): ``G^T`` per axis, then
    the phase taps back to the kernel's (``k = j * s + p``), in blocks of output channels on the pool."""
    gw = grad_weight.reshape((plan.c_out, plan.c_in // plan.groups) + tuple(a.kernel for a in plan.axes))
    stride, wino = plan.arrays("stride"), _wino(plan)
    step = max(1, -(-plan.c_out // MIN_TASKS))
    run_parallel(lambda part: [s2d_weight_grad(q, gw, stride, wino, lo, min(plan.c_out, lo + step)) for lo in part],
                 list(range(0, plan.c_out, step)))


def run(plan, x5: np.ndarray, w5: np.ndarray, b: np.ndarray | None, y5: np.ndarray | None,
        dual5: np.ndarray | None = None, grad_weight: np.ndarray | None = None) -> None:
    """The forward convolution into ``y5`` (unless None) and, with ``dual5``, the weight gradient
    ``grad_weight[co, ci, k] = sum_{n, o} dual[n, co, o] * x_padded[n, ci, o * stride + k]`` (see
    :func:`fastdeconv._forward.run_conv`), on canonical 5-D arrays (``applies(plan)``, values ``finite``).

    Three passes on the worker pool: per block of samples (or of one sample's tile rows) the channels-last
    space-to-depth copy and its transform ``V`` (points, tiles, channels); per point and half of the tiles one
    GEMM ``V @ U^T`` per group (all of a point's tiles in two products: BLAS near its rate, each transformed
    weight read twice); per block the inverse into the output. With the dual: its transform per block, then per
    point and half of the input channels one GEMM ``(A dy)^T @ V`` over every tile (no partial sums), and ``G^T``
    into ``grad_weight``. The blocks and GEMMs depend on the layer only, and so do the bits.
    """
    dtype = plan.dtype
    g = plan.groups
    strides, start, wino = plan.arrays("stride"), plan.arrays("start"), _wino(plan)
    phases = _prod(a.stride for a in plan.axes)
    c_all = plan.c_in * phases
    cin_g, cout_g = c_all // g, plan.c_out // g
    tiles = _tiles(plan)
    points = _points(plan)
    axis, tasks = _split(plan)
    u = _weight(plan, w5)
    shapes = []  # per task: first tile, tiles, first column, columns, packed input shape
    col0 = 0
    for n_lo, n_hi, r_lo, r_hi in tasks:
        t_lo = np.zeros(3, np.int64)
        t_lo[axis] = r_lo
        t_here = np.array(tiles, np.int64)
        t_here[axis] = r_hi - r_lo
        q_here = (n_hi - n_lo,) + tuple(int(t) if w == 0 else 2 * int(t) + 1 for t, w in zip(t_here, wino))
        cols = (n_hi - n_lo) * int(np.prod(t_here))
        shapes.append((t_lo, t_here, col0, cols, q_here + (c_all,)))
        col0 += cols
    total = col0
    most_packed = max(_prod(sh[4]) for sh in shapes)
    v = np.empty((points, total, c_all), dtype)
    m = np.empty((points, total, plan.c_out), dtype)  # the products, then (backward) the dual's transform

    def transform(part):
        xs_buf = np.empty(most_packed, dtype)  # one per worker for all its blocks
        for (n_lo, _, _, _), (t_lo, _, c0, _, packed) in part:
            xs = xs_buf[:_prod(packed)].reshape(packed)
            s2d_pack(x5, xs, n_lo, 2 * t_lo, strides, start, plan.c_in // g)
            s2d_transform(xs, v, wino, c0)

    def products(part):
        for p, lo, hi in part:  # a block of tiles of one point
            for gi in range(g):
                np.matmul(v[p, lo:hi, gi * cin_g:(gi + 1) * cin_g], u[p, gi * cout_g:(gi + 1) * cout_g].T,
                          out=m[p, lo:hi, gi * cout_g:(gi + 1) * cout_g])

    def inverse(part):
        for (n_lo, n_hi, _, _), (t_lo, t_here, c0, _, _) in part:
            s2d_inverse(m, y5, n_lo, n_hi - n_lo, t_lo, t_here, wino, c0)

    def dual_transform(part):
        for (n_lo, n_hi, _, _), (t_lo, t_here, c0, _, _) in part:
            s2d_dual(dual5, m, n_lo, n_hi - n_lo, t_lo, t_here, wino, c0)

    def gradients(part):
        for p, lo, hi in part:  # a block of input channels of one point, summed over every tile
            for gi in range(g):
                np.matmul(m[p, :, gi * cout_g:(gi + 1) * cout_g].T, v[p, :, gi * cin_g + lo:gi * cin_g + hi],
                          out=q[p, gi * cout_g:(gi + 1) * cout_g, lo:hi])

    blocks = list(zip(tasks, shapes))
    run_parallel(transform, blocks)
    halves = -(-total // 2)  # two blocks of tiles per point: the pool's two threads share the points evenly
    if y5 is not None:
        run_parallel(products, [(p, lo, min(total, lo + halves)) for p in range(points) for lo in (0, halves)
                                if lo < total])
        run_parallel(inverse, blocks)
        if b is not None:
            y5 += b.reshape((1, -1, 1, 1, 1))
    if dual5 is not None:
        run_parallel(dual_transform, blocks)
        q = np.empty((points, plan.c_out, cin_g), dtype)
        half = -(-cin_g // 2)
        run_parallel(gradients, [(p, lo, min(cin_g, lo + half)) for p in range(points) for lo in (0, half)
                                 if lo < cin_g])
        _weight_grad(plan, q, grad_weight)
