"""The direct kernels' parallel runs: ranges of tasks on fastdeconv's worker pool, never on numba's threading layer.

The numba kernels (``_kernels``) are serial over a range of tasks; their Python drivers live here, above them,
so that the kernel layer imports no runtime: :func:`scatter`, :func:`gather` (the direct forms),
:func:`correlate` (the zero-fill form and ``conv``), :func:`depthwise` (``conv`` with one input channel per
group), :func:`weight_grad` and :func:`fill`.

Each kernel that splits its work into tasks (the direct forms, the zero-fill copy, the correlation, the weight
gradient) is one serial, GIL-free kernel over a range ``[task_lo, task_hi)`` of its tasks, and
:func:`run_tasks` hands contiguous chunks of the range to ``_runtime.run_parallel``, the pool of the
BLAS-backed variants. A ``parallel=True`` kernel instead would run on numba's threading layer, none of whose
layers numba ships without a native dependency is both fork-safe and thread-safe: with GNU OpenMP (numba's
usual layer on Linux) a process forked from one that had started numba's threads is terminated at its first
parallel kernel ("fork() called from a process already using GNU OpenMP"), so a fork-based
``multiprocessing.Pool`` waits forever for its worker; the ``workqueue`` layer aborts when two Python threads
launch kernels at once. fastdeconv's pool is shared by any number of Python threads, and a forked child builds
its own (``_runtime``). A ``parallel=True`` wrapper would also compile the kernel's body a second time, for
seconds; the same kernel serves the serial path here.

Every task writes its own output elements and computes them the same way whichever chunk holds it, so the
chunking (which depends on the thread count) never changes a bit.
"""

from __future__ import annotations

import math

from ._kernels._blocks import CHANNEL_BLOCK, task_count
from ._kernels.conv import correlate_tasks
from ._kernels.depthwise import depthwise_tasks
from ._kernels.epilogue import activate_tasks
from ._kernels.gather import gather_tasks
from ._kernels.grad import weight_grad_tasks
from ._kernels.scatter import scatter_tasks
from ._kernels.zerofill import fill_planes
from ._model import SERIAL_WORK
from ._runtime import run_parallel
from ._threads import get_num_threads

# Chunks per worker thread: workers claim them one at a time (a worker slowed down by another process takes
# fewer), and each is one kernel call from Python (a few microseconds, its scratch allocated once); a chunk has
# at least CHUNK_WORK multiply-adds, so that small calls are not mostly that overhead.
CHUNKS_PER_THREAD = 4
CHUNK_WORK = 1_000_000


