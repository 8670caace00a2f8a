"""scatter-gemm: ``cols = W^T @ X`` on BLAS (the channel contraction) per chunk of samples and output channels,
then a parallel col2im (the numba kernels: ``_kernels/scatter_gemm.py``, which describes the scheme). Here its
chunk choice, scratch, pack and driver, which gather-gemm-cols shares (the same chunks and GEMMs).

Work is chunked over (sample block, output-channel block) so the scratch (``cols`` plus the packed input) of
all workers together stays within one output's size; workers claim chunks from a shared queue
(``run_parallel``)."""

from __future__ import annotations

from math import prod as _prod
from typing import NamedTuple

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo
from .._kernels.scatter_gemm import (
    WIDE_STRIDE,
    col2im,
    col2im_minor,
    gather_phases,
    pack_channels,
    pack_minor,
)
from .._runtime import run_parallel
from .._threads import max_threads
from . import Variant, _epilogue
from ._terms import gemm_applies, gemm_time, mem_time, same, sizes
from .gather_plane import axis_table

# Scratch target per chunk (elements): big enough for an efficient GEMM, small enough to stay in L3
# between the GEMM that writes it and the col2im that reads it.
_CHUNK_ELEMENTS = 1 << 21
# Sample blocks from which ``col2im_minor`` runs (its vectors are as long as the block: shorter ones do not pay
# for its plane buffer, longer ones beat ``col2im`` on small planes), and the most elements of its plane buffer
MINOR_SAMPLES = 8
MINOR_PLANE = 1 << 16
# (the chunk choice's estimate reads ``_model``'s fixed CHUNK_GEMM_RATE, CHUNK_GEMM_HALF, SLAB_DISCOUNT and
# CHUNK_CALL, never the profile: the chunks, hence the bits, depend on the shapes alone)


def applies(plan: geo.Plan) -> bool:
    return gemm_applies(plan) and chunks(plan) is not None


class Chunked(NamedTuple):
    """The terms scatter-gemm shares with gather-gemm-cols (same chunks, same GEMMs)."""

    gemm: float
    pack: float
    cols: int  # elements of all the chunks' cols
    workers: int
    calls: int
    slabs: int


