"""The direct kernels' parallel runs: ranges of tasks on fastdeconv's worker pool, never on numba's threading layer.

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

from .._model import SERIAL_WORK
from .._runtime import run_parallel
from .._threads import get_num_threads

# Chunks per worker thread: workers claim them one at a time (a worker slowed down by another process takes
# fewer), and each is one kernel call from Python (a few microseconds, its scratch allocated once); a chunk has
# at least CHUNK_WORK multiply-adds, so that small calls are not mostly that overhead.
CHUNKS_PER_THREAD = 4
CHUNK_WORK = 1_000_000


def run_tasks(kernel, n_tasks: int, work: int, args: tuple) -> None:
    """Run ``kernel(*args, lo, hi)`` over the tasks ``[0, n_tasks)``: in the calling thread when one thread is in
    use or the call is small (``work`` multiply-adds, or elements for a copy, below ``SERIAL_WORK``: handing out
    chunks would cost more than it saves), otherwise in contiguous chunks on the worker pool."""
    if n_tasks <= 0:
        return
    threads = get_num_threads()
    if threads == 1 or n_tasks == 1 or work < SERIAL_WORK:
        kernel(*args, 0, n_tasks)
        return
    n_chunks = min(n_tasks, CHUNKS_PER_THREAD * threads, max(threads, work // CHUNK_WORK))
    bounds = [(c * n_tasks // n_chunks, (c + 1) * n_tasks // n_chunks) for c in range(n_chunks)]

    def chunks(part):
        for lo, hi in part:
            kernel(*args, lo, hi)

    run_parallel(chunks, bounds)
