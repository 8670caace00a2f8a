"""The channels-last variants: x (N, D, H, W, C_in) and y (N, oD, oH, oW, C_out), the weight in its own layout.

``gather-gemm-nhwc`` computes channels-last data directly (XNNPACK's subconvolution IGEMM is the model): per task
(a run of whole samples, or one sample's block of output positions along its outermost axis, the input positions
it needs recomputed at the block's edges) one GEMM ``cols = X @ W``, X the task's input pixels x C_in_g (channels-
last, each pixel's channels one contiguous row: a strided view, no copy), W the weight re-laid out (C_in_g, K x
C_out_g) tap-major; then every output pixel sums the rows of its (pixel, tap) pairs straight into its contiguous
C_out_g run of the output, adds the bias and applies the epilogue (``_kernels/nhwc.py``).

``gather-direct-nhwc`` needs no scratch and applies to every plan: the channels-last kernel of small and
channel-poor layers, and of those where ``gather-gemm-nhwc``'s ``cols`` would break the memory rule (one output
position whose input rows' ``cols`` exceed it). Where a form with no channels-last kernel is requested
(``scatter``, ``zerofill``), a clearly named transposing route runs: ``transpose-<variant>`` transposes x to
channels-first, runs that channels-first variant (with the epilogue) and transposes the result back.

A layer of one output channel needs neither: its channels-last output is the channels-first one, and the
channels-first GEMM variants that read x only as their GEMM's operand read channels-last x in place
(``<variant>-nhwc``, :func:`reading_in_place`).
"""

from __future__ import annotations

import dataclasses
from math import prod as _prod

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo
from .._kernels.nhwc import nhwc_direct, nhwc_gather
from .._model import DIRECT_ROW_HALF, SERIAL_WORK
from .._runtime import run_parallel
from .._tasks import run_tasks
from .._threads import max_threads
from . import Variant, _epilogue
from ._terms import gemm_applies, gemm_time, sizes, weight_plan
from .gather_plane import axis_table

# Target ``cols`` block (elements) per task: within one core's L2, so that the rows the GEMM writes are in cache
# when the gather reads them.
_CHUNK_ELEMENTS = 1 << 19


def cut_axis(plan: geo.Plan) -> int:
    """The axis a sample is cut along: the outermost with more than one output position (its input block is then
    one contiguous run of pixels)."""
    return next((axis for axis, a in enumerate(plan.axes) if a.size_out > 1), 2)


