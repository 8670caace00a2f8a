"""gather-plane-nhwc: channels-last layers of few channels per group (depthwise, FCN bilinear upsampling, class
maps): each output row one flat run of pixels x channels, every (row tap, input channel, W slot) term one
contiguous multiply-add over it with W-periodic weights (the numba kernel: ``_kernels/plane_nhwc.py``, which
describes the scheme; here when it applies, its pack, its schedule and the driver).

``gather-direct-nhwc`` vectorizes depthwise layers along the channels of one pixel: 21 class maps are a loop too
short for the vector unit, and every tap re-reads and re-writes the output row. Here a term's run covers the whole
row (``o_w * C_out`` elements), four terms are summed per pass in a column chunk that stays in L1, and each
output element is stored once with its bias and activation.
"""

from __future__ import annotations

from math import gcd
from math import prod as _prod
from typing import NamedTuple

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo
from .._kernels.plane_nhwc import plane_nhwc_tasks
from .._model import SERIAL_WORK
from .._runtime import run_parallel
from .._scan import max_abs
from .._threads import get_num_threads, max_threads
from . import Variant, _epilogue
from ._terms import sizes
from .channels_last import tables

# Most input and output channels per group (beyond them the channel contraction belongs to BLAS)
MAX_CHANNELS = 32
# The weights' period is repeated up to a multiple of VECTOR_RUN elements (a whole number of the vector loop's
# unrolled bodies, no scalar tail per period), unless that makes it longer than LONGEST_PERIOD, and to at least
# SHORTEST_PERIOD elements
VECTOR_RUN = 32
LONGEST_PERIOD = 2048
SHORTEST_PERIOD = 512
# Elements of a task's repeated input rows (``xrep``): within L2 with the output chunk and the weights
XREP_ELEMENTS = 1 << 16
# Tasks per worker thread at least, where the rows allow, and chunks of tasks per worker thread at most: workers
# claim chunks one at a time (a worker slowed down by another process takes fewer); a chunk has at least CHUNK_WORK
# multiply-adds, so that small calls are not mostly the hand-out
TASKS_PER_THREAD = 8
CHUNKS_PER_THREAD = 8
CHUNK_WORK = 1_000_000
# Output elements per column chunk of a row: a chunk, its four terms' input runs and weights stay in L1
COLUMN_CHUNK = 4096


class Spec(NamedTuple):
    """What the pack depends on: channels, groups, kernel, the W stride and dilation, the dtype."""

    c_in: int
    c_out: int
    groups: int
    kernel: tuple[int, int, int]
    stride_w: int
    dilation_w: int
    dtype: str


def applies(plan: geo.Plan) -> bool:
    """Few channels per group on both sides, a sample, and the W axis cropped at its start (``start >= 0``: the
    flat positions of the row are then non-negative)."""
    if not plan.batch or not plan.groups or plan.c_in % plan.groups or plan.c_out % plan.groups:
        return False
    cin_g, cout_g = plan.c_in // plan.groups, plan.c_out // plan.groups
    return 1 <= cin_g <= MAX_CHANNELS and 1 <= cout_g <= MAX_CHANNELS and plan.axes[2].start >= 0


@memo(256)
def pack_input(plan: geo.Plan) -> Spec:
    a = plan.axes[2]
    return Spec(plan.c_in, plan.c_out, plan.groups, tuple(ax.kernel for ax in plan.axes), a.stride, a.dilation,
                np.dtype(plan.dtype).str)


