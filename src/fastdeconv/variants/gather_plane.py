"""gather-plane: one input channel per group (depthwise, single-channel), or few output channels per group (RGB
output layers, class maps): per output phase and (input channel, tap) one contiguous run over a zero-bordered
copy of a block of input rows, four terms per pass, three output channels at once (the numba kernels:
``_kernels/plane.py``, which describes the scheme; here its layout, when it applies, and the driver)."""

from __future__ import annotations

from math import prod as _prod
from typing import NamedTuple

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo
from .._kernels.epilogue import activate_plane_tasks
from .._kernels.plane import plane_tasks
from .._model import PLANE_SERIAL_WORK
from .._runtime import run_parallel
from .._scan import finite_weights
from .._threads import get_num_threads, max_threads
from . import Variant, _epilogue
from ._terms import same, sizes

# Elements of scratch per worker (the padded input rows plus one block of phase rows): 128 KiB in float32 with
# one input channel per group; with several, whose padded rows stay in L2 while every phase reads them,
# 512 KiB: with wide rows of many channels a smaller buffer leaves a single row per block, and every block
# re-reads the halo rows its taps need.
BUFFER_ELEMENTS = 32768
CHANNELS_BUFFER_ELEMENTS = 131072
# Output channels one pass over the padded rows updates (each input element loaded once for all of them): three
# share each load among several channels, while their accumulators and weights stay in vector registers (of one
# to four channels, three ran fastest).
CHANNEL_BLOCK = 3
# Most output channels per group with several input channels (beyond it BLAS's channel contraction wins)
MAX_CHANNELS_OUT = 32
# Phases with outputs beyond the kernel size, and source spread beyond twice (input + kernel), up to which the
# variant applies (see ``applies``)
PHASE_SLACK = 64
# Chunks of tasks per worker thread: workers claim them one at a time (a worker slowed down by another process
# takes fewer), and each is one kernel call that allocates its scratch once (a few microseconds from Python);
# a chunk has at least CHUNK_WORK multiply-adds, so that small calls are not mostly that overhead.
CHUNKS_PER_THREAD = 8
CHUNK_WORK = 1_000_000


class Layout(NamedTuple):
    """Per-plan constants of the kernel (built once per plan)."""

    tables: tuple[np.ndarray, np.ndarray, np.ndarray]  # per axis (stride, 2 + 2 * kernel): count, taps, (k, base)
    geometry: np.ndarray  # int64: lo_h, span_h, lo_w, pitch, block (phase rows per task), blocks per plane,
    #                       output channels per pass (1 or CHANNEL_BLOCK)
    scratch: int          # elements of scratch per worker


