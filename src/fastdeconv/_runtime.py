"""The parallel runtime of the BLAS-backed variants: a worker pool, chunk claiming, BLAS thread control.

The GEMM variants (``scatter-gemm``, ``gather-gemm``, ``*-gemm-rows``, ``gather-gemm-cols``, ``gather-winograd``)
cut a call into chunks and hand them to :func:`run_parallel`; each worker runs its chunks with single-threaded
BLAS, so the threads meet once per call instead of at every GEMM. BLAS thread counts are set here only:
:func:`limit_blas` (``fastdeconv.set_num_threads``) and :func:`single_threaded_blas` (around a parallel call)
share one lock and one saved state, so neither undoes the other.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as _wait
from contextlib import contextmanager

from ._threads import get_num_threads, max_threads

_lock = threading.Lock()
_blas_users = 0          # calls inside single_threaded_blas right now (any Python thread)
_blas_saved: list[int] = []  # the BLAS thread counts to restore when the last of them leaves
_executor: list[ThreadPoolExecutor] = []


def run_parallel(work, tasks: list) -> None:
    """Run ``work(chunks)`` on ``get_num_threads()`` workers that share ``tasks``, each claiming the next one.

    ``work`` iterates over the chunks it is given (a generator here) and sets up its scratch once. Workers claim
    chunks one at a time from a shared queue, in list order, so a worker slowed down by another process on its
    core simply takes fewer chunks. Each chunk writes its own output elements and computes them the same way
    whoever runs it, so the split never changes a result. With several workers, BLAS runs single-threaded
    inside them: the parallelism is across chunks, so the threads synchronise once per call instead of at
    every GEMM (on a busy machine every BLAS thread wake-up can cost a scheduler slice).

    An exception in the calling thread (a ``KeyboardInterrupt`` above all: signals reach the main thread only)
    stops the other workers at their next chunk, and this function returns (re-raising it) only once every
    worker of the call has stopped, however many more interrupts arrive meanwhile: afterwards nothing of this
    call writes into the output, so the next call into the same ``out=`` array is right.
    """
    threads = get_num_threads()
    workers = min(threads, len(tasks))
    if workers <= 1:
        if threads == 1:  # one thread in use (set_num_threads(1), NUMBA_NUM_THREADS=1): BLAS too
            with single_threaded_blas():
                work(tasks)
        else:  # a single chunk: BLAS may use its own threads
            work(tasks)
        return
    queue = iter(tasks)
    lock = threading.Lock()
    stop = [False]  # set when the calling thread leaves its own share (done, or interrupted)

    def claim():
        while True:
            with lock:
                task = None if stop[0] else next(queue, None)
            if task is None:
                return
            yield task

    with single_threaded_blas():
        pool = _pool()
        futures = []
        here = current_cpu()
        try:
            for _ in range(workers - 1):
                futures.append(pool.submit(_work_elsewhere, work, claim(), here))
            work(claim())
        finally:
            stop[0] = True  # (the queue is empty unless the caller was interrupted)
            _wait_all(futures)
        for f in futures:
            f.result()  # a worker's exception


def _libc_getcpu():
    try:
        f = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):  # not glibc/musl on Linux: no placement check
        return None
    f.restype, f.argtypes = ctypes.c_int, []
    return f


_getcpu = _libc_getcpu() if hasattr(os, "sched_setaffinity") else None


def current_cpu() -> int:
    """The CPU the calling thread runs on, or -1 where the OS does not say."""
    return _getcpu() if _getcpu is not None else -1


def _work_elsewhere(work, chunks, caller_cpu: int) -> None:
    """A worker's share of :func:`run_parallel`, first moved off the caller's CPU if it woke up there.

    Right after another library's thread pool kept every core busy (torch, onnxruntime, TensorFlow, JAX),
    Linux often wakes the worker on the CPU of the thread that woke it, the caller, which is running its own
    share, although another CPU is idle: both then share one core and the call takes 1.5-2x as long, for tens
    of milliseconds. Narrowing this thread's affinity to the other CPUs migrates it at once; the mask is
    restored straight away, so nothing stays pinned and a later wake-up finds this CPU as its previous one.
    The caller's thread is never touched.
    """
    if caller_cpu >= 0 and current_cpu() == caller_cpu:
        try:
            allowed = os.sched_getaffinity(0)
            others = allowed - {caller_cpu}
            if others:
                os.sched_setaffinity(0, others)
                os.sched_setaffinity(0, allowed)
        except OSError:  # a sandbox refusing the call: run where we are
            pass
    work(chunks)


def _wait_all(futures) -> None:
    """Wait until every future is done, even when interrupts arrive meanwhile (the first is raised after)."""
    interrupt = None
    while True:
        try:
            _wait(futures)
            break
        except BaseException as exc:  # a second KeyboardInterrupt: keep waiting for the workers
            interrupt = interrupt or exc
    if interrupt is not None:
        raise interrupt


def _pool() -> ThreadPoolExecutor:
    with _lock:
        if not _executor:
            _executor.append(ThreadPoolExecutor(max_workers=max(1, max_threads() - 1),
                                                thread_name_prefix="fastdeconv"))
        return _executor[0]


_controllers: list[tuple] = []


def blas_controllers(refresh: bool = False) -> tuple:
    """threadpoolctl's controllers of every loaded BLAS (empty without threadpoolctl): found once, again with
    ``refresh`` (libraries loaded since, e.g. another package's BLAS)."""
    if _controllers and not refresh:
        return _controllers[0]
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: numba threads are still set
        found = ()
    else:
        try:  # the BLAS numba's np.dot calls into (scipy's): loaded, so that it is controlled too
            import scipy.linalg.cython_blas  # noqa: F401
        except ImportError:  # pragma: no cover - scipy is a dependency
            pass
        found = tuple(ThreadpoolController().select(user_api="blas").lib_controllers)
    _controllers[:] = [found]
    return found


def limit_blas(n: int) -> None:
    """Let every loaded BLAS use ``n`` threads (``set_num_threads``). While parallel calls run with
    single-threaded BLAS, ``n`` becomes what they restore when the last of them ends."""
    with _lock:
        controllers = blas_controllers(refresh=True)
        if _blas_users:
            _blas_saved[:] = [n] * len(controllers)
            return
        for c in controllers:
            c.set_num_threads(n)


@contextmanager
def single_threaded_blas():
    """BLAS on one thread while any fastdeconv call needs it (reference-counted across Python threads)."""
    global _blas_users
    with _lock:
        if _blas_users == 0:
            controllers = blas_controllers()
            _blas_saved[:] = [c.get_num_threads() for c in controllers]
            for c in controllers:
                c.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _blas_users -= 1
            if _blas_users == 0:  # (the controllers now: a set_num_threads meanwhile may have found more)
                for c, n in zip(blas_controllers(), _blas_saved):
                    c.set_num_threads(n)
