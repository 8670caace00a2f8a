"""Ctrl-C (SIGINT) in the middle of fastdeconv's work: where an interrupt may land, and how the rest waits for it.

Python runs a signal handler in the main thread, between two bytecodes of whatever Python code runs there, and the
default handler raises ``KeyboardInterrupt`` right there. Library code that takes a lock in Python (numba's
compiler, llvmlite's lock around every LLVM call, ``concurrent.futures``' conditions, the import system) is then
left with the lock held or its state half-changed, and another thread blocks on it forever. So:

- numba compiles fastdeconv's kernels on a thread of its own (``_compiled``), which no signal interrupts; the
  caller waits for it on a plain lock, whose acquire an interrupt ends at once with nothing held;
- the short stretches of bookkeeping that take such locks in the main thread run :class:`deferred`: a SIGINT
  arriving meanwhile is noted and handed to the installed handler when the stretch ends;
- a pool worker waiting for a compilation gives up (:class:`Abandoned`) as soon as the caller of its call has left
  with an exception (:func:`run_abandonable`), so that the caller's wait for its workers ends within a chunk;
- a module imported while a call runs (a lazy dependency: the BLAS controls, scipy.sparse) is imported by
  :func:`import_module`, deferred: an import cut short in the main thread can leave the import system's own
  locks taken or a waiter unwoken, and the compile thread, which imports as numba loads kernels, then waits on
  them forever (and a SIGINT landing in the import system's clean-up callbacks is dropped, not raised);
- a call into a caller's ``out=`` array leaves it untouched or complete (``_api.Prepared``): the first run of a
  dispatch, which loads or compiles its kernels, writes a private array, and the later ones write ``out`` with
  SIGINT :class:`deferred` until their computation has ended, as a NumPy function does.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading

try:  # the C module under ``signal``: ~0.3 µs a call, where ``signal``'s enum conversions take ~3 µs
    import _signal as _sig
except ImportError:  # pragma: no cover - another Python implementation
    _sig = signal

_SIGINT = int(signal.SIGINT)
_local = threading.local()


class deferred:
    """``with deferred():`` a SIGINT arriving in the block is delivered when the block ends, not inside it.

    Only the main thread receives signals; elsewhere (and where the installed handler was not set from Python, so
    that it could not be put back) this does nothing. The handler installed when the block began gets the signal
    at the end: the default one raises ``KeyboardInterrupt`` there (not when the block ends with one already). Use
    it only around short stretches: an interrupt waits for the block.
    """

    __slots__ = ("_previous", "_frame")

    def __enter__(self) -> deferred:
        self._previous = self._frame = None
        if threading.get_ident() != threading.main_thread().ident:
            return self
        previous = _sig.getsignal(_SIGINT)
        if previous is None:
            return self
        try:
            _sig.signal(_SIGINT, self._note)
        except ValueError:  # (not the main interpreter)
            return self
        self._previous = previous
        return self

    def _note(self, signum, frame) -> None:
        self._frame = frame if frame is not None else sys._getframe(0)

    def __exit__(self, kind, value, traceback) -> bool:
        previous, frame = self._previous, self._frame
        if previous is None:
            return False
        self._previous = self._frame = None
        _sig.signal(_SIGINT, previous)
        if frame is not None and not (kind is not None and issubclass(kind, KeyboardInterrupt)):
            _deliver(previous, frame)
        return False


def _deliver(handler, frame) -> None:
    """Hand a SIGINT noted under :class:`deferred` to ``handler`` (installed again by now)."""
    if handler is _sig.default_int_handler:
        raise KeyboardInterrupt
    if handler == _sig.SIG_IGN:
        return
    if handler == _sig.SIG_DFL:  # the default action: the process ends by the signal
        signal.raise_signal(_SIGINT)
        return
    handler(_SIGINT, frame)


def import_module(name: str):
    """``importlib.import_module(name)`` with SIGINT :class:`deferred` while the module is actually loaded (an
    already imported module is returned at once). What fastdeconv imports after its own import, on a call's path,
    goes through here: see the module docstring."""
    module = sys.modules.get(name)
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        return module
    with deferred():
        return importlib.import_module(name)


class Abandoned(BaseException):
    """A pool worker stops waiting for a compilation: the caller of its call has left (an interrupt, an error).

    A ``BaseException``, so that no ``except Exception`` between the kernel call and the worker turns it into a
    fallback that writes into the abandoned call's output.
    """


def run_abandonable(flag: list, work, *args):
    """``work(*args)`` in a pool worker of a call whose caller sets ``flag[0]`` when it leaves with an exception:
    a wait for a compilation in ``work`` then raises :class:`Abandoned` (see :func:`wait_released`)."""
    previous = getattr(_local, "flag", None)
    _local.flag = flag
    try:
        return work(*args)
    finally:
        _local.flag = previous


_POLL = 0.02  # seconds between two looks of an abandonable wait at its flag


def wait_released(done: threading.Lock) -> None:
    """Wait until another thread releases ``done`` (held when this is called).

    In the main thread an interrupt ends the wait at once (a lock acquire is interruptible and takes nothing when
    interrupted); in a pool worker of an abandoned call it ends with :class:`Abandoned`.
    """
    flag = getattr(_local, "flag", None)
    if flag is None:
        done.acquire()
        return
    while not done.acquire(timeout=_POLL):
        if flag[0]:
            raise Abandoned


# --------------------------------------------------------------------------- worker processes (the command line)


def results_as_completed(futures):
    """Yield ``(True, result)`` or ``(False, exception)`` for each of ``futures`` as it completes.

    The calling thread waits in a C-level queue, which an interrupt ends at once with nothing held; the futures'
    own conditions (Python-level locks a worker process's result is delivered under) are only ever waited on by a
    helper thread.
    """
    import queue
    from concurrent.futures import as_completed

    futures = list(futures)
    results: queue.SimpleQueue = queue.SimpleQueue()

    def collect():
        for future in as_completed(futures):
            try:
                results.put((True, future.result()))
            except BaseException as exc:  # handed over (a cancelled future included)
                results.put((False, exc))

    with deferred():  # (Thread.start waits on a Python-level condition)
        threading.Thread(target=collect, name="fastdeconv-results", daemon=True).start()
    for _ in futures:
        yield results.get()


def stop_workers(pool, grace: float = 1.0) -> None:
    """End a ``ProcessPoolExecutor`` now, without waiting for its work (a Ctrl-C): queued work is cancelled and
    every worker is terminated (SIGTERM, then SIGKILL after ``grace`` seconds).

    A worker cut off mid-compilation leaves numba's cache valid: numba writes a cache file under a temporary name
    and renames it. A second Ctrl-C meanwhile is deferred to the end.
    """
    with deferred():
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            try:
                process.terminate()
            except (OSError, ValueError):  # (already gone)
                pass
        pool.shutdown(wait=False, cancel_futures=True)
        import time

        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join(grace)
            except (OSError, ValueError):
                pass
