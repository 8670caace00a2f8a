"""Whether a variant's numba kernels can run now without compiling: compiled in this process, or in numba's cache.

The calibration times only candidates that are ready (issue: "never compile a candidate just to time it"):
compiling a kernel takes seconds, timing it takes milliseconds. A kernel is ready for a dtype when one of its
overloads for that dtype is compiled in this process (``dispatcher.signatures``) or is in numba's on-disk cache
(the dispatcher's cache index, keyed as numba keys it: signature, CPU and code hash), so that calling it only
loads it. Anything unexpected (not a numba dispatcher, a numba version with other internals, an unreadable or
foreign index file) answers "not ready": a wrong "no" only skips a measurement, a wrong "yes" would compile.

``compile_beside_all`` compiles kernels in a child interpreter into that cache, and ``compile_split`` uses it so
that a cold first call compiles a large kernel's callees on two cores (numba compiles one function at a time per
process).

Every kernel is made by this module's :func:`njit`, so that numba compiles (or loads from its cache) on a thread
of its own, which no signal interrupts, while the thread that needs the kernel waits (``_interrupts``): numba's
compiler and llvmlite take their locks in Python code, and a ``KeyboardInterrupt`` raised in there (a Ctrl-C
reaches the main thread, wherever it is) leaves them held and a compilation half-made, so that the next
compilation in another thread waits forever or fails ("no compiled object yet"). An interrupted caller returns
at once; the compilation finishes behind it, and the kernel is then compiled for everyone.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable

import numpy as np

from . import _interrupts


def ready(dispatchers: Iterable, dtype) -> bool:
    """Whether every numba dispatcher in ``dispatchers`` has a ``dtype`` overload compiled or cached.

    Parameters
    ----------
    dispatchers : iterable
        numba dispatchers (``@njit`` functions). An entry that is not a numba dispatcher is not ready.
    dtype : numpy dtype
        The floating-point dtype of the arrays the kernels would get.

    Returns
    -------
    bool
        False as well on any failure to tell.
    """
    try:
        from numba import from_dtype

        want = from_dtype(np.dtype(dtype))
        with _interrupts.deferred():  # (numba's cache key asks llvmlite for the CPU: its lock)
            return all(_one_ready(d, want) for d in dispatchers)
    except Exception:  # never let a readiness probe fail a call: "not ready" only skips a measurement
        return False


def groups_ready(groups: Iterable, dtype) -> bool:
    """Whether every group has a ready member: ``groups`` holds dispatchers or tuples of alternatives (a variant
    that calls one of several kernels depending on the geometry needs one of them)."""
    try:
        return all(any(ready((d,), dtype) for d in (g if isinstance(g, tuple) else (g,))) for g in groups)
    except Exception:
        return False


def _one_ready(dispatcher, want) -> bool:
    signatures = getattr(dispatcher, "signatures", None)
    if signatures is None or not hasattr(dispatcher, "py_func"):
        return False  # not a numba dispatcher
    if any(_matches(sig, want) for sig in signatures):
        return True
    index, index_key = _cache_index(dispatcher)
    for key in index:
        if isinstance(key, tuple) and key and _matches(key[0], want) and index_key(key[0]) == key:
            return True  # same signature, same CPU/target and same code: numba would load it
    return False


def _cache_index(dispatcher):
    """(the keys of numba's disk cache index of ``dispatcher``, the key numba would look up for a signature on
    this CPU and code); no keys when caching is off (cache=False or NUMBA_DISABLE_JIT), the index is missing,
    from another numba version or stale (source changed), or numba's internals differ."""
    cache = getattr(dispatcher, "_cache", None)
    load_index = getattr(getattr(cache, "_cache_file", None), "_load_index", None)
    index_key = getattr(cache, "_index_key", None)
    if load_index is None or index_key is None:
        return (), None
    codegen = dispatcher.targetctx.codegen()
    return tuple(load_index()), lambda signature: index_key(signature, codegen)


