"""A strided forward convolution as a stride-1 one on its space-to-depth input, run with Winograd F(2, 2).

Along an axis with stride ``s`` and kernel ``k = 2 s`` (no dilation), tap ``j * s + p`` reads the padded input at
``o * s + j * s + p``: element ``o + j`` of its phase ``p`` (every ``s``-th element from ``p``). With the phases as
channels, ``xs[n, ci * P + p, q] = x_padded[n, ci, q * s + p]`` (``P`` the product of the strides, ``p`` the phase
index over the axes, phase-minor so that a group's channels stay together) and the weight
``ws[co, ci * P + p, j] = w[co, ci, j * s + p]``, the strided correlation is a stride-1 valid one with two taps per
axis on ``C_in * P`` channels: the DCGAN blocks (kernel 4, stride 2), super-resolution and 3-D up-convolutions'
adjoints. (A stride-1 axis with kernel 2 is the case ``s = 1``.)

Two taps per axis are Winograd's F(2, 2): per axis three transform points for two outputs instead of four
products, in 2-D 9 instead of 16 (1.78x fewer multiplications), in 3-D 27 instead of 64. Its transforms hold
only 0 and +-1 (one addition per point and axis), so the channel contraction, one large GEMM per point over the
tiles of a block of samples, is nearly all of the work. The weight gradient of the same correlation is F(2, 2)
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

# Elements of one task's transformed input (points x channels x tiles): the blocks of samples (or tile rows of
# one sample) are cut to stay within it, and into at least ``MIN_TASKS`` tasks where the layer allows, so that
# every thread has work; properties of the layer, never of the thread count, so that the bits stay.
BLOCK_ELEMENTS = 1 << 21
MIN_TASKS = 8
# Tiles of one GEMM at least where the layer has them (BLAS runs thin products at a fraction of its rate), but
# two tasks of half as many where that gives the pool work for two threads.
MIN_TILES = 256
# Seconds per element on one core, cache-cold (fitted to the DCGAN and super-resolution layers' calls): the packed
# input (read across x's channel planes), V, the point products (read by the inverse; the dual's transform writes
# as many), U (read the weight, write its points) and a weight gradient's partial sums (written or added, summed)
PACK_ELEMENT = 1.2e-9
TRANSFORM_ELEMENT = 1.0e-9
INVERSE_ELEMENT = 1.0e-9
WEIGHT_ELEMENT = 0.8e-9
PARTIAL_ELEMENT = 0.5e-9
# Partial weight gradients (one per run of consecutive tasks): at most this many elements in all.
PARTIAL_ELEMENTS = 1 << 23


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
    """Whether the layer has work for more than one task (a layer whose tiles make one GEMM would run on one thread
    where the GEMM form splits its columns over the pool)."""
    return applies(plan) and len(_split(plan)[1]) > 1


def _tiles(plan) -> tuple[int, int, int]:
    """Tiles per canonical axis (1 on the leading unit axes): two outputs per tile."""
    lead = geo.MAX_RANK - plan.rank
    return tuple(1 if i < lead else -(-a.size_out // 2) for i, a in enumerate(plan.axes))


def _points(plan) -> int:
    return 3 ** plan.rank


def _split(plan) -> tuple[int, list[tuple[int, int, int, int]]]:
    """(canonical axis the tile rows of one sample are split along, tasks ``(n_lo, n_hi, r_lo, r_hi)``): whole
    samples per task when a sample's tiles are enough for one GEMM, else tile rows of one sample."""
    tiles = _tiles(plan)
    per_sample = _prod(tiles)
    c_all = plan.c_in * _prod(a.stride for a in plan.axes)
    points = _points(plan)
    lead = geo.MAX_RANK - plan.rank
    axis = lead if plan.rank > 1 else 2  # (1-D: the rows cannot be split; im2col writes whole rows)
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