def _input_range(a: geo.Axis, o0: int, o1: int) -> tuple[int, int]:
    """Input positions ``[i0, i1)`` whose footprint reaches outputs ``[o0, o1)`` along axis ``a``."""
    lo, hi = a.size_in, 0
    for k in range(a.kernel):
        off = k * a.dilation - a.start
        first = max(0, -(-(o0 - off) // a.stride))
        last = min(a.size_in, -(-(o1 - off) // a.stride))
        if first < last:
            lo, hi = min(lo, first), max(hi, last)
    return (lo, hi) if lo < hi else (0, 0)


def tap_major(plan: geo.Plan) -> bool:
    """Whether a one-off call re-lays the weight out tap-major (within the memory rule: one output); else the GEMM
    reads it as it is (channel-major columns: the gather reads them with stride K)."""
    return sizes(plan).w_elems <= sizes(plan).y_elems // 2


@memo(256)
def tasks(plan: geo.Plan) -> tuple[tuple, int] | None:
    """((group, first sample, samples, o0, o1, i0, i1) per task, largest input pixels of a task), by shape alone;
    None when one output position's input block breaks the memory rule."""
    g, cut = plan.groups, cut_axis(plan)
    width = (plan.c_out // g) * _prod(a.kernel for a in plan.axes)  # cols per input pixel
    a = plan.axes[cut]
    inner = _prod(ax.size_in for i, ax in enumerate(plan.axes) if i != cut)  # input pixels per position on ``cut``
    out_size = plan.batch * plan.c_out * _prod(ax.size_out for ax in plan.axes)
    relayout = plan.c_in * width if tap_major(plan) else 0
    budget = (out_size - relayout) // max_threads()
    target = min(budget, max(_CHUNK_ELEMENTS, inner * width))
    per_sample = inner * a.size_in * width
    if per_sample <= target:
        blocks = [(0, a.size_out, 0, a.size_in)]
    else:
        blocks, o0 = [], 0
        while o0 < a.size_out:
            o1 = o0 + 1
            while o1 < a.size_out:
                i0, i1 = _input_range(a, o0, o1 + 1)
                if (i1 - i0) * inner * width > target:
                    break
                o1 += 1
            blocks.append((o0, o1) + _input_range(a, o0, o1))
            o0 = o1
    n = 1
    if len(blocks) == 1:  # whole samples: several per task, enough tasks for the workers
        n = max(1, min(target // max(1, per_sample), -(-plan.batch // (2 * max_threads()))))
    out = tuple((gi, j, min(n, plan.batch - j)) + blk for gi in range(g) for j in range(0, plan.batch, n)
                for blk in blocks)
    pixels = max((nj * (i1 - i0) * inner for _, _, nj, _, _, i0, i1 in out), default=0)
    if pixels * width > budget:
        return None
    return out, pixels


@memo(256)
def channel_tasks(plan: geo.Plan) -> tuple[tuple, int, int] | None:
    """A one-off call of a layer with more weight than input, the weight read as it is: ((group, first channel,
    channels) per task, input pixels, channels per block), every sample and position in every task; else None.

    Split by pixels, every task's GEMM would re-pack the whole weight (a DCGAN 1024 -> 512 block: 32 MiB per
    task of 32 pixels); split by output channels, each task streams its own columns of the weight once (a
    block of the weight as it is: rows of C_out_g x K, no copy) against all the pixels. A block's ``cols``
    keeps the memory rule (one output across the workers), or there is no such split."""
    s = sizes(plan)
    if tap_major(plan) or s.w_elems <= s.x_elems:
        return None
    pixels = plan.batch * _prod(a.size_in for a in plan.axes)
    per_channel = pixels * s.k  # cols elements of one output channel
    cb = min(s.y_elems // max_threads() // per_channel, -(-s.cout_g // max_threads()))
    if cb < 1:
        return None
    blocks = tuple((gi, c0, min(cb, s.cout_g - c0)) for gi in range(plan.groups) for c0 in range(0, s.cout_g, cb))
    return blocks, pixels, cb


def in_place(plan: geo.Plan) -> bool:
    """Whether the GEMMs write the output in place: one group, and on every axis the kernel equals the stride,
    with no padding, dilation or output padding (U-Net's and 3-D up-convolutions), the weight copied tap-major
    (``tap_major``). Every output element then receives one term, and the outputs of input row ``(d, h)`` and tap
    row ``(a_d, a_h)``, ``y[n, s_d d + a_d, s_h h + a_h, :, :]``, are one contiguous run of ``W x s_w C_out``
    values: the product of the row's pixels (W x C_in) with the tap row's columns of the tap-major weight
    (C_in x s_w C_out)."""
    return plan.groups == 1 and tap_major(plan) and all(
        a.kernel == a.stride and a.start == 0 and (a.dilation == 1 or a.kernel == 1) and a.size_out == a.size_in *
        a.stride for a in plan.axes)


def in_place_rows(plan: geo.Plan) -> int:
    """Input positions along ``cut_axis`` per task of the in-place path: blocks of about ``_CHUNK_ELEMENTS`` output
    elements (the bias and the epilogue pass over a task's rows while they are in cache), and enough of them for
    the workers."""
    size = plan.axes[cut_axis(plan)].size_in
    per_position = plan.c_out * _prod(a.size_out for a in plan.axes) // max(1, size)  # output elements
    return max(1, min(_CHUNK_ELEMENTS // max(1, per_position), -(-size * plan.batch // (2 * max_threads()))))


def in_place_tasks(plan: geo.Plan) -> list[tuple[int, int, int]]:
    """(sample, first, last + 1 input position along ``cut_axis``) per task of the in-place path."""
    size, rows = plan.axes[cut_axis(plan)].size_in, in_place_rows(plan)
    return [(n, i0, min(size, i0 + rows)) for n in range(plan.batch) for i0 in range(0, size, rows)]


def _in_place_cost(plan: geo.Plan, threads: int) -> float:
    """The GEMMs (rows of W pixels x C_in against C_in x s_w C_out), a matmul call per task and tap row, the
    tap-major copy of the weight and a streaming pass for the bias."""
    s = sizes(plan)
    tasks = plan.batch * -(-plan.axes[cut_axis(plan)].size_in // in_place_rows(plan))
    a_w = plan.axes[2]
    width = a_w.stride * plan.c_out
    gemm = gemm_time(2.0 * plan.macs, a_w.size_in, width, plan.c_in, 1, s.scale)
    calls = tasks * plan.axes[0].stride * plan.axes[1].stride
    passes = (s.w_elems + s.y_elems) * s.item / M.BANDWIDTH
    workers = max(1, min(threads, tasks))
    return (gemm + calls * M.LAUNCH_SERIAL + passes) / workers + M.LAUNCH_PARALLEL


def _run_in_place(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """``run`` for ``in_place`` plans: per task and tap row one matmul of the task's input rows (W x C_in each)
    with the tap row's columns of the tap-major weight, written straight into the output rows (numpy runs the
    rows' GEMMs in BLAS, into the strided view); then the bias and the epilogue over the task's output rows
    (skipped without either)."""
    (a_d, a_h, a_w) = plan.axes
    cut = cut_axis(plan)
    d, h, w = (a.size_in for a in plan.axes)
    yv = y5.reshape(plan.batch, d, a_d.stride, h, a_h.stride, w, a_w.stride * plan.c_out)
    wv = w2.reshape(plan.c_in, a_d.stride, a_h.stride, a_w.stride * plan.c_out)
    ep = _epilogue.args(plan)
    add_bias = bool(bias.any())
    ys = (a_d.stride, a_h.stride, a_w.stride)

    def work(part):
        for n, i0, i1 in part:
            xi = [n, slice(None), slice(None), slice(None)]
            xi[1 + cut] = slice(i0, i1)
            yi = [n, slice(None), 0, slice(None), 0, slice(None)]
            yi[1 + 2 * cut] = slice(i0, i1)
            xs = x5[tuple(xi)]
            for td in range(a_d.stride):
                for th in range(a_h.stride):
                    yi[2], yi[4] = td, th
                    np.matmul(xs, wv[:, td, th], out=yv[tuple(yi)])
            if add_bias or ep is not None:
                box = [(n, n + 1), (0, y5.shape[1]), (0, y5.shape[2]), (0, y5.shape[3])]
                box[1 + cut] = (ys[cut] * i0, ys[cut] * i1)
                region = y5[tuple(slice(lo, hi) for lo, hi in box)]
                if add_bias:
                    region += bias
                if ep is not None:
                    _epilogue.box(y5, ep, *box)

    run_parallel(work, in_place_tasks(plan))


def applies(plan: geo.Plan) -> bool:
    return gemm_applies(plan) and (in_place(plan) or tasks(plan) is not None or channel_tasks(plan) is not None)


def scratch_elements(plan: geo.Plan) -> int:
    if in_place(plan):  # (the tap-major weight only)
        return plan.c_in * (plan.c_out // plan.groups) * _prod(a.kernel for a in plan.axes)
    by_channel = channel_tasks(plan)
    if by_channel is not None:
        return max_threads() * by_channel[1] * by_channel[2] * sizes(plan).k
    found = tasks(plan)
    width = (plan.c_out // plan.groups) * _prod(a.kernel for a in plan.axes)
    return 0 if found is None else max_threads() * found[1] * width + (plan.c_in * width if tap_major(plan) else 0)


def gemm_cost(plan: geo.Plan, threads: int, element: float, store: float) -> float | None:
    """The pixels x channels GEMM, its fixed terms and a second step of ``element`` s per ``cols`` element and
    ``store`` s per output element (how ``cols`` reaches the output: this variant's, or gather-gemm-nhwc-runs')."""
    found = tasks(plan)
    if found is None:
        return None
    task_list, max_pixels = found
    s = sizes(plan)
    width = s.cout_g * s.k
    inner = _prod(a.size_in for i, a in enumerate(plan.axes) if i != cut_axis(plan))
    pixels = sum(t[2] * (t[6] - t[5]) * inner for t in task_list)  # incl. recomputed edges, all groups
    workers = max(1, min(threads, len(task_list)))
    gemm = gemm_time(2.0 * pixels * s.cin_g * width, max(1, max_pixels), width, s.cin_g, 1, s.scale)
    step = pixels * width * element + s.y_elems * store
    fixed = s.w_elems * s.item / M.BANDWIDTH + len(task_list) * M.LAUNCH_GEMM
    return (gemm + step + fixed) / workers + M.LAUNCH_PARALLEL


def cost(plan: geo.Plan, threads: int) -> float | None:
    """In place (``in_place``), by channel blocks where ``channel_tasks`` applies (one-off calls and operators
    alike), else by pixels."""
    if in_place(plan):
        return _in_place_cost(plan, threads)
    by_channel = channel_tasks(plan)
    if by_channel is None:
        return gemm_cost(plan, threads, *M.ROWS_STEP_PIXELS_MAJOR["gather"])
    blocks, pixels, cb = by_channel
    s = sizes(plan)
    element, store = M.ROWS_STEP_PIXELS_MAJOR["gather"]
    width = s.cout_g * s.k
    gemm = gemm_time(2.0 * pixels * s.cin_g * width * plan.groups, pixels, cb * s.k, s.cin_g, 1, s.scale)
    step = pixels * width * plan.groups * element + s.y_elems * store
    workers = max(1, min(threads, len(blocks)))
    return (gemm + step + len(blocks) * M.LAUNCH_GEMM) / workers + M.LAUNCH_PARALLEL


def pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """(C_in, C_out_g, K) -> (C_in, K x C_out_g): tap-major, each tap's output channels contiguous."""
    cout_g, k = plan.c_out // plan.groups, _prod(a.kernel for a in plan.axes)
    return np.ascontiguousarray(w5.reshape(plan.c_in, cout_g, k).transpose(0, 2, 1)).reshape(plan.c_in, k * cout_g)


@memo(256)
def tables(plan: geo.Plan) -> tuple[np.ndarray, np.ndarray]:
    """``tabs[axis, o]``: the (tap, input position) pairs reaching output ``o``, in tap order; ``counts[axis, o]``."""
    longest = max(a.size_out for a in plan.axes)
    reaching = []  # per axis and tap: the outputs it reaches and their input positions
    counts = np.zeros((3, longest), np.int64)
    for axis, a in enumerate(plan.axes):
        o = np.arange(a.size_out, dtype=np.int64)
        for k in range(a.kernel):
            num = o + a.start - k * a.dilation
            i = num // a.stride
            ok = (num % a.stride == 0) & (i >= 0) & (i < a.size_in)
            reaching.append((axis, k, o[ok], i[ok]))
            counts[axis, o[ok]] += 1
    # as wide as the most pairs an output has (about kernel / stride), not the kernel: a 1,024-tap iSTFT-like
    # layer's table would otherwise be gigabytes
    tabs = np.zeros((3, longest, 2 * max(1, int(counts.max()))), np.int64)
    counts[:] = 0
    for axis, k, rows, i in reaching:
        at = counts[axis, rows]
        tabs[axis, rows, 2 * at] = k
        tabs[axis, rows, 2 * at + 1] = i
        counts[axis, rows] += 1
    return tabs, counts


@memo(256)
def w_table(plan: geo.Plan) -> np.ndarray:
    """The W axis by output phase (``gather_plane.axis_table``): per phase, its outputs and (tap, base) pairs."""
    return axis_table(plan.axes[2])[0]


def run(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Channels-last transposed convolution into ``y5`` (N, oD, oH, oW, C_out) from ``x5`` (N, D, H, W, C_in) and
    :func:`pack`'s weight (or the weight itself, 5-D: channel-major columns)."""
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    tabs, counts = tables(plan)
    wtab = w_table(plan)
    cut = cut_axis(plan)
    kern = plan.arrays("kernel")
    in_shape = [a.size_in for a in plan.axes]
    ep = _epilogue.args(plan)
    code, params = (0, np.zeros(3, plan.dtype)) if ep is None else ep
    major = w2.ndim == 2
    w2 = w2.reshape(plan.c_in, -1)
    if major and in_place(plan):
        _run_in_place(plan, x5, w2, bias, y5)
        return
    by_channel = None if major else channel_tasks(plan)
    if by_channel is not None:
        _run_by_channel(plan, x5, w2, bias, y5, by_channel, (tabs, counts, wtab, kern), (code, params))
        return
    task_list, max_pixels = tasks(plan)

    def work(part):
        buf = np.empty(max_pixels * cout_g * k, plan.dtype)
        slab = np.array(in_shape, np.int64)
        for gi, j0, nj, o0, o1, i0, i1 in part:
            slab[cut] = i1 - i0
            index = [slice(j0, j0 + nj), slice(None), slice(None), slice(None)]
            index[1 + cut] = slice(i0, i1)
            pixels = nj * int(slab[0] * slab[1] * slab[2])
            cols = buf[:pixels * cout_g * k].reshape(pixels, cout_g * k)
            if pixels:
                xm = x5[tuple(index)].reshape(pixels, plan.c_in)[:, gi * cin_g:(gi + 1) * cin_g]
                np.matmul(xm, w2[gi * cin_g:(gi + 1) * cin_g], out=cols)
            nhwc_gather(buf, y5, bias, (j0, nj, gi * cout_g, cout_g, cut, o0, o1, i0), slab, kern, tabs, counts, wtab,
                        major, code, params)

    run_parallel(work, list(task_list))


def _run_by_channel(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray, found: tuple,
                    geometry: tuple, epilogue: tuple) -> None:
    """``run`` by blocks of output channels (``channel_tasks``): per block one GEMM of every pixel against the
    block's columns of the weight as it is, then the block's channels of every output pixel."""
    blocks, pixels, cb = found
    g, k = plan.groups, _prod(a.kernel for a in plan.axes)
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    tabs, counts, wtab, kern = geometry
    slab = np.array([a.size_in for a in plan.axes], np.int64)
    cut = cut_axis(plan)
    xm = x5.reshape(pixels, plan.c_in)

    def work(part):
        buf = np.empty(pixels * cb * k, plan.dtype)
        for gi, c0, nc in part:
            cols = buf[:pixels * nc * k].reshape(pixels, nc * k)
            np.matmul(xm[:, gi * cin_g:(gi + 1) * cin_g], w2[gi * cin_g:(gi + 1) * cin_g, c0 * k:(c0 + nc) * k],
                      out=cols)
            block = (0, plan.batch, gi * cout_g + c0, nc, cut, 0, plan.axes[cut].size_out, 0)  # (all pixels)
            nhwc_gather(buf, y5, bias, block, slab, kern, tabs, counts, wtab, False, *epilogue)

    run_parallel(work, list(blocks))


def _pack_input(plan: geo.Plan) -> tuple:
    """What an operator's pack depends on: the weight's geometry, and whether calls of this plan run by blocks of
    output channels (``channel_tasks``), which read the weight as it is, as a one-off call does."""
    return weight_plan(plan), channel_tasks(plan) is not None


def _kept_pack(spec: tuple, w5: np.ndarray) -> np.ndarray:
    """An operator's weight: as it is where calls run by channel blocks, else packed tap-major once."""
    plan, as_is = spec
    return w5 if as_is else pack(plan, w5)


NATIVE = Variant(
    name="gather-gemm-nhwc", form="gather", applies=applies, cost=cost, scratch=scratch_elements,
    pack=_kept_pack, pack_input=_pack_input,
    call_pack=lambda plan, w5: pack(plan, w5) if tap_major(plan) else w5, run=run, serial=lambda plan: False,
    reason="channels-last: BLAS GEMM over pixels x channels, each output pixel's channels summed in place",
    kernels=lambda: (nhwc_gather,), exact=True, channels_last=True,
)


# --------------------------------------------------------------------------- the direct channels-last kernel


def direct_pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """(C_in, C_out_g, K) -> (K, C_in, C_out_g): per (tap, input channel) the output channels contiguous."""
    cout_g, k = plan.c_out // plan.groups, _prod(a.kernel for a in plan.axes)
    return np.ascontiguousarray(w5.reshape(plan.c_in, cout_g, k).transpose(2, 0, 1))


def _relaid_fits(plan: geo.Plan) -> bool:
    """Whether a one-off call may re-lay the weight out (the copy within the memory rule: one output)."""
    return sizes(plan).w_elems <= sizes(plan).y_elems


def direct_call_pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    return direct_pack(plan, w5) if _relaid_fits(plan) else w5


def direct_run(plan: geo.Plan, x5: np.ndarray, wt: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Channels-last transposed convolution, direct gather (``_kernels.nhwc.nhwc_direct``), on the worker pool
    unless the problem is small (``_tasks.run_tasks``). ``wt``: :func:`direct_pack`'s (K, C_in, C_out_g), or the
    weight itself (5-D)."""
    n_tasks, work, geometry, cut, code, params = _direct_arguments(plan)
    run_tasks(nhwc_direct, n_tasks, work, (x5, wt.reshape(-1), bias, y5, (plan.groups, cut, int(wt.ndim == 3)))
              + geometry + (code, params))


@memo(256)
def _direct_arguments(plan: geo.Plan) -> tuple:
    """What ``direct_run`` passes besides the arrays, made once per plan (small calls are hot)."""
    tabs, counts = tables(plan)
    cut = cut_axis(plan)
    code, params = _epilogue.args(plan) or (0, np.zeros(3, plan.dtype))
    return (plan.batch * plan.axes[cut].size_out, plan.macs, (plan.arrays("kernel"), tabs, counts, w_table(plan)),
            cut, code, params)


@memo(256)
def direct_call(plan: geo.Plan) -> tuple:
    """The fast path of a small call (``Variant.direct``): ``nhwc_direct`` over every task in the calling thread,
    as one numba call that reads the weight as given (its order of terms is the tap-major one's, so the bits are
    too); ``(None, ())`` for a call that goes to the pool, and for depthwise layers (their rows need the weight
    tap-major). A small call spent more time re-laying its weight out and handing its tasks out from Python than
    computing."""
    s = sizes(plan)
    if not runs_directly(plan) or (s.cin_g == 1 and s.cout_g == 1 and plan.groups > 1):
        return None, ()
    n_tasks, _, geometry, cut, code, params = _direct_arguments(plan)
    return nhwc_direct, ((plan.groups, cut, 0),) + geometry + (code, params, 0, n_tasks)


def runs_directly(plan: geo.Plan) -> bool:
    """A small problem: in the calling thread (handing tasks to the pool costs more than it saves)."""
    return plan.macs < SERIAL_WORK


def direct_cost(plan: geo.Plan, threads: int) -> float:
    """Multiply-adds at the direct rate, their vectors as long as a group's output channels; the streams (x once
    per tap, except for depthwise layers, whose rows re-read x rows from cache: once)."""
    s = sizes(plan)
    rows = s.cin_g == 1 and s.cout_g == 1 and plan.groups > 1 and _relaid_fits(plan)  # (depthwise: by rows)
    run = plan.c_out if s.cin_g == 1 and s.cout_g == 1 and _relaid_fits(plan) else s.cout_g
    rate = M.DIRECT_RATE * s.scale * run / (run + DIRECT_ROW_HALF)
    work = plan.macs / rate + (s.x_elems * (1 if rows else s.k) + s.y_elems + s.w_elems) * s.item / M.BANDWIDTH
    if runs_directly(plan):
        return work + M.LAUNCH_SERIAL
    return work / threads + M.LAUNCH_POOL


DIRECT = Variant(
    name="gather-direct-nhwc", form="gather", applies=lambda plan: bool(plan.batch), cost=direct_cost,
    scratch=lambda plan: sizes(plan).w_elems if _relaid_fits(plan) else 0, kept_scratch=lambda plan: 0,
    pack=direct_pack, call_pack=direct_call_pack, run=direct_run, serial=runs_directly, direct=direct_call,
    reason="channels-last: each output pixel's channels summed in place, vectorized along them",
    kernels=lambda: (nhwc_direct,), exact=True, channels_last=True,
)


# --------------------------------------------------------------------------- the transposing route


def channels_first(plan: geo.Plan) -> geo.Plan:
    """The same call on channels-first data."""
    return dataclasses.replace(plan, channels_last=False)


def same_bytes(plan: geo.Plan) -> bool:
    """One input and one output channel: channels-last arrays are the channels-first ones, byte for byte."""
    return plan.c_in == 1 and plan.c_out == 1


def one_output_channel(plan: geo.Plan) -> bool:
    """One output channel and several input channels: the channels-last output is the channels-first one byte for
    byte, and x's channels-last pixels are the rows of the transposed GEMM operand X^T a channels-first GEMM
    variant multiplies (a strided view of x both ways)."""
    return plan.c_out == 1 and plan.c_in > 1


def reading_in_place(inner: Variant) -> Variant:
    """A channels-last record of ``inner``, a channels-first GEMM variant that reads x only through numpy views
    (its GEMM's operand; no numba kernel reads x), on layers of one output channel (:func:`one_output_channel`):
    ``inner`` runs on a channels-first view of x5 and on y5 reshaped (the same bytes), with no copy of either.
    A learned overlap-add (an iSTFT-like synthesis, ~1000 channels to one) is such a layer."""

    def run_(plan: geo.Plan, x5: np.ndarray, packed, bias: np.ndarray, y5: np.ndarray) -> None:
        inner.run(channels_first(plan), x5.transpose(0, 4, 1, 2, 3), packed, bias,
                  y5.reshape((y5.shape[0], 1) + y5.shape[1:4]))

    kept_inner = inner.kept_cost or inner.cost

    return Variant(
        name=f"{inner.name}-nhwc", form=inner.form,
        applies=lambda plan: one_output_channel(plan) and inner.applies(channels_first(plan)),
        cost=lambda plan, threads: inner.cost(channels_first(plan), threads),
        kept_cost=lambda plan, threads: kept_inner(channels_first(plan), threads),
        scratch=lambda plan: inner.scratch_elements(channels_first(plan)),
        kept_scratch=lambda plan: inner.scratch_elements(channels_first(plan), True),
        pack=inner.pack, pack_input=lambda plan: inner.pack_input(channels_first(plan)),
        call_pack=lambda plan, w5: inner.packed_for_call(channels_first(plan), w5), run=run_,
        serial=lambda plan: inner.serial(channels_first(plan)),
        reason=f"channels-last, one output channel: {inner.name} reading x's pixels in place as its GEMM's rows",
        kernels=inner.kernels, exact=inner.exact, channels_last=True,
    )


def transposing(inner: Variant) -> Variant:
    """A channels-last record that runs ``inner`` (a channels-first variant) between two transposes: where the
    native variant does not apply, or ``inner``'s form is requested and has no native variant."""

    def applies_(plan: geo.Plan) -> bool:
        return inner.applies(channels_first(plan)) and (same_bytes(plan) or inner.form != NATIVE.form)

    def requested(plan: geo.Plan, method: str) -> bool:  # (the native variants serve ``auto`` and their form)
        return same_bytes(plan) or method == inner.form

    def run_(plan: geo.Plan, x5: np.ndarray, packed, bias: np.ndarray, y5: np.ndarray) -> None:
        first = channels_first(plan)
        if same_bytes(plan):  # one channel: (N, D, H, W, 1) and (N, 1, D, H, W) are the same bytes
            inner.run(first, x5.reshape((x5.shape[0], 1) + x5.shape[1:4]), packed, bias,
                      y5.reshape((y5.shape[0], 1) + y5.shape[1:4]))
            return
        geo.check_memory(x5.shape, plan.dtype, "the channels-first copy of x")
        xt = np.ascontiguousarray(x5.transpose(0, 4, 1, 2, 3))
        yt = np.empty((y5.shape[0], y5.shape[4]) + y5.shape[1:4], plan.dtype)
        inner.run(first, xt, packed, bias, yt)
        y5[...] = yt.transpose(0, 2, 3, 4, 1)

    def moved(plan: geo.Plan) -> float:
        if same_bytes(plan):
            return 0.0
        s = sizes(plan)
        return 2 * (s.x_elems + s.y_elems) * s.item / M.BANDWIDTH

    def cost_(plan: geo.Plan, threads: int) -> float | None:
        inner_cost = inner.cost(channels_first(plan), threads)
        return None if inner_cost is None else inner_cost + moved(plan)

    return Variant(
        name=f"transpose-{inner.name}", form=inner.form, applies=applies_, cost=cost_,
        scratch=lambda plan: inner.scratch(channels_first(plan)) + (0 if same_bytes(plan) else sizes(plan).x_elems),
        pack=inner.pack, pack_input=lambda plan: inner.pack_input(channels_first(plan)),
        call_pack=lambda plan, w5: inner.packed_for_call(channels_first(plan), w5), run=run_,
        serial=lambda plan: False, reason=f"channels-last data transposed around {inner.name}",
        kernels=inner.kernels, exact=inner.exact, baseline=inner.baseline, channels_last=True,
        check=None if inner.check is None else lambda plan, x5, w_max: inner.check(channels_first(plan), x5, w_max),
        requested=requested,
    )