@memo(256)
def slots(spec: Spec) -> np.ndarray:
    """The W slots ``e = (k * dilation) // stride`` of the taps, each once, increasing."""
    return np.unique(np.arange(spec.kernel[2], dtype=np.int64) * spec.dilation_w // spec.stride_w)


@memo(256)
def period(spec: Spec) -> int:
    """The weights' period ``L = stride * C_out``, repeated to a multiple of ``VECTOR_RUN`` when not too long, and
    to at least ``SHORTEST_PERIOD`` elements (each period is one loop of the kernel: its set-up is per period)."""
    span = spec.stride_w * spec.c_out
    longer = span * (VECTOR_RUN // gcd(span, VECTOR_RUN))
    longer = longer if longer <= max(LONGEST_PERIOD, span) else span
    return longer * -(-SHORTEST_PERIOD // longer)


@memo(256)
def full_slots(spec: Spec) -> bool:
    """Whether every slot has a tap for every phase (no zero in the pack: no term the definition does not have)."""
    return len(slots(spec)) * spec.stride_w == spec.kernel[2]


def pack(spec: Spec, w5: np.ndarray) -> np.ndarray:
    """(C_in, C_out_g, kD, kH, kW) -> (C_in_g, kD, kH, slots, P): ``[ci, kd, kh, slot, rep * L + r * C_out + co]``
    the weight of output channel ``co`` from input channel ``ci`` of its group at the W tap with phase ``r`` and
    that slot (0 where no tap has them)."""
    cin_g, cout_g = spec.c_in // spec.groups, spec.c_out // spec.groups
    k_d, k_h, k_w = spec.kernel
    s, d = spec.stride_w, spec.dilation_w
    co = np.arange(spec.c_out)
    # sel[ci, co, kd, kh, kw] = w5[(co // cout_g) * cin_g + ci, co % cout_g, kd, kh, kw]
    if cin_g == 1 and cout_g == 1:  # (depthwise: the weight itself)
        sel = w5.reshape((1,) + w5.shape[:1] + w5.shape[2:])
    else:
        sel = w5[(co // cout_g)[None, :] * cin_g + np.arange(cin_g)[:, None], (co % cout_g)[None, :]]
    found = slots(spec)
    taps = np.arange(k_w) * d
    index = np.full((len(found), s), k_w)  # the tap of each (slot, phase); k_w: none (a zero appended)
    index[np.searchsorted(found, taps // s), taps % s] = np.arange(k_w)
    padded = np.concatenate([sel, np.zeros(sel.shape[:-1] + (1,), w5.dtype)], axis=-1)
    out = padded[..., index].transpose(0, 2, 3, 4, 5, 1)  # (cin_g, kD, kH, slots, phases, C_out)
    reps = period(spec) // (s * spec.c_out)
    return np.ascontiguousarray(np.tile(out.reshape(cin_g, k_d, k_h, len(found), s * spec.c_out), reps))


class Layout(NamedTuple):
    geometry: np.ndarray  # int64: groups, W stride, W start, P, rows per task, row blocks, input rows at most, chunk
    tasks: int
    xrep: int  # elements of one worker's repeated input rows


def _rows_in(plan: geo.Plan, h0: int, h1: int) -> int:
    """Input rows the output rows ``[h0, h1)`` read (from the first to the last)."""
    tabs, counts = tables(plan)
    sources = tabs[1, h0:h1, 1::2]
    reached = np.arange(sources.shape[1]) < counts[1, h0:h1, None]
    if not reached.any():
        return 0
    return int(sources[reached].max() - sources[reached].min() + 1)


@memo(256)
def layout(plan: geo.Plan) -> Layout:
    """Rows per task (the repeated input rows of a task within ``XREP_ELEMENTS``, and enough tasks for the
    workers), and what the kernel's scratch holds."""
    spec = pack_input(plan)
    h, w = plan.axes[1], plan.axes[2]
    _, counts = tables(plan)
    max_dt = max(1, int(counts[0, :plan.axes[0].size_out].max(initial=0)))
    per_row = max_dt * (plan.c_in // plan.groups) * w.size_in * w.stride * plan.c_out
    outer = plan.batch * plan.axes[0].size_out
    block = h.size_out
    while block > 1 and (_rows_in(plan, 0, block) * per_row > XREP_ELEMENTS
                         or outer * -(-h.size_out // block) < TASKS_PER_THREAD * max_threads()):
        block = -(-block // 2)
    blocks = -(-h.size_out // block)
    rows_max = max(_rows_in(plan, b * block, min(h.size_out, (b + 1) * block)) for b in range(blocks))
    geometry = np.array([plan.groups, w.stride, w.start, period(spec), block, blocks, rows_max, COLUMN_CHUNK],
                        dtype=np.int64)
    return Layout(geometry, outer * blocks, max(1, max_dt * rows_max * per_row))


def packed_elements(plan: geo.Plan) -> int:
    spec = pack_input(plan)
    return (plan.c_in // plan.groups) * _prod(spec.kernel[:2]) * len(slots(spec)) * period(spec)


def kept_scratch(plan: geo.Plan) -> int:
    """The repeated bias and each worker's repeated input rows."""
    lay = layout(plan)
    return period(pack_input(plan)) + lay.xrep * min(max_threads(), lay.tasks)


def scratch_elements(plan: geo.Plan) -> int:
    """The pack (a one-off call makes it), the repeated bias and each worker's repeated input rows."""
    return packed_elements(plan) + kept_scratch(plan)


def runs_serially(plan: geo.Plan) -> bool:
    return plan.macs < SERIAL_WORK


def _cost(plan: geo.Plan, threads: int, kept: bool) -> float:
    """The terms' multiply-adds (the definition's, times the zero-weight phases of partial slots) with the weights a
    second stream, one load and store of the output per pass of four terms, the output's store (bias included),
    each row's set-up, the repeated input rows (in runs of a pixel's channels, or of one broadcast value), and for
    a one-off call the pack."""
    spec = pack_input(plan)
    s = sizes(plan)
    lay = layout(plan)
    w = plan.axes[2]
    n_slots = len(slots(spec))
    terms = plan.macs * n_slots * w.stride / max(1, w.kernel)  # (element, term) pairs
    rows = plan.batch * plan.axes[0].size_out * plan.axes[1].size_out
    passes = -(-terms / max(1, s.y_elems) // 4)  # per element, on average
    chunks = rows * -(-w.size_out * plan.c_out // COLUMN_CHUNK)
    run = plan.c_out if s.cin_g == 1 and s.cout_g == 1 else s.cout_g  # elements per run of the repeated rows
    tail = run % VECTOR_RUN
    fill = lay.tasks * lay.xrep  # (at most)
    filling = fill * ((run - tail) * M.PLANE_NHWC_FILL_VECTOR + tail * M.PLANE_NHWC_FILL + M.PLANE_NHWC_FILL_RUN) / run
    packed = 0 if kept else packed_elements(plan)
    work = (terms * M.PLANE_NHWC_TERM + s.y_elems * (passes * M.PLANE_NHWC_PASS + M.PLANE_STORE) + filling) \
        * (1.0 if s.item == 4 else 1.5) + chunks * M.PLANE_NHWC_ROW + packed * M.PHASE_RELAYOUT_ELEMENT \
        + (0 if kept else M.PLANE_NHWC_PACK)
    if runs_serially(plan):
        return work + M.LAUNCH_SERIAL
    return work / max(1, min(threads, lay.tasks)) + M.LAUNCH_POOL


def cost(plan: geo.Plan, threads: int) -> float:
    return _cost(plan, threads, False)


def kept_cost(plan: geo.Plan, threads: int) -> float:
    return _cost(plan, threads, True)


def check(plan: geo.Plan, x5: np.ndarray, w_max: float) -> bool:
    """With partial slots the zero weights of the missing phases multiply inputs (0 * inf is NaN): only finite
    inputs then give the definition's pattern (otherwise the call runs an exact variant)."""
    return full_slots(pack_input(plan)) or max_abs(x5) < float("inf")


def run(plan: geo.Plan, x5: np.ndarray, wexp: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Channels-last transposed convolution into ``y5`` (N, oD, oH, oW, C_out) from ``x5`` (N, D, H, W, C_in) and
    :func:`pack`'s weights: in the calling thread when small, else in chunks of tasks on the worker pool, each
    chunk one call of the serial, GIL-free kernel (its scratch allocated once per chunk)."""
    spec = pack_input(plan)
    lay = layout(plan)
    tabs, counts = tables(plan)
    bexp = np.tile(bias, period(spec) // plan.c_out)
    code, params = _epilogue.args(plan) or (0, np.zeros(3, plan.dtype))
    args = (x5, wexp, bexp, y5, tabs, counts, slots(spec), lay.geometry, code, params)
    n_tasks, threads = lay.tasks, get_num_threads()
    if runs_serially(plan) or threads == 1 or n_tasks <= 1:
        plane_nhwc_tasks(*args, 0, n_tasks)
        return
    n_chunks = min(n_tasks, CHUNKS_PER_THREAD * threads, max(threads, plan.macs // CHUNK_WORK))
    bounds = [(c * n_tasks // n_chunks, (c + 1) * n_tasks // n_chunks) for c in range(n_chunks)]

    def work(part):
        for lo, hi in part:
            plane_nhwc_tasks(*args, lo, hi)

    run_parallel(work, bounds)


VARIANT = Variant(
    name="gather-plane-nhwc", form="gather", applies=applies, cost=cost, scratch=scratch_elements,
    kept_scratch=kept_scratch, kept_cost=kept_cost, pack=pack, pack_input=pack_input, run=run, serial=runs_serially,
    reason="channels-last, few channels per group: each output row one long run per term, W-periodic weights",
    kernels=lambda: (plane_nhwc_tasks,), exact=False, check=check, channels_last=True,
)