def estimate(plan, backward: bool = False) -> float:
    """Estimated seconds on the pool: the GEMMs per point at the BLAS rate their sides allow (twice with the weight
    gradient), the passes of the kernels over their arrays at the per-element costs below, the BLAS calls."""
    threads = max_threads()
    s = _terms.sizes(plan)
    phases = _prod(a.stride for a in plan.axes)
    cin_g = s.cin_g * phases
    points = _points(plan)
    _, tasks = _split(plan)
    tiles = _tiles(plan)
    total = plan.batch * _prod(tiles)
    block = max(1, total // len(tasks))
    flops = 2.0 * points * s.cout_g * cin_g * plan.groups * total
    gemm = _terms.gemm_time(flops, block, s.cout_g, cin_g, 1, s.scale)
    q = [1 if i < geo.MAX_RANK - plan.rank else 2 * t + 1 for i, t in enumerate(tiles)]
    packed = plan.batch * plan.c_in * phases * _prod(q)
    v = points * plan.c_in * phases * total
    m = points * plan.c_out * total
    u = points * plan.c_out * cin_g
    work = packed * PACK_ELEMENT + v * TRANSFORM_ELEMENT + m * INVERSE_ELEMENT + u * WEIGHT_ELEMENT
    calls = len(tasks) * points * plan.groups * _model.LAUNCH_GEMM
    if backward:
        gemm += _terms.gemm_time(flops, s.cout_g, cin_g, block, 1, s.scale)
        runs = _runs(len(tasks), u)
        work += m * INVERSE_ELEMENT + (len(tasks) + runs) * u * PARTIAL_ELEMENT + u * WEIGHT_ELEMENT
        calls *= 2
        threads = min(threads, runs)
    return (gemm + work + calls) / min(threads, len(tasks)) + 2 * _model.LAUNCH_POOL


def _runs(tasks: int, partial: int) -> int:
    """Runs of consecutive tasks, each with its partial weight gradient (``partial`` elements): within
    ``PARTIAL_ELEMENTS`` in all, but two where there are two tasks (so that the pool has work for two threads)."""
    return max(min(2, tasks), min(MIN_TASKS, tasks, PARTIAL_ELEMENTS // max(1, partial)))


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

    Per task (a block of samples or of one sample's tile rows): the space-to-depth copy of its input (the GEMM
    form's compiled im2col, with the strides as kernel and stride), ``V``, then per point and group one GEMM
    ``U @ V`` (and ``(A dy) @ V^T`` into the task's run's partial sum), the inverse into the output. Tasks are
    grouped in a fixed number of runs of consecutive tasks whose partial weight gradients are added in run order:
    the bits depend on the layer only.
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
    if dual5 is None:
        runs = [[t] for t in tasks]
    else:
        n_runs = _runs(len(tasks), points * plan.c_out * cin_g)
        step = -(-len(tasks) // n_runs)
        runs = [tasks[i:i + step] for i in range(0, len(tasks), step)]
        partials = np.empty((len(runs), points, plan.c_out, cin_g), dtype)

    def work(claimed):
        for k, run_tasks in claimed:
            part = None if dual5 is None else partials[k]
            prod_buf = None if dual5 is None else np.empty((cout_g, cin_g), dtype)
            first = True
            for n_lo, n_hi, r_lo, r_hi in run_tasks:
                t_lo = np.zeros(3, np.int64)
                t_lo[axis] = r_lo
                t_here = np.array(tiles, np.int64)
                t_here[axis] = r_hi - r_lo
                cols = (n_hi - n_lo) * int(np.prod(t_here))
                q_here = (n_hi - n_lo,) + tuple(int(t) if w == 0 else 2 * int(t) + 1 for t, w in zip(t_here, wino))
                xs = np.empty(q_here + (c_all,), dtype)
                s2d_pack(x5, xs, n_lo, 2 * t_lo, strides, start, plan.c_in // g)
                v = np.empty((points, cols, c_all), dtype)
                s2d_transform(xs, v, wino)
                del xs
                if y5 is not None:
                    m = np.empty((points, cols, plan.c_out), dtype)
                    for p in range(points):
                        for gi in range(g):
                            np.matmul(v[p, :, gi * cin_g:(gi + 1) * cin_g], u[p, gi * cout_g:(gi + 1) * cout_g].T,
                                      out=m[p, :, gi * cout_g:(gi + 1) * cout_g])
                    s2d_inverse(m, y5, n_lo, t_lo, t_here, wino)
                if part is not None:
                    a = np.empty((points, cols, plan.c_out), dtype)
                    s2d_dual(dual5, a, n_lo, t_lo, t_here, wino)
                    for p in range(points):
                        for gi in range(g):
                            dst = part[p, gi * cout_g:(gi + 1) * cout_g]
                            ops = (a[p, :, gi * cout_g:(gi + 1) * cout_g].T, v[p, :, gi * cin_g:(gi + 1) * cin_g])
                            if first:  # the run's first task writes its partial, the others add to it
                                np.matmul(*ops, out=dst)
                            else:
                                np.matmul(*ops, out=prod_buf)
                                dst += prod_buf
                first = False

    run_parallel(work, list(enumerate(runs)))
    if y5 is not None and b is not None:
        y5 += b.reshape((1, -1, 1, 1, 1))
    if dual5 is not None:
        total = partials[0]
        for k in range(1, len(runs)):
            total += partials[k]
        _weight_grad(plan, total, grad_weight)