def _matches(sig, want) -> bool:
    """A signature for dtype ``want``: one of its float arrays has it, or it has no float array at all."""
    from numba.core import types

    floats = [t.dtype for t in sig if isinstance(t, types.Array) and isinstance(t.dtype, types.Float)]
    return not floats or want in floats


# A child interpreter that compiles one kernel for one signature into numba's on-disk cache. The signature
# travels pickled on stdin; the parent's sys.path goes along, so that the child imports the same fastdeconv.
# SIGINT gets Python's handler back: a child of a process that ignores it (a warm-up worker) would inherit that.
_CHILD = (
    "import importlib, pickle, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "for module, name, signature in pickle.load(sys.stdin.buffer):\n"
    "    getattr(importlib.import_module(module), name).compile(signature)\n"
)


class Beside:
    """A kernel compiling in a child process while this one works (see :func:`compile_beside_all`)."""

    def __init__(self, proc):
        self._proc = proc

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for the child; the kernel then loads from numba's cache. A child that fails or takes longer than
        ``timeout`` seconds (then killed) only means that the call compiles the kernel itself, as without one."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _end(proc)
        except BaseException:  # (an interrupt while waiting: the child must not outlive the call)
            _end(proc)
            raise

    def kill(self) -> None:
        """Stop the child (the call is being abandoned)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _end(proc)


def _end(proc) -> None:
    proc.kill()
    proc.wait()


_BESIDE = [True]  # whether this process may start a child to compile beside it (``no_children``)


def no_children() -> None:
    """Compile everything in this process from now on: for a process that is itself one of several compiling
    side by side (warm-up's and ``compare``'s workers), where a child would only take a core from another."""
    _BESIDE[0] = False


def compile_beside_all(pairs) -> Beside:
    """Start compiling ``(dispatcher, signature)`` pairs (numba types) one after the other in a child interpreter,
    so that this process can compile other kernels meanwhile (numba compiles one function at a time per process).

    Does nothing (``wait`` returns at once) unless numba's disk cache is on, the machine has a second core, this
    process may start children (``no_children``) and some pair is neither compiled here nor cached: the call then
    compiles or loads it as usual. Only the compile moves: the kernel, its cache entry and its results are the
    ones a call would make.
    """
    from .config import NUMBA_CACHE

    try:
        if (not _BESIDE[0] or not NUMBA_CACHE or (os.cpu_count() or 1) < 2 or not sys.executable
                or getattr(sys, "frozen", False)):
            return Beside(None)  # (a frozen or embedded interpreter's executable may not run ``-c``)
        todo = [(d.py_func.__module__, d.py_func.__name__, sig) for d, sig in pairs if not available(d, sig)]
        if not todo:
            return Beside(None)
        payload = pickle.dumps(todo)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        proc.stdin.write(payload)
        proc.stdin.close()
        return Beside(proc)
    except Exception:  # no child (none can start here, or numba internals differ): the call compiles as usual
        return Beside(None)


def compile_split(kernel, signature: tuple, here=(), beside=()) -> None:
    """Compile (or load) ``kernel`` for ``signature`` with its callees compiled on two cores first.

    numba compiles a kernel's callees one after the other, each into its own cache entry, before the kernel
    itself (which then optimizes them again with its own code). On a cold first call the ``beside`` callees
    (``(dispatcher, signature)`` pairs) compile in a child while this process compiles the ``here`` ones; the
    kernel's own compile then finds every callee compiled or cached. The pairs must be the signatures the
    kernel's calls have (a test compiles the kernel without a cache and compares): a wrong one only costs a
    needless compile. Nothing happens when the kernel is compiled or cached already.
    """
    if available(kernel, signature):
        return
    child = compile_beside_all(beside)
    try:
        for dispatcher, sig in here:
            compile_for(dispatcher, sig)
        child.wait()
    except BaseException:
        child.kill()
        raise
    compile_for(kernel, signature)


def available(dispatcher, signature: tuple) -> bool:
    """Whether ``dispatcher`` runs for exactly ``signature`` (numba types) without compiling: compiled in this
    process, or in numba's disk cache for this CPU and code. False on any failure to tell."""
    try:
        if signature in dispatcher.overloads:
            return True
        with _interrupts.deferred():  # (numba's cache key asks llvmlite for the CPU: its lock)
            index, index_key = _cache_index(dispatcher)
            return bool(index) and index_key(signature) in index
    except Exception:
        return False


