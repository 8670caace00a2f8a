"""Whether a variant's numba kernels can run now without compiling: compiled in this process, or in numba's cache.

The calibration times only candidates that are ready (issue: "never compile a candidate just to time it"):
compiling a kernel takes seconds, timing it takes milliseconds. A kernel is ready for a dtype when one of its
overloads for that dtype is compiled in this process (``dispatcher.signatures``) or is in numba's on-disk cache
(the dispatcher's cache index, keyed as numba keys it: signature, CPU and code hash), so that calling it only
loads it. Anything unexpected (not a numba dispatcher, a numba version with other internals, an unreadable or
foreign index file) answers "not ready": a wrong "no" only skips a measurement, a wrong "yes" would compile.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


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
    cache = getattr(dispatcher, "_cache", None)
    load_index = getattr(getattr(cache, "_cache_file", None), "_load_index", None)
    index_key = getattr(cache, "_index_key", None)
    if load_index is None or index_key is None:
        return False  # caching off (cache=False or NUMBA_DISABLE_JIT), or other numba internals
    index = load_index()  # {} when missing, from another numba version, or stale (source changed)
    if not index:
        return False
    codegen = dispatcher.targetctx.codegen()
    for key in index:
        if isinstance(key, tuple) and key and _matches(key[0], want) and index_key(key[0], codegen) == key:
            return True  # same signature, same CPU/target and same code: numba would load it
    return False


def _matches(sig, want) -> bool:
    """A signature for dtype ``want``: one of its float arrays has it, or it has no float array at all."""
    from numba.core import types

    floats = [t.dtype for t in sig if isinstance(t, types.Array) and isinstance(t.dtype, types.Float)]
    return not floats or want in floats


def variant_ready(variant: str, dtype) -> bool:
    """Whether ``variant``'s kernels (the registry's ``kernels()``) run for ``dtype`` without compiling (False for
    an unknown variant)."""
    from . import _registry

    try:
        return groups_ready(_registry.get(variant).kernels(), dtype)
    except Exception:
        return False
