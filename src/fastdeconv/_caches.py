"""The package's in-memory caches, all registered in one place and emptied by one call.

Everything fastdeconv derives from a plan (the plan itself, the planner's choice, a prepared call, a variant's
tables and schedules) is memoised by :func:`memo` (a function of hashable arguments) or held in a :class:`Table`
(a dict the hot path reads with one lookup). Both are bounded, safe to use from several threads at once, and
registered here, so that :func:`clear_caches` (public as :func:`fastdeconv.clear_caches`) empties every one of
them and no module has to know, or reach into, another module's cache.

The caches hold derived values only: emptying them never changes a result, only makes the next calls derive
them again. (What a process decided from measurements is wisdom, not a cache: :mod:`fastdeconv.calibration`.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_clears: list[Callable[[], None]] = []
_lock = threading.Lock()


def memo(maxsize: int) -> Callable[[F], F]:
    """Memoise a function of hashable arguments in a registered least-recently-used cache of ``maxsize`` entries.

    ``functools.lru_cache`` underneath: bounded, thread-safe (two threads missing the same key at once may both
    compute it; each result is a pure function of the key, so either one kept is right), and a hit costs one C
    call.
    """
    if not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")

    def wrap(func: F) -> F:
        cached = lru_cache(maxsize=maxsize)(func)
        register(cached.cache_clear)
        return cached  # type: ignore[return-value]

    return wrap


class Table(dict):
    """A registered dict bounded to ``maxsize`` entries, for a hot path whose hit must be one ``dict.get``.

    Reads are plain dict lookups (atomic under the interpreter's rules); :meth:`put` inserts under a lock and,
    when full, drops the oldest entries (insertion order) rather than emptying the table.
    """

    def __init__(self, maxsize: int):
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        super().__init__()
        self.maxsize = maxsize
        self._lock = threading.Lock()
        register(self.clear)

    def put(self, key, value):
        """Insert ``value`` under ``key`` (the entry another thread put first is kept) and return the kept one."""
        with self._lock:
            kept = self.setdefault(key, value)
            while len(self) > self.maxsize:
                del self[next(iter(self))]
            return kept

    def clear(self) -> None:
        with self._lock:
            super().clear()

    __hash__ = object.__hash__  # (registered by identity)


def register(clear: Callable[[], None]) -> None:
    """Add a cache's clear function to the ones :func:`clear_caches` calls."""
    with _lock:
        _clears.append(clear)


def clear_caches() -> None:
    """Empty fastdeconv's in-memory caches: plans, the planner's choices, prepared calls, the variants' tables.

    Results never change: later calls derive what they need again (the first call of each shape pays that once
    more). The variant a process decided for a shape is kept (clear it with
    :func:`fastdeconv.calibration.clear`, which also calls this), and so is what a ``ConvTranspose`` prepared
    for its input shapes (it belongs to the operator).

    Examples
    --------
    >>> import fastdeconv as fd
    >>> fd.clear_caches()
    """
    with _lock:
        clears = list(_clears)
    for clear in clears:
        clear()