def chunked(plan: geo.Plan, threads: int) -> Chunked:
    """GEMM (cout_g*K, n*P, cin_g) per chunk and slab, the input pack, the cols written (for a plan it applies
    to)."""
    s = sizes(plan)
    g = plan.groups
    n, cb, slab = chunks(plan)
    slabs = -(-plan.axes[slab_axis(plan)].size_in // max(1, slab))
    calls = g * -(-plan.batch // n) * -(-s.cout_g // cb)
    cols = plan.c_out * s.k * plan.batch * s.pix_in
    workers = min(threads, calls)  # workers take whole chunks, each with single-threaded BLAS
    gemm = g * gemm_time(2.0 * plan.macs / g, cb * s.k, n * s.pix_in // slabs, s.cin_g, 1, s.scale) / workers
    pack = mem_time(2 * s.x_elems * s.item, workers) if n > 1 else 0.0
    return Chunked(gemm, pack, cols, workers, calls, slabs)


def cost(plan: geo.Plan, threads: int) -> float:
    found = slab_parts(plan)
    if found is not None:
        return _parts_cost(plan, threads, found)
    c = chunked(plan, threads)
    n = chunks(plan)[0]
    # col2im set-ups: per channel, depth, chunk and slab
    set_ups = plan.c_out * plan.axes[0].size_out * -(-plan.batch // n) * c.slabs
    # (few pixels run pixels-major too, but their runs are a kernel row long: the tap-by-tap rate)
    wide = pixels_major(plan, n) and not few_pixels(plan, n)
    element = M.COL2IM_WIDE_ELEMENT if wide else M.COL2IM_ELEMENT
    col2im = (c.cols * element + set_ups * sizes(plan).k * M.COL2IM_PLANE_TAP) / c.workers
    return c.gemm + c.pack + col2im + c.calls * c.slabs * M.LAUNCH_GEMM / c.workers + M.LAUNCH_PARALLEL



def slab_axis(plan: geo.Plan) -> int:
    """The axis along which a sample too large for the memory rule is cut into slabs: the outermost with more
    than one input position, so that a slab is one contiguous range of the sample's pixels."""
    return next((axis for axis, a in enumerate(plan.axes) if a.size_in > 1), 2)


def minor(plan: geo.Plan, n: int) -> bool:
    """Whether chunks of ``n`` samples are packed sample-minor and summed by ``col2im_minor``."""
    return n >= MINOR_SAMPLES and n * _prod(a.size_out for a in plan.axes) <= MINOR_PLANE


def pixels_major(plan: geo.Plan, n: int) -> bool:
    """Whether scatter-gemm's chunks of ``n`` samples run the GEMM pixels-major and ``col2im`` adds pixel by
    pixel (``_add_wide``): a wide stride along the last axis, or few pixels (``few_pixels``); elements reached
    more than once, not sample-minor."""
    return (plan.axes[2].stride >= WIDE_STRIDE or few_pixels(plan, n)) and not exactly_once(plan) \
        and not minor(plan, n)


# Most pixels (samples x input pixels) of a chunk whose GEMM runs pixels-major, ``cols^T = X^T @ W``, in both
# forms: the weight is then BLAS's right-hand operand read row by row as it is laid out, where as the transposed
# left-hand one its packing reads it across rows. With few pixels the weight's packing is most of the GEMM
# (batch-1 weight-heavy layers: 512 -> 256 channels at 4x4, 1.2x; 1024 -> 512, 1.55x on one core); from a few
# hundred pixels on the two orientations run at the same rate.
PIXELS_MAJOR_PIXELS = 64


def few_pixels(plan: geo.Plan, n: int) -> bool:
    """Whether chunks of ``n`` whole samples have at most ``PIXELS_MAJOR_PIXELS`` pixels (both forms then run their
    GEMM pixels-major, so gather-gemm-cols keeps scatter-gemm's bits); not where every output receives one term
    (``col2im`` writes those from channel-major columns) or samples are packed sample-minor."""
    return n * _prod(a.size_in for a in plan.axes) <= PIXELS_MAJOR_PIXELS and not exactly_once(plan) \
        and not minor(plan, n)


def _scratch(plan: geo.Plan, n: int, cb: int, slab: int) -> int:
    """Elements one worker holds for chunks of ``n`` samples x ``cb`` channels, cut in slabs of ``slab``
    positions along ``slab_axis``: ``cols``, plus the packed input of a sample block (and ``col2im_minor``'s
    plane buffer)."""
    k = _prod(a.kernel for a in plan.axes)
    pix = _prod(a.size_in for a in plan.axes)
    size = plan.axes[slab_axis(plan)].size_in
    per_slab = pix // size if size else 0
    plane = n * _prod(a.size_out for a in plan.axes) if minor(plan, n) else 0
    return cb * k * n * per_slab * slab + ((plan.c_in // plan.groups) * n * pix if n > 1 else 0) + plane


@memo(256)
def chunks(plan: geo.Plan) -> tuple[int, int, int] | None:
    """(samples, output channels, slab) per chunk: scratch <= one output, fixed by shape only.

    ``slab`` is the number of positions along ``slab_axis`` one GEMM covers: the whole axis, or (one sample
    per chunk) fewer, the chunk then running its slabs one after another. For each channel block (halving from
    all of them) the most whole samples within the budget and the cache target (in blocks of even size), or
    else one sample's largest slab; among those, the least estimated time. None when not even one slab of one
    channel fits.
    """
    g = plan.groups
    cout_g = plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    size = plan.axes[slab_axis(plan)].size_in
    per_slab = _prod(a.size_in for a in plan.axes) // size if size else 0
    out_size = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    budget = max(out_size // max_threads(), 1)  # every worker has its own scratch

    def fit(cb):
        """Most samples per chunk within the budget and the cache target (at least one), or one sample's
        largest slab within them; None when nothing fits."""
        whole = _scratch(plan, 1, cb, size)
        if whole <= budget:
            n = 1
            while n < plan.batch and _scratch(plan, n + 1, cb, size) <= min(budget, max(_CHUNK_ELEMENTS, whole)):
                n += 1
            return -(-plan.batch // -(-plan.batch // n)), size  # blocks of even size (64 = 4 x 16, not 3 x 21 + 1)
        one = _scratch(plan, 1, cb, 1)
        slab = min(budget, max(_CHUNK_ELEMENTS, one)) // one
        return (1, slab) if slab >= 1 else None

    macs = plan.batch * plan.c_in * cout_g * k * _prod(a.size_in for a in plan.axes)
    best, cb = None, max(cout_g, 1)
    while True:
        found = fit(cb)
        if found is not None:
            # the least estimated time: GEMMs at the BLAS efficiency of their (cb * K) x (n * P) sides (slabs
            # discounted: their adds into the output come slab after slab), one call per chunk and slab, the
            # chunks shared by the workers (a sample's slabs run in turn). A sample's slabs with many channels
            # can beat whole samples one channel at a time: a 3x3 stride-1 layer of 32 channels gets 144-row
            # GEMMs instead of 9-row ones.
            n, slab = found
            m_side, n_side = cb * k, n * per_slab * slab
            eff = (m_side / (m_side + M.CHUNK_GEMM_HALF[0]) * n_side / (n_side + M.CHUNK_GEMM_HALF[1])
                   * (1.0 if slab == size else M.SLAB_DISCOUNT))
            count = g * -(-plan.batch // n) * -(-cout_g // cb)
            calls = count * -(-size // slab) if size else count
            seconds = (2.0 * macs / (M.CHUNK_GEMM_RATE * eff) + calls * M.CHUNK_CALL) / min(count, max_threads())
            key = (-round(seconds, 6), -count)
            if best is None or key > best[0]:
                best = (key, n, cb, slab)
        if cb == 1:
            break
        cb = -(-cb // 2)
    return None if best is None else best[1:]


def scratch_elements(plan: geo.Plan) -> int:
    """Largest scratch (elements) one call allocates (all workers together); 0 when the variant does not fit."""
    found = chunks(plan)
    return 0 if found is None else max_threads() * _scratch(plan, *found)


class Parts(NamedTuple):
    """A one-chunk sample's slabs split among the workers (``slab_parts``)."""

    ranges: tuple[tuple[int, int], ...]  # per part, its input positions [lo, hi) along ``slab_axis``
    slab: int                            # positions per GEMM within a part
    buffered: tuple[int, ...]            # per part, how many of its first slabs go to its buffer
    rows: tuple[tuple[int, int], ...]    # per part, the output positions [lo, hi) its buffer holds
    private: int                         # elements of all the buffers


def slab_parts(plan: geo.Plan) -> Parts | None:
    """How a call whose single chunk is one sample cut in slabs (a batch-1 layer of many input channels into
    few: super-resolution's reconstruction) spreads it over the workers, or None for every other plan (their
    chunks already do, or there is one worker).

    The sample's input positions along ``slab_axis`` are cut into ``max_threads()`` equal ranges (by shape and
    pool size alone: the bits do not move with the thread count), each a part whose slabs run in turn on one
    worker, adding into the output (set to the bias first). Only outputs that two parts reach could be written
    by two workers at once: a part's first slabs, those reaching the previous part's outputs, add into a
    small zeroed buffer of the outputs they reach instead, added to the output once every part is done, in
    part order. When every output element receives exactly one term (``exactly_once``) the parts' outputs are
    disjoint and no slab is buffered. The buffers and the parts' columns together keep the memory rule; None
    when they cannot."""
    return _slab_parts(plan, chunks(plan), max_threads())


def _reach(plan: geo.Plan, axis: int, lo: int, hi: int) -> tuple[int, int]:
    """The output positions [first, last + 1) along ``axis`` that inputs [lo, hi) reach (empty: (x, x))."""
    a = plan.axes[axis]
    out_lo, out_hi = a.size_out, 0
    for off, t_lo, t_hi in geometry_arrays(plan)[3][axis][:a.kernel]:
        i_lo, i_hi = max(lo, int(t_lo)), min(hi, int(t_hi))
        if i_lo < i_hi:
            out_lo, out_hi = min(out_lo, i_lo * a.stride + int(off)), max(out_hi, (i_hi - 1) * a.stride + int(off) + 1)
    return out_lo, max(out_lo, out_hi)


@memo(256)
def _slab_parts(plan: geo.Plan, found, workers: int) -> Parts | None:
    if found is None or workers < 2:
        return None
    n, cb, _slab = found
    axis = slab_axis(plan)
    size = plan.axes[axis].size_in
    if (plan.groups * -(-plan.batch // n) * -(-(plan.c_out // plan.groups) // cb) != 1 or n != 1 or size < 2
            or pixels_major(plan, 1)):
        return None
    count = min(workers, size)
    edges = [size * q // count for q in range(count + 1)]
    ranges = tuple((edges[q], edges[q + 1]) for q in range(count))
    reach = [_reach(plan, axis, lo, hi) for lo, hi in ranges]
    out_size = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    per_out = out_size // plan.axes[axis].size_out
    once = exactly_once(plan)
    one = _scratch(plan, 1, cb, 1)
    a = plan.axes[axis]
    lowest = min(int(off) for off, _lo, _hi in geometry_arrays(plan)[3][axis][:a.kernel])  # the first tap's offset

    # a slab from p reaches no output before p * stride + lowest: those from ``ends[q]`` on, none of part q - 1's
    ends = [0] + [max(lo_in, min(hi_in, -(-(reach[q - 1][1] - lowest) // a.stride)))
                  for q, (lo_in, hi_in) in enumerate(ranges) if q]
    if not once and any(ends[q] - ranges[q][0] > MAX_OVERLAP for q in range(1, count)):
        return None

    def buffers(slab: int):
        """(buffered slabs, buffer rows) per part for slabs of ``slab`` positions."""
        buffered, rows = [0], [(0, 0)]
        for q in range(1, count):
            lo_in, hi_in = ranges[q]
            first = [] if once else [_reach(plan, axis, p, min(hi_in, p + slab)) for p in range(lo_in, ends[q], slab)]
            while first and not (first[-1][0] < first[-1][1] and first[-1][0] < reach[q - 1][1]):
                first.pop()
            buffered.append(len(first))
            rows.append((min(r[0] for r in first), max(r[1] for r in first)) if first else (0, 0))
        return buffered, rows

    def fits(slab: int):
        found = buffers(slab)
        private = sum(hi - lo for lo, hi in found[1]) * per_out
        return (found, private) if count * one * slab + private <= out_size else None

    # the largest slab that fits (fitting is monotone in the slab: more columns, more buffered rows), by bisection
    lo, hi = 0, min(out_size // count, max(_CHUNK_ELEMENTS, one)) // one
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid) is not None:
            lo = mid
        else:
            hi = mid - 1
    if lo < 1:
        return None
    (buffered, rows), private = fits(lo)
    return Parts(ranges, lo, tuple(buffered), tuple(rows), private)


# Most input positions of a part that may reach the previous part's outputs (a huge dilation's kernel reaches
# far): beyond them, no parts
MAX_OVERLAP = 4096


def _parts_cost(plan: geo.Plan, threads: int, parts: Parts) -> float:
    """``cost`` of a call run as ``slab_parts``: the parts' GEMMs and col2im shared by the workers, then the
    buffers' adds into the output."""
    s = sizes(plan)
    axis = slab_axis(plan)
    per_slab = s.pix_in // plan.axes[axis].size_in
    count = len(parts.ranges)
    workers = min(threads, count)
    calls = sum(-(-(hi - lo) // parts.slab) for lo, hi in parts.ranges)
    gemm = gemm_time(2.0 * plan.macs, plan.c_out * s.k, per_slab * parts.slab, s.cin_g, 1, s.scale)
    set_ups = plan.c_out * plan.axes[0].size_out * calls
    col2im = plan.c_out * s.k * s.pix_in * M.COL2IM_ELEMENT + set_ups * s.k * M.COL2IM_PLANE_TAP
    balance = -(-count // workers) * workers / count
    fill = 0 if exactly_once(plan) else s.y_elems  # the output set to the bias first
    # per slab a matmul and a col2im call from the worker's loop (their boxes are made once per plan)
    return ((gemm + col2im + calls * 2 * M.LAUNCH_SERIAL) * balance / workers
            + (parts.private * 2 + fill) * M.COL2IM_ELEMENT + M.LAUNCH_PARALLEL)


def scatter_scratch(plan: geo.Plan) -> int:
    """scatter-gemm's scratch: ``scratch_elements``, or that of ``slab_parts``' parts and buffers."""
    parts = slab_parts(plan)
    if parts is None:
        return scratch_elements(plan)
    return len(parts.ranges) * _scratch(plan, 1, plan.c_out, parts.slab) + parts.private


def pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """The weight an operator keeps for ``scatter-gemm`` and ``gather-gemm-cols``: the weight as it is, read
    through the same transposed view (groups, C_out_g x taps, C_in_g) as a one-off call.

    (A contiguous transposed copy made the large GEMMs a few percent faster, but BLAS's small-matrix kernels
    add a transposed and a contiguous operand in different orders: an operator must give a one-off call's
    bits.)
    """
    return w5


def _transposed(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """The weight as (groups, C_out_g x taps, C_in_g): a view of the C-contiguous weight (strided rows)."""
    return w5.reshape(plan.groups, plan.c_in // plan.groups, -1).transpose(0, 2, 1)


def scatter_gemm(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Transposed convolution, scatter form with a BLAS channel contraction, into ``y5`` (overwritten).

    ``w5``: the weight (C_in, C_out_g, kd, kh, kw), or an operator's :func:`pack` of it.

    The chunks (group, sample block, channel block) are split among the workers; each runs pack, GEMM and
    col2im on its own chunks (slab by slab when a sample is cut) with single-threaded BLAS, so the threads
    meet only once, at the end. (Layers without channels never get here: the dispatcher writes their bias.)
    """
    parts = slab_parts(plan)
    if parts is None:
        _run("scatter", plan, x5, w5, bias, y5)
    else:
        _run_parts(plan, parts, x5, w5, bias, y5)


@memo(256)
def _slab_boxes(plan: geo.Plan, slab: int, lo: int, hi: int) -> tuple:
    """Per slab of ``slab`` positions of ``[lo, hi)`` along ``slab_axis`` (clipped to the input): (first position,
    last + 1, the box of input positions ``col2im`` reads), made once per plan (a box costs more than a small
    slab's kernel call)."""
    in_shape = geometry_arrays(plan)[0]
    axis = slab_axis(plan)
    size = int(in_shape[axis])
    boxes = []
    for p in range(lo, hi, max(slab, 1)):
        box = np.stack([np.zeros(3, np.int64), in_shape], axis=1)
        box[axis] = (p, min(size, hi, p + slab))
        boxes.append((p, int(box[axis, 1]), box))
    return tuple(boxes)


def _run_parts(plan: geo.Plan, parts: Parts, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray,
               y5: np.ndarray) -> None:
    """``scatter_gemm`` as ``slab_parts``: the output set to the bias (unless each output receives one term),
    then part ``q``'s slabs in turn, its first ``parts.buffered[q]`` into its zeroed buffer (the taps' offsets
    along ``slab_axis`` moved by the buffer's first position), the rest into the output; then the buffers added
    in part order."""
    k = _prod(a.kernel for a in plan.axes)
    c_out = plan.c_out
    pix = _prod(a.size_in for a in plan.axes)
    in_shape, kern, stride, taps = geometry_arrays(plan)
    axis = slab_axis(plan)
    per_slab = pix // int(in_shape[axis])
    once = exactly_once(plan)
    xm = x5[0].reshape(plan.c_in, pix)
    wm_t = (w5 if w5.ndim == 3 else _transposed(plan, w5))[0]  # (c_out * k, c_in)
    zeros = np.zeros(c_out, plan.dtype)
    buffers: list = [None] * len(parts.ranges)
    boxes = [_slab_boxes(plan, parts.slab, lo, hi) for lo, hi in parts.ranges]
    if not once:
        y5[0] = bias.reshape(c_out, 1, 1, 1)

    def work(part):
        cols_buf = np.empty(c_out * k * per_slab * parts.slab, plan.dtype)
        for q in part:
            lo_in, hi_in = parts.ranges[q]
            buf_lo, buf_hi = parts.rows[q]
            if parts.buffered[q]:
                shape = list(y5.shape)
                shape[2 + axis] = buf_hi - buf_lo
                buffers[q] = np.empty(shape, plan.dtype)
                moved = taps.copy()
                moved[axis, :, 0] -= buf_lo
            for i, (p_lo, p_hi, box) in enumerate(boxes[q]):
                cols = cols_buf[:c_out * k * (p_hi - p_lo) * per_slab].reshape(c_out * k, (p_hi - p_lo) * per_slab)
                np.matmul(wm_t, xm[:, p_lo * per_slab:p_hi * per_slab], out=cols)
                if i < parts.buffered[q]:
                    col2im(cols, buffers[q], zeros, (0, 0, 1, c_out), box, kern, stride, moved, (False, i == 0, False))
                else:
                    col2im(cols, y5, bias, (0, 0, 1, c_out), box, kern, stride, taps, (once, False, False))

    run_parallel(work, list(range(len(parts.ranges))))
    for q, buf in enumerate(buffers):
        if buf is not None:
            index = [0, slice(None), slice(None), slice(None), slice(None)]
            index[2 + axis] = slice(*parts.rows[q])
            y5[tuple(index)] += buf[0]
    ep = _epilogue.args(plan)
    if ep is not None:
        _epilogue.box(y5, ep, (0, 1), (0, c_out))


def gather_cols(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Transposed convolution, gather form on the same chunks and GEMMs as :func:`scatter_gemm`, into ``y5``.

    After each chunk's GEMM every output element of its samples and channels sums, in a register, the
    ``cols`` entries of the (pixel, tap) pairs that reach it, by output phase, and is stored once
    (``gather_phases``) instead of receiving them one tap at a time. Weight-heavy layers, whose phase weights
    leave ``gather-gemm`` only thin GEMMs under the memory rule, keep scatter-gemm's wide ones; a sample cut
    in slabs adds each slab's sums into the partial sums of the one before.
    """
    _run("gather", plan, x5, w5, bias, y5)


def _run(form: str, plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    pix = _prod(a.size_in for a in plan.axes)
    # (a plan breaking the memory rule is never chosen; called directly, it runs with the smallest scratch)
    n_chunk, c_chunk, slab = chunks(plan) or (1, 1, 1)
    in_shape, kern, stride, taps = geometry_arrays(plan)
    axis = slab_axis(plan)
    size = int(in_shape[axis])
    per_slab = pix // size if size else 0
    once = exactly_once(plan)
    gather = form == "gather"
    phases = phase_table(plan) if gather else None
    # an operator's pack (its row blocks contiguous), or the weight as it is (the same blocks, strided)
    wt = w5 if w5.ndim == 3 else _transposed(plan, w5)
    tasks = [(gi, n0, min(n_chunk, plan.batch - n0), c0, min(c_chunk, cout_g - c0))
             for gi in range(g) for n0 in range(0, plan.batch, n_chunk) for c0 in range(0, cout_g, c_chunk)]
    wide = {n: few_pixels(plan, n) if gather else pixels_major(plan, n) for n in {task[2] for task in tasks}}
    # per slab: (first pixel, last pixel + 1, box of input positions)
    boxes = [(p0 * per_slab, p1 * per_slab, box) for p0, p1, box in _slab_boxes(plan, slab, 0, max(size, 1))]
    out_vol = _prod(a.size_out for a in plan.axes)
    ep = _epilogue.args(plan)

    def work(part):
        cols_buf = np.empty(c_chunk * k * n_chunk * per_slab * slab, plan.dtype)
        pack_buf = np.empty(cin_g * n_chunk * pix if n_chunk > 1 else 0, plan.dtype)
        plane = np.empty(n_chunk * out_vol if minor(plan, n_chunk) and not gather else 0, plan.dtype)
        acc = np.empty(int(phases[2, :, 0].max()) if gather else 0, plan.dtype)  # one phase row
        packed = None
        for gi, n0, n, c0, cb in part:
            sample_minor = minor(plan, n) and not gather
            by_pixel = wide[n]  # col2im adds pixel by pixel
            if n == 1:
                xm = x5[n0, gi * cin_g:(gi + 1) * cin_g].reshape(cin_g, pix)
            else:
                xm = pack_buf[:cin_g * n * pix].reshape(cin_g, n * pix)
                if packed != (gi, n0):
                    (pack_minor if sample_minor else pack_channels)(x5, n0, n, gi * cin_g, cin_g, xm)
                    packed = (gi, n0)
            wm_t = wt[gi][c0 * k:(c0 + cb) * k]  # (cb * k, cin_g)
            for p0, p1, box in boxes:  # one slab (the whole input unless a sample is cut)
                xs = xm if n > 1 else xm[:, p0:p1]
                if by_pixel:  # a pixel's taps contiguous in ``cols`` (``_add_wide``)
                    cols = cols_buf[:cb * k * n * (p1 - p0)].reshape(n * (p1 - p0), cb * k)
                    np.matmul(xs.T, wm_t.T, out=cols)
                else:
                    cols = cols_buf[:cb * k * n * (p1 - p0)].reshape(cb * k, n * (p1 - p0))
                    np.matmul(wm_t, xs, out=cols)
                block = (n0, gi * cout_g + c0, n, cb)  # the output block (Python ints: int64 in the kernels)
                if gather:  # output-driven
                    gather_phases(cols, y5, bias, block, box, kern, stride, phases, (p0 == 0, by_pixel), acc)
                elif sample_minor:  # (whole samples: no slabs)
                    col2im_minor(cols, y5, bias, block, in_shape, kern, stride, taps, once, plane)
                else:
                    col2im(cols, y5, bias, block, box, kern, stride, taps, (once, p0 == 0, by_pixel))
            if ep is not None:  # the chunk's samples and channels are final: the epilogue while they are in cache
                _epilogue.box(y5, ep, (n0, n0 + n), (gi * cout_g + c0, gi * cout_g + c0 + cb))

    run_parallel(work, tasks)


@memo(256)
def phase_table(plan: geo.Plan) -> np.ndarray:
    """``table[axis, r] = (outputs, taps, then (tap, base) per tap in tap order)`` of output phase ``r`` of each
    axis: ``gather_plane.axis_table``'s rows (the ``min(stride, size_out)`` phases with outputs), the three axes in one
    array, for ``gather_phases``."""
    rows = [axis_table(a)[0] for a in plan.axes]
    table = np.zeros((3, max(t.shape[0] for t in rows), max(t.shape[1] for t in rows)), np.int64)
    for axis, t in enumerate(rows):
        table[axis, :t.shape[0], :t.shape[1]] = t
    return table


@memo(256)
def exactly_once(plan: geo.Plan) -> bool:
    """Whether every output element receives exactly one term (e.g. kernel == stride, no output padding: U-Net
    up-convolutions), so that ``col2im`` can write each element once.

    Per axis: every phase with outputs has taps, and in each phase the inputs of its taps, ``m + base`` in
    ``[0, size_in)``, tile its outputs ``m < count`` without gap or overlap (from the taps alone: no array of
    the output's length)."""
    for a in plan.axes:
        phases = a.tap_phases()
        if len(phases) != a.phase_count:  # some phase with outputs gets no term
            return False
        for _r, count, _taps, bases in phases:
            spans = sorted((max(0, -b), min(count, a.size_in - b)) for b in bases)
            spans = [(lo, hi) for lo, hi in spans if hi > lo]
            reached = 0
            for lo, hi in spans:
                if lo != reached:  # a gap (lo > reached) or an overlap (lo < reached)
                    return False
                reached = hi
            if reached != count:
                return False
    return True


VARIANT = Variant(
    name="scatter-gemm", form="scatter", applies=applies, cost=cost, scratch=scatter_scratch, pack=pack,
    run=scatter_gemm, serial=lambda plan: False, reason="channel contraction on BLAS",
    kernels=lambda: ((col2im, col2im_minor),), exact=True, call_pack=same,
)


@memo(256)
def geometry_arrays(plan) -> tuple[np.ndarray, ...]:
    """(input sizes, kernel, stride, taps) for ``col2im``, cached per plan (a ``_geometry.Plan``: only its axes are
    read).

    ``taps[axis, k] = (offset, lo, hi)``: tap ``k`` sends input ``i`` to output ``i * stride + offset``, inside
    the output exactly for ``lo <= i < hi``. The arrays stay writeable (numba compiles read-only arrays
    separately); the kernels only read them.
    """
    k_max = max(a.kernel for a in plan.axes)
    taps = np.zeros((3, k_max, 3), np.int64)
    for axis, a in enumerate(plan.axes):
        for k in range(a.kernel):
            off = k * a.dilation - a.start
            lo = max(0, -(off // a.stride))
            hi = min(a.size_in, -(-(a.size_out - off) // a.stride))
            taps[axis, k] = (off, lo, max(lo, hi))
    return (np.array([a.size_in for a in plan.axes], np.int64), np.array([a.kernel for a in plan.axes], np.int64),
            np.array([a.stride for a in plan.axes], np.int64), taps)
