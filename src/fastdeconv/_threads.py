"""Thread count of fastdeconv's parallel kernels (numba) and of the BLAS they call.

Numba keeps its thread count per *calling* Python thread (``numba.set_num_threads`` is thread-local and a
new thread starts at ``NUMBA_NUM_THREADS``). :func:`set_num_threads` therefore records a process-wide value
and :func:`apply_num_threads` re-applies it cheaply in whichever thread makes a call, so the setting holds
for calls from worker threads too. ``NUMBA_NUM_THREADS`` (read by numba at import) is the upper bound.
BLAS pools (OpenBLAS, MKL, ...) are limited through threadpoolctl when it is installed (``_blas``).
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from ._blas import limit_blas
from ._interrupts import deferred

_lock = threading.Lock()
_setting: int | None = None  # None: numba's default (NUMBA_NUM_THREADS) in every thread
_launched = False  # numba's threading layer started (by _launch)
_generation = 0  # bumped by every set_num_threads; each thread remembers the generation it applied
_local = threading.local()


def max_threads() -> int:
    """The largest allowed thread count: numba's launch-time pool size (``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for fastdeconv's kernels and the BLAS library they call, in every Python thread.

    Parameters
    ----------
    n : int
        Number of threads, ``1 <= n <= NUMBA_NUM_THREADS`` (numba's pool size, by default the number of
        CPU cores; set the environment variable before the process starts to change the upper bound).

    Raises
    ------
    TypeError
        ``n`` is not an int.
    ValueError
        ``n`` is outside ``[1, NUMBA_NUM_THREADS]``.

    Examples
    --------
    >>> import fastdeconv as fd
    >>> fd.set_num_threads(1)
    >>> fd.get_num_threads()
    1
    """
    global _setting, _generation
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int (a number of threads), got {n!r}")
    n = int(n)
    limit = max_threads()
    if not 1 <= n <= limit:
        raise ValueError(f"n must be between 1 and NUMBA_NUM_THREADS = {limit} (numba's thread pool size), got {n}")
    if not _launched:
        _launch()
    with _lock:
        _setting = n
        _generation += 1
        numba.set_num_threads(n)
        _local.generation = _generation
        limit_blas(n)


def get_num_threads() -> int:
    """The number of threads a fastdeconv call made from this Python thread uses.

    Returns
    -------
    int
        The value given to :func:`set_num_threads`, or numba's current count for this thread when it was
        never called (``NUMBA_NUM_THREADS`` by default).
    """
    if _setting is not None:
        return _setting
    if not _launched:
        _launch()
    return int(numba.get_num_threads())


def apply_num_threads() -> None:
    """Make numba in the calling Python thread use the process-wide setting (cheap when already applied).

    Called before a kernel launch, so that a Python thread other than the one that called
    :func:`set_num_threads` (numba's own setting is per thread) uses the same count.
    """
    if _setting is not None and getattr(_local, "generation", -1) != _generation:
        if not _launched:
            _launch()
        numba.set_num_threads(_setting)
        _local.generation = _generation


def _launch() -> None:
    """Start numba's threading layer (its first thread query does), a Ctrl-C meanwhile deferred: it loads the
    layer's library and registers its symbols with llvmlite, under llvmlite's lock (``_interrupts``)."""
    global _launched
    with deferred():
        numba.get_num_threads()
    _launched = True