def run_tasks(kernel, n_tasks: int, work: int, args: tuple, after=None) -> None:
    """Run ``kernel(*args, lo, hi)`` over the tasks ``[0, n_tasks)``: in the calling thread when one thread is in
    use or the call is small (``work`` multiply-adds, or elements for a copy, below ``SERIAL_WORK``: handing out
    chunks would cost more than it saves), otherwise in contiguous chunks on the worker pool.

    ``after(lo, hi)`` (the fused epilogue) runs right after each chunk, in the thread that ran it, on the output
    those tasks made final and that is still in its cache (in the calling thread too, chunk by chunk)."""
    if n_tasks <= 0:
        return
    threads = get_num_threads()
    if threads == 1 or n_tasks == 1 or work < SERIAL_WORK:
        if after is None:
            kernel(*args, 0, n_tasks)
            return
        n_chunks = max(1, min(n_tasks, work // CHUNK_WORK))
    else:
        n_chunks = min(n_tasks, CHUNKS_PER_THREAD * threads, max(threads, work // CHUNK_WORK))
    bounds = [(c * n_tasks // n_chunks, (c + 1) * n_tasks // n_chunks) for c in range(n_chunks)]

    def chunks(part):
        for lo, hi in part:
            kernel(*args, lo, hi)
            if after is not None:
                after(lo, hi)

    if threads == 1 or n_tasks == 1 or work < SERIAL_WORK:
        chunks(bounds)
        return

    run_parallel(chunks, bounds)


def _activation(y, groups, block, tile, epilogue):
    """``run_tasks``' ``after`` for the direct kernels' and the correlation's tasks (None without an epilogue)."""
    if epilogue is None:
        return None
    code, params = epilogue
    return lambda lo, hi: activate_tasks(y, groups, block, tile, lo, hi, code, params)


def scatter(x, w, bias, y, groups, stride, dilation, start, tile, epilogue=None):
    """Transposed convolution, scatter form (``_kernels.scatter``), into ``y`` (fully overwritten), on the worker
    pool.

    Parameters
    ----------
    x, w, bias, y : numpy.ndarray
        Canonical C-contiguous x (N, C_in, D, H, W), weight (C_in, C_out // groups, kD, kH, kW), bias (C_out,)
        and output y (N, C_out, oD, oH, oW), all of one float dtype.
    groups : int
        Channel groups.
    stride, dilation, start : numpy.ndarray
        Per-axis int64 (3,) geometry: ``out = in * stride + tap * dilation - start``.
    tile : numpy.ndarray
        Output tile (3,) of one task (``_tiling.tile_for``); tasks are (sample, channel block, tile).
    epilogue : tuple, optional
        ``(code, params)`` of an activation (``variants._epilogue.args``), applied to each chunk's outputs.
    """
    n_tasks = task_count(x, w, y, groups, tile)[0]
    work = x.size * w[0].size  # multiply-adds, counting the taps that fall outside y
    run_tasks(scatter_tasks, n_tasks, work, (x, w, bias, y, groups, stride, dilation, start, tile),
              _activation(y, groups, CHANNEL_BLOCK, tile, epilogue))


def gather(x, w, bias, y, groups, stride, dilation, start, tile, epilogue=None):
    """Transposed convolution, gather form (``_kernels.gather``), into ``y`` (fully overwritten), on the worker
    pool. Parameters as :func:`scatter`'s."""
    n_tasks = task_count(x, w, y, groups, tile)[0]
    work = x.size * w[0].size  # multiply-adds, counting the taps that fall outside y
    run_tasks(gather_tasks, n_tasks, work, (x, w, bias, y, groups, stride, dilation, start, tile),
              _activation(y, groups, CHANNEL_BLOCK, tile, epilogue))


def correlate(xp, w, bias, y, groups, stride, dilation, tile, epilogue=None):
    """Valid cross-correlation of ``xp`` with ``w`` into ``y`` (fully overwritten; ``_kernels.conv``).

    One task per (sample, output channel, output tile), in chunks on the worker pool unless the call is small.
    ``xp`` and ``y`` are C-contiguous: rows are addressed by flat unsigned offsets, so the inner loops (often a
    few elements long) carry no per-row view and no negative-index wrap-around test, and the unit-stride one
    vectorises. Each output row is the bias plus its terms in a fixed order (input channel, kD, kH, kW taps).
    """
    n_tasks = y.shape[0] * y.shape[1] * math.prod(-(-int(n) // int(t)) for n, t in zip(y.shape[2:], tile))
    run_tasks(correlate_tasks, n_tasks, y.size * w[0].size, (xp, w, bias, y, groups, stride, dilation, tile),
              _activation(y, groups, 1, tile, epilogue))


def depthwise(x, w, bias, y, stride, dilation, start, block):
    """Forward convolution with one input channel per group (``_kernels.depthwise``) into ``y`` (fully
    overwritten), x unpadded: the kernel pads and phase-splits the input of each task in a scratch of its own.

    One task per (sample, input channel, output depth, block of ``block = (rows, cols)`` outputs), in chunks on
    the worker pool unless the call is small. Each output element is the bias plus its terms in (kD, kH, kW)
    order whichever task or thread computes it, so the bits depend on neither ``block`` nor the thread count.
    """
    out_d, out_h, out_w = y.shape[2], y.shape[3], y.shape[4]
    n_tasks = x.shape[0] * x.shape[1] * out_d * -(-out_h // int(block[0])) * -(-out_w // int(block[1]))
    run_tasks(depthwise_tasks, n_tasks, y.size * w[0].size, (x, w, bias, y, stride, dilation, start, block))


def weight_grad(x, gy, gw, groups, stride, dilation, start):
    """Write ``gw`` (C_in, C_out // groups, kD, kH, kW) from x (N, C_in, D, H, W) and gy (N, C_out, oD, oH, oW)
    (``_kernels.grad``).

    One task per (input channel, output column, kD tap, kH tap), in chunks on the worker pool unless the call
    is small. Along the last axis the products of every tap are added into a row of partial sums (element-wise,
    so it vectorises) over all samples and rows; the row is summed at the end. The order of the terms is fixed,
    so results do not depend on the thread count.
    """
    n_tasks = gw.shape[0] * gw.shape[1] * gw.shape[2] * gw.shape[3]
    run_tasks(weight_grad_tasks, n_tasks, x.size * gw[0].size, (x, gy, gw, groups, stride, dilation, start))


def fill(x, z, stride, pad_before):
    """Zero-fill and pad ``x`` (N, C, D, H, W) into ``z``: ``z[.., i * stride + pad_before] = x[.., i]``
    (``_kernels.zerofill``).

    One task per (sample, channel) plane, in chunks on the worker pool unless ``z`` is small.
    """
    run_tasks(fill_planes, x.shape[0] * x.shape[1], z.size, (x, z, stride, pad_before))