# --------------------------------------------------------------------------- the compile thread


def njit(*args, **kwargs):
    """``numba.njit`` for fastdeconv's kernels: whenever a call needs the kernel compiled or loaded for its types,
    that happens on the compile thread (see the module docstring); calls of a compiled kernel are unchanged."""
    from numba import njit as numba_njit

    if len(args) == 1 and not kwargs and callable(args[0]):  # @njit
        return _on_compile_thread(numba_njit(args[0]))
    decorate = numba_njit(*args, **kwargs)  # @njit(...)
    return lambda func: _on_compile_thread(decorate(func))


def _on_compile_thread(dispatcher):
    """Route ``dispatcher``'s compilations to the compile thread: numba's dispatcher asks its own attribute
    ``_compile_for_args`` for the overload of argument types it has not compiled yet; without that attribute
    (another numba, ``NUMBA_DISABLE_JIT``) the dispatcher is left as it is."""
    original = getattr(dispatcher, "_compile_for_args", None)
    if original is None:
        return dispatcher

    def compile_for_args(*args, **kwargs):
        return run_compiling(original, *args, **kwargs)

    try:
        dispatcher._compile_for_args = compile_for_args
    except (AttributeError, TypeError):
        pass
    return dispatcher


def compile_for(dispatcher, signature):
    """``dispatcher.compile(signature)`` on the compile thread (the caller waits as for a call's compilation)."""
    return run_compiling(dispatcher.compile, signature)


class _Job:
    __slots__ = ("call", "done", "value", "error")


_jobs: queue.SimpleQueue = queue.SimpleQueue()
_compiler: list[threading.Thread] = []  # the compile thread, once started
_start_lock = threading.Lock()


def run_compiling(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (a numba compilation) on the compile thread, returning or raising what it does.

    The caller waits (``_interrupts.wait_released``): an interrupt ends the main thread's wait at once, and a pool
    worker's wait ends when its call is abandoned; the compilation goes on, one at a time, in call order (numba
    compiles one function at a time per process anyway). Called on the compile thread itself (numba re-entering
    ``_compile_for_args``), ``fn`` runs right there.
    """
    if _compiler and threading.get_ident() == _compiler[0].ident:
        return fn(*args, **kwargs)
    job = _Job()
    job.call, job.value, job.error = (fn, args, kwargs), None, None
    job.done = threading.Lock()
    job.done.acquire()
    if not _compiler:
        _start()
    _jobs.put(job)
    _interrupts.wait_released(job.done)
    if job.error is not None:
        raise job.error
    return job.value


def _start() -> None:
    with _interrupts.deferred():  # (Thread.start waits on a Python-level condition)
        with _start_lock:
            if not _compiler:
                thread = threading.Thread(target=_serve, name="fastdeconv-compile", daemon=True)
                thread.start()
                _compiler.append(thread)


def _serve() -> None:
    """The compile thread: runs the queued compilations, one after the other, for as long as the process lives.

    A daemon thread: an interrupted program exits without waiting for the compilation under way (numba writes its
    cache files to a temporary name first, then renames them, so a cut-off compilation leaves no broken entry).
    """
    while True:
        job = _jobs.get()
        fn, args, kwargs = job.call
        job.call = None
        try:
            job.value = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the waiting caller
            job.error = exc
        del fn, args, kwargs
        job.done.release()


def _forget_compiler() -> None:
    """In a forked child: the compile thread (and its queue's waiters) stayed in the parent."""
    global _jobs, _start_lock
    _jobs, _start_lock = queue.SimpleQueue(), threading.Lock()
    _compiler.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_compiler)
