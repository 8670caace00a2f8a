"""BLAS thread control: the one place fastdeconv sets a BLAS library's thread count.

:func:`limit_blas` (``fastdeconv.set_num_threads``) and :func:`single_threaded_blas` (around a parallel call of
``_runtime.run_parallel``) share one lock and one saved state, so neither undoes the other. It sits below both
``_threads`` (which calls :func:`limit_blas`) and ``_runtime`` (which runs its chunks inside
:func:`single_threaded_blas`) and imports neither.
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager

import numpy as np

from . import _interrupts

_lock = threading.Lock()
_blas_users = 0          # calls inside single_threaded_blas right now (any Python thread)
_blas_saved: list[int] = []  # the BLAS thread counts to restore when the last of them leaves
_controllers: list[tuple] = []

# The sides (M, K, N) of the single-precision product each BLAS runs when fastdeconv first sets them up, in as
# many threads at once as the pool has workers. OpenBLAS (0.3.30 and 0.3.31 with their Haswell kernel, on an AVX2
# host) ran products with up to ~256 columns and K >= 256 at 10 GFLOP/s against 36 on each of its buffers until
# that buffer had served one product with more columns; a buffer is taken per call, so two workers calling at
# once use two. Primed from one thread, the pool's second worker still ran at half speed (two threads: 21 + 25
# GFLOP/s); primed from two at once, 34 + 34. Same bits either way. Under 10 ms, once per process.
PRIMER = (128, 256, 384)
PRIMER_REPEATS = 3  # per thread and library: the threads' products overlap, each on a buffer of its own
PRIMER_TIMEOUT = 5.0  # seconds a priming thread waits for the others before it gives up (never a hang)


def _scipy_sgemm():
    """scipy's Fortran ``sgemm`` (the one numba's kernels call, scipy.linalg.cython_blas) as a ctypes function,
    which runs without the GIL, or None where it cannot be found."""
    try:
        capsule = _interrupts.import_module("scipy.linalg.cython_blas").__pyx_capi__["sgemm"]
    except (ImportError, AttributeError, KeyError):  # pragma: no cover - scipy is a dependency
        return None
    # (function objects of our own: setting argtypes on ctypes.pythonapi's would change them for everyone)
    get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
    get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))
    address = get_pointer(capsule, get_name(capsule))
    i, f = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_float)
    return ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, i, i, i, f, f, i, f, i, f, f, i)(address)


def scipy_sgemm_product(sgemm, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (float32, C order) through ``sgemm`` (:func:`_scipy_sgemm`): column-major, so it computes
    ``(b.T @ a.T).T``, the call numpy's matmul makes of the same arrays."""
    (m, k), n = a.shape, b.shape[1]
    c = np.empty((m, n), np.float32)
    ptr = ctypes.POINTER(ctypes.c_float)
    one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
    sides = [ctypes.c_int(v) for v in (n, m, k)]
    sgemm(b"N", b"N", *(ctypes.byref(v) for v in sides), ctypes.byref(one), b.ctypes.data_as(ptr),
          ctypes.byref(sides[0]), a.ctypes.data_as(ptr), ctypes.byref(sides[2]), ctypes.byref(zero),
          c.ctypes.data_as(ptr), ctypes.byref(sides[0]))
    return c


def _products() -> list:
    """The primer's product on each BLAS: numpy's, and scipy's (numba's kernels call it)."""
    m, k, n = PRIMER
    a, b = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
    out = [lambda: np.matmul(a, b)]
    sgemm = _scipy_sgemm()
    if sgemm is not None:
        out.append(lambda: scipy_sgemm_product(sgemm, a, b))
    return out


def _prime(workers: int) -> None:
    """Run ``PRIMER``'s product on every BLAS in ``workers`` threads at once (the calling one among them)."""
    products = _products()
    barrier = threading.Barrier(workers, timeout=PRIMER_TIMEOUT)

    def run():
        try:
            for product in products:
                barrier.wait()  # every thread's products run together, each on a buffer of its own
                for _ in range(PRIMER_REPEATS):
                    product()
        except threading.BrokenBarrierError:  # pragma: no cover - another thread stopped: nothing lost
            pass
        except Exception:  # pragma: no cover - priming only speeds BLAS up: a failure must not fail a call
            barrier.abort()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(workers - 1)]
    for t in threads:
        t.start()
    run()
    for t in threads:
        t.join(PRIMER_TIMEOUT)


def blas_controllers(refresh: bool = False) -> tuple:
    """threadpoolctl's controllers of every loaded BLAS (empty without threadpoolctl): found once, again with
    ``refresh`` (libraries loaded since, e.g. another package's BLAS)."""
    if _controllers and not refresh:
        return _controllers[0]
    with _interrupts.deferred():  # (imports and library scans, on the first call's path: see _interrupts)
        try:
            threadpoolctl = _interrupts.import_module("threadpoolctl")
        except ImportError:  # optional: numba threads are still set
            found = ()
        else:
            try:  # the BLAS numba's np.dot calls into (scipy's): loaded, so that it is controlled too
                _interrupts.import_module("scipy.linalg.cython_blas")
            except ImportError:  # pragma: no cover - scipy is a dependency
                pass
            found = tuple(threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers)
        if not _controllers:
            saved = [c.get_num_threads() for c in found]
            for c in found:  # (one thread each: the products' buffers are those a worker's calls take)
                _set_blas_threads(c, 1)
            try:
                _prime(max(1, int(_interrupts.import_module("numba").config.NUMBA_NUM_THREADS)))
            finally:
                for c, n in zip(found, saved):
                    _set_blas_threads(c, n)
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
    restored there, and the pool's workers keep theirs at one (:func:`single_threaded_worker`).
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


def single_threaded_worker() -> None:
    """In a new worker thread of the pool, which runs nothing but fastdeconv's chunks: a per-thread BLAS
    (OpenMP) stays at one thread there."""
    with _lock:
        for c in blas_controllers():
            if _per_thread(c):
                _set_blas_threads(c, 1)


def _forget_users() -> None:
    """In a forked child: the calls inside single_threaded_blas (and any lock another thread held) stayed in the
    parent."""
    global _lock, _blas_users
    _lock = threading.Lock()
    _blas_users = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_users)
