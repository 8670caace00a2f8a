"""The parallel runtime of the BLAS-backed variants: a worker pool, chunk claiming, single-threaded BLAS inside.

The GEMM variants (``scatter-gemm``, ``gather-gemm``, ``*-gemm-rows``, ``gather-gemm-cols``, ``gather-winograd``)
cut a call into chunks and hand them to :func:`run_parallel`, and so does the GEMM form of ``conv`` and of the
gradients; each worker runs its chunks with single-threaded BLAS, so the threads meet once per call instead of
at every GEMM, and every GEMM fastdeconv runs has the same bits whatever else runs. BLAS thread counts are set
in ``_blas`` only (:func:`_blas.single_threaded_blas` around every parallel call).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as _wait
from contextlib import contextmanager, nullcontext

from . import _interrupts
from ._blas import single_threaded_blas, single_threaded_worker
from ._threads import get_num_threads, max_threads

_lock = threading.Lock()  # guards the pool's creation
_executor: list[ThreadPoolExecutor] = []


def run_parallel(work, tasks: list) -> None:
    """Run ``work(chunks)`` on ``get_num_threads()`` workers that share ``tasks``, each claiming the next one.

    ``work`` iterates over the chunks it is given (a generator here) and sets up its scratch once. Workers claim
    chunks one at a time from a shared queue, in list order, so a worker slowed down by another process on its
    core simply takes fewer chunks. Each chunk writes its own output elements and computes them the same way
    whoever runs it, so the split never changes a result. With several workers, BLAS runs single-threaded
    inside them: the parallelism is across chunks, so the threads synchronise once per call instead of at
    every GEMM (on a busy machine every BLAS thread wake-up can cost a scheduler slice).

    BLAS runs single-threaded here whatever the worker count, a single chunk included: a BLAS library may add
    a product's terms in another order when it splits the product over its own threads (OpenBLAS's Haswell
    kernel does), and its thread count is process-wide, so a GEMM that used it would give other bits when
    another call holds it at one. One fixed configuration makes every GEMM's bits a function of its operands.

    An exception in the calling thread (a ``KeyboardInterrupt`` above all: signals reach the main thread only)
    stops the other workers at their next chunk (a worker still waiting for numba to compile a kernel stops
    waiting: ``_interrupts``), and this function returns (re-raising it) only once every worker of the call has
    stopped, however many more interrupts arrive meanwhile: afterwards nothing of this call writes into the
    output, so the next call into the same ``out=`` array is right. The hand-out and that wait take locks in
    Python code (``concurrent.futures``), so an interrupt meanwhile is deferred to their end rather than leaving
    one held; only the caller's own chunks run interruptible.
    """
    workers = min(get_num_threads(), len(tasks))
    if workers <= 1:
        with single_threaded_blas():
            work(tasks)
        return
    queue = iter(tasks)
    lock = threading.Lock()
    stop = [False]  # set when the calling thread leaves its own share (done, or interrupted)
    abandoned = [False]  # set when it leaves with an exception: a worker waiting for a compilation gives up

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
        narrow = time.monotonic() < _narrow_until[0]
        started: list[float] = []  # when each worker began (perf_counter): a late one turns the narrowing on
        handed = time.perf_counter()
        with _workers_off(current_cpu()) if narrow else nullcontext():
            completed = False
            try:
                with _interrupts.deferred():
                    for _ in range(workers - 1):
                        futures.append(pool.submit(_interrupts.run_abandonable, abandoned, _timed, started, work,
                                                   claim()))
                work(claim())
                completed = True
            finally:
                stop[0] = True  # (the queue is empty unless the caller was interrupted)
                abandoned[0] = not completed
                _wait_all(futures)
        if not narrow and started and max(started) - handed > LATE_WORKER:
            _narrow_until[0] = time.monotonic() + NARROW_FOR
        for f in futures:
            f.result()  # a worker's exception


def _timed(started: list, work, chunks) -> None:
    started.append(time.perf_counter())
    work(chunks)


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


# A worker that starts this many seconds after the hand-off waited behind the caller on its CPU (a wake-up on an idle
# CPU takes tens of microseconds; a queued one, up to a scheduler slice): the calls of the next NARROW_FOR seconds
# keep the workers off the caller's CPU (``_workers_off``), which costs two affinity changes per pool thread and
# the migrations they cause (~60 us a call), so it is not done while hand-offs are prompt.
LATE_WORKER = 1e-3
NARROW_FOR = 0.5
_narrow_until = [0.0]  # (time.monotonic) the narrowing is on until then

_pool_tids: list[int] = []  # the OS thread ids of the pool's threads
_narrowed: dict[int, list] = {}  # a pool thread narrowed now: [its mask before, calls that narrowed it]
_affinity_lock = threading.Lock()
_NARROW_AT_MOST = 7  # pool threads narrowed per call: two affinity calls each, ~1.3 µs apiece


@contextmanager
def _workers_off(cpu: int):
    """Keep the pool's threads off ``cpu``, the caller's, for the length of a call; their masks are restored.
    :func:`run_parallel` does so for a while after a worker started late (``LATE_WORKER``), not on every call.

    Right after another library's thread pool kept every core busy (torch, onnxruntime, TensorFlow, JAX), and
    for tens of milliseconds after, Linux on a virtual machine may treat an idle CPU as unavailable and wake
    a thread on the CPU of the thread that woke it. Every hand-off from the caller to a worker is such a
    wake-up (the chunks handed out, then each time the caller lets go of the GIL), so the worker lands behind
    the caller, which is running its own share, and waits there for up to a scheduler slice while the other
    CPU idles: the call takes up to 2x as long. Narrowing the workers' affinity to the other CPUs for the
    call (a worker queued on the caller's CPU moves at once) leaves the scheduler no such choice; the caller's
    own thread is never touched, and nothing stays pinned between calls. Concurrent calls share a narrowing:
    the last of them to end restores the mask the thread had before the first. A pool larger than
    ``_NARROW_AT_MOST`` threads is left alone (the cost grows with it, and one CPU of many matters less).
    """
    mine = []
    if cpu >= 0 and len(_pool_tids) <= _NARROW_AT_MOST:
        with _affinity_lock:
            for tid in _pool_tids:
                if tid in _narrowed:
                    _narrowed[tid][1] += 1
                    mine.append(tid)
                    continue
                try:
                    mask = os.sched_getaffinity(tid)
                    if cpu not in mask or len(mask) < 2:
                        continue
                    os.sched_setaffinity(tid, mask - {cpu})
                except OSError:  # a sandbox refusing the call, or a thread that has ended
                    continue
                _narrowed[tid] = [mask, 1]
                mine.append(tid)
    try:
        yield
    finally:
        if mine:
            with _affinity_lock:
                for tid in mine:
                    entry = _narrowed[tid]
                    entry[1] -= 1
                    if entry[1] == 0:
                        del _narrowed[tid]
                        try:
                            os.sched_setaffinity(tid, entry[0])
                        except OSError:
                            pass


def _register_worker() -> None:
    with _affinity_lock:
        _pool_tids.append(threading.get_native_id())
    single_threaded_worker()


def _wait_all(futures) -> None:
    """Wait until every future is done, even when interrupts arrive meanwhile (deferred: raised after, unless
    the call is already leaving with one). The workers stop at their next chunk, so the wait is short."""
    with _interrupts.deferred():
        _wait(futures)


def _pool() -> ThreadPoolExecutor:
    with _lock:
        if not _executor:
            _executor.append(ThreadPoolExecutor(max_workers=max(1, max_threads() - 1),
                                                thread_name_prefix="fastdeconv",
                                                initializer=_register_worker))
        return _executor[0]


def _forget_pool() -> None:
    """In a forked child: the pool's threads (and any lock another thread held) stayed in the parent."""
    global _lock, _affinity_lock
    _lock, _affinity_lock = threading.Lock(), threading.Lock()
    _executor.clear()
    _pool_tids.clear()
    _narrowed.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