def applies(plan: geo.Plan) -> bool:
    """Whether this variant runs the plan: one input channel per group (depthwise, single-channel images), or
    several with few output channels per group (RGB output layers, class maps); and on every axis at most
    ``kernel + PHASE_SLACK`` phases with outputs and taps' sources spread over at most twice (input + kernel)
    + ``PHASE_SLACK`` inputs (its tables, buffers and loops grow with both: a stride far above the kernel leaves
    bias-only phases, a huge dilation padded rows of zeros)."""
    if plan.groups == 0 or plan.c_out < plan.groups or plan.c_in < plan.groups:
        return False
    if not (plan.c_in == plan.groups or plan.c_out // plan.groups <= MAX_CHANNELS_OUT):
        return False
    for a in plan.axes:
        bases = [b for _, _, _, bs in a.tap_phases() for b in bs]
        if a.phase_count > a.kernel + PHASE_SLACK or \
                max(bases, default=0) - min(bases, default=0) > 2 * (a.size_in + a.kernel) + PHASE_SLACK:
            return False
    return True


def axis_table(axis: geo.Axis) -> tuple[np.ndarray, int, int]:
    """One axis's phases with outputs as an int64 table (row per phase ``r < phase_count``: count, number of
    taps, then (tap, base) pairs), with the lowest base and the spread of the bases (0 when no phase has a tap).

    Only the ``min(stride, size_out)`` phases with outputs have a row: when the stride exceeds the output, every
    phase has one output (``m = 0``), so the kernels may take the row count for the stride (``o = r``)."""
    phases = axis.tap_phases()
    rows = axis.phase_count
    table = np.zeros((rows, 2 + 2 * axis.kernel), dtype=np.int64)
    table[:, 0] = -(-(axis.size_out - np.arange(rows, dtype=np.int64)) // axis.stride)
    bases = [b for _, _, _, bs in phases for b in bs]
    lo = min(bases, default=0)
    for r, _count, taps, bs in phases:
        table[r, 1] = len(taps)
        for u, (k, b) in enumerate(zip(taps, bs)):
            table[r, 2 + 2 * u], table[r, 3 + 2 * u] = k, b
    return table, lo, max(bases, default=0) - lo


@memo(256)
def layout(plan: geo.Plan) -> Layout:
    """Phase tables, padded-plane pitch, row block and channel block of a plan (see the module docstring)."""
    (t_d, _, _), (t_h, lo_h, span_h), (t_w, lo_w, span_w) = (axis_table(a) for a in plan.axes)
    cin_g, cout_g = plan.c_in // plan.groups, plan.c_out // plan.groups
    depth_taps = int(t_d[:, 1].max())
    rows = int(t_h[0, 0])  # phase 0 has the most outputs
    pitch = int(t_w[0, 0]) + span_w
    s_w = t_w.shape[0]  # column phases with outputs (the stride, or the output width when it is smaller)
    cb = 1 if cout_g == 1 else CHANNEL_BLOCK
    target = BUFFER_ELEMENTS if cin_g == 1 else CHANNELS_BUFFER_ELEMENTS
    # block of phase rows per task: its padded input rows of every input channel (one extra: a run's tail reads
    # up to span_w past the last row) plus one phase row of each column phase and channel of a pass fit the
    # buffer
    per_row = (s_w * cb + cin_g * depth_taps) * pitch
    block = max(1, min(rows, (target - cin_g * depth_taps * (span_h + 1) * pitch) // per_row))
    # a single image: at least one row block per worker
    per_block = plan.batch * plan.groups * plan.axes[0].size_out  # tasks per row block
    if 0 < per_block < max_threads():
        block = min(block, max(1, -(-rows // -(-max_threads() // per_block))))
    # the memory rule (a call's scratch within one output): where the buffer-filling block breaks it on the pool's
    # workers and fewer rows keep it, fewer rows per task, in blocks of equal size (a block's rows are computed by
    # the same terms in the same order whatever its size: the bits stay)
    fixed = cin_g * depth_taps * (span_h + 1) * pitch
    output = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    fits = (output // max_threads() - fixed) // per_row
    if 1 <= fits < block:
        block = -(-rows // -(-rows // fits))
    blocks = -(-rows // block) if rows else 0
    scratch = per_row * block + fixed
    geometry = np.array([lo_h, span_h, lo_w, pitch, block, blocks, cb], dtype=np.int64)
    return Layout((t_d, t_h, t_w), geometry, scratch)


def scratch_elements(plan: geo.Plan) -> int:
    """Scratch elements one call holds at most (each worker runs one chunk of tasks at a time)."""
    return layout(plan).scratch * min(max_threads(), task_count(plan))


def task_count(plan: geo.Plan) -> int:
    """Tasks of one call: (sample, group, output depth, block of phase rows)."""
    return plan.batch * plan.groups * plan.axes[0].size_out * int(layout(plan).geometry[5])


def runs_serially(plan: geo.Plan) -> bool:
    """A small problem: handing chunks to the worker pool costs more than it saves."""
    return plan.macs < M.PLANE_SERIAL_WORK


def cost(plan: geo.Plan, threads: int) -> float:
    """Per phase, runs over a padded block of rows (``pitch`` columns per phase row, some of them beyond the
    phase's outputs), four terms per pass, for one output channel or a block of them; the store; the padded copy
    of the input rows; each task's weight table."""
    s = sizes(plan)
    macs = plan.macs
    lay = layout(plan)
    pitch, block, cb = int(lay.geometry[3]), int(lay.geometry[4]), int(lay.geometry[6])
    computed = s.y_elems * pitch / max(1, int(lay.tables[2][0, 0]))
    taps = macs / max(1, s.y_elems)  # per output element, on average
    halo = (block + int(lay.geometry[1]) + 1) / block
    tasks = task_count(plan)
    passes = -(-s.cout_g // cb)  # per task and phase
    phases = tasks * passes * _prod(t.shape[0] for t in lay.tables[1:])  # phases with outputs
    if cb == 1:
        terms = computed * (taps * M.PLANE_TAP + -(-taps // 4) * M.PLANE_PASS)
    else:  # the last block of channels may compute zero-weight extras; short runs pay each pass's set-up
        terms = computed * passes * cb / s.cout_g * taps * M.PLANE_TAP_BLOCK + phases * -(-taps // 4) * M.PLANE_QUAD
    work = (terms + s.y_elems * M.PLANE_STORE + s.x_elems * halo * M.PLANE_FILL) * (1.0 if s.item == 4 else 1.5) \
        + phases * M.PLANE_PHASE + tasks * passes * cb * s.cin_g * s.k * M.PLANE_WEIGHT
    if macs < PLANE_SERIAL_WORK:  # in the calling thread (``runs_serially``: the same rule)
        return work + M.LAUNCH_SERIAL
    return work / max(1, min(threads, tasks)) + M.LAUNCH_POOL  # chunks on the worker pool


def run(plan, x5, w5, bias, y5) -> None:
    gather_plane(plan, x5, w5, bias, y5, runs_serially(plan))



def gather_plane(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray,
                 serial: bool = False) -> None:
    """Run the plan (``applies(plan)``) into ``y5``; ``serial`` keeps it in the calling thread.

    The tasks run in contiguous chunks on the package's worker pool (``run_parallel``), each chunk one call of
    the serial, GIL-free ``plane_tasks``: a single compiled kernel serves the serial and the parallel paths (a
    ``parallel=True`` wrapper would be a second compilation of the whole body, the costlier one).
    """
    lay = layout(plan)
    args = (x5, w5, bias, y5, plan.groups, *lay.tables, lay.geometry, None if lay.geometry[6] == 1 else True)
    n_tasks = task_count(plan)
    threads = get_num_threads()
    ep = _epilogue.args(plan)
    if (serial or threads == 1 or n_tasks <= 1) and ep is None:
        plane_tasks(0, n_tasks, *args)
        return
    inline = serial or threads == 1 or n_tasks <= 1
    n_chunks = min(n_tasks, CHUNKS_PER_THREAD * threads, max(1 if inline else threads, plan.macs // CHUNK_WORK))
    bounds = [(c * n_tasks // n_chunks, (c + 1) * n_tasks // n_chunks) for c in range(n_chunks)]
    # the epilogue's view of a task: its rows are every row phase of a block of phase rows
    s_h, block, blocks = lay.tables[1].shape[0], int(lay.geometry[4]), int(lay.geometry[5])

    def work(part):
        for lo, hi in part:
            plane_tasks(lo, hi, *args)
            if ep is not None:  # the chunk's rows are final: the epilogue while they are in cache
                activate_plane_tasks(y5, plan.groups, s_h, block, blocks, lo, hi, ep[0], ep[1])

    if inline:
        work(bounds)
        return

    run_parallel(work, bounds)


VARIANT = Variant(
    name="gather-plane", form="gather", applies=applies, cost=cost, scratch=scratch_elements, pack=same,
    run=run, serial=runs_serially,
    reason="one input channel or few output channels per group: long vectorized runs over a padded copy of the "
           "input rows",
    kernels=lambda: (plane_tasks,), exact=False, check=finite_weights,
)
