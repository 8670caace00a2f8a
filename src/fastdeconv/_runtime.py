"""The parallel runtime of the BLAS-backed variants: a worker pool, chunk claiming, BLAS thread control.

The GEMM variants (``scatter-gemm``, ``gather-gemm``, ``*-gemm-rows``, ``gather-gemm-cols``, ``gather-winograd``)
cut a call into chunks and hand them to :func:`run_parallel`, and so does the GEMM form of ``conv`` and of the
gradients; each worker runs its chunks with single-threaded BLAS, so the threads meet once per call instead of
at every GEMM, and every GEMM fastdeconv runs has the same bits whatever else runs. BLAS thread counts are set
here only:
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

from . import _interrupts
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
        with _workers_off(current_cpu()):
            completed = False
            try:
                with _interrupts.deferred():
                    for _ in range(workers - 1):
                        futures.append(pool.submit(_interrupts.run_abandonable, abandoned, work, claim()))
                work(claim())
                completed = True
            finally:
                stop[0] = True  # (the queue is empty unless the caller was interrupted)
                abandoned[0] = not completed
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


_pool_tids: list[int] = []  # the OS thread ids of the pool's threads
_narrowed: dict[int, list] = {}  # a pool thread narrowed now: [its mask before, calls that narrowed it]
_affinity_lock = threading.Lock()
_NARROW_AT_MOST = 7  # pool threads narrowed per call: two affinity calls each, ~1.3 µs apiece


@contextmanager
def _workers_off(cpu: int):
    """Keep the pool's threads off ``cpu``, the caller's, for the length of a call; their masks are restored.

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
    with _lock:  # the pool runs nothing but fastdeconv's chunks: a per-thread BLAS stays at one thread here
        for c in blas_controllers():
            if _per_thread(c):
                _set_blas_threads(c, 1)


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
    global _lock, _affinity_lock, _blas_users
    _lock, _affinity_lock = threading.Lock(), threading.Lock()
    _executor.clear()
    _pool_tids.clear()
    _narrowed.clear()
    _blas_users = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


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


def _per_thread(controller) -> bool:
    """Whether this BLAS keeps its thread count per calling thread (an OpenMP build: each thread's own ICV)."""
    return getattr(controller, "threading_layer", None) == "openmp"


def _set_blas_threads(controller, n: int) -> None:
    """Set a BLAS's thread count from whichever Python thread calls.

    threadpoolctl lets only the first Python thread that set a process-wide pool (OpenBLAS on pthreads) set it
    again, and silently ignores the others: a fastdeconv call from a second Python thread would then run its
    GEMMs on the BLAS's own threads, with other bits. Its unguarded setter is used where it has one; the
    callers here serialise every change under ``_lock``.
    """
    getattr(controller, "_real_set_num_threads", controller.set_num_threads)(n)


def limit_blas(n: int) -> None:
    """Let every loaded BLAS use ``n`` threads (``set_num_threads``). While parallel calls run with
    single-threaded BLAS, ``n`` becomes what they restore when the last of them ends."""
    with _lock:
        controllers = blas_controllers(refresh=True)
        if _blas_users:
            _blas_saved[:] = [n] * len(controllers)
            for c in controllers:
                if _per_thread(c):
                    _set_blas_threads(c, n)
            return
        for c in controllers:
            _set_blas_threads(c, n)


@contextmanager
def single_threaded_blas():
    """BLAS on one thread while any fastdeconv call needs it, from any Python thread.

    A process-wide BLAS pool is set to one thread when the first such call starts and restored when the last
    ends (reference-counted under ``_lock``); a per-thread one (OpenMP) is set in the calling thread and
    restored there, and the pool's workers keep theirs at one (``_register_worker``).
    """
    global _blas_users
    local = []
    with _lock:
        controllers = blas_controllers()
        if _blas_users == 0:
            _blas_saved[:] = [c.get_num_threads() for c in controllers]
        for c in controllers:
            if _per_thread(c):
                local.append((c, c.get_num_threads()))
                _set_blas_threads(c, 1)
            elif _blas_users == 0:
                _set_blas_threads(c, 1)
        _blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _blas_users -= 1
            for c, n in local:
                _set_blas_threads(c, n)
            if _blas_users == 0:  # (the controllers now: a set_num_threads meanwhile may have found more)
                for c, n in zip(blas_controllers(), _blas_saved):
                    if not _per_thread(c):
                        _set_blas_threads(c, n)
