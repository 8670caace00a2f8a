"""One cheap pass over an array: its largest magnitude, or infinity when it holds a NaN or an infinity.

The variants that multiply values the definition does not have (Winograd's transforms add inputs before
multiplying; the im2col / padded-row variants multiply padding zeros by weights) give the definition's result
only on bounded, finite values; ``_api`` runs this scan first and routes other inputs to an exact variant.

The scan reads the float's bits as an unsigned integer with the sign bit cleared: finite magnitudes order like
their bit patterns, and every infinity or NaN lies above the largest finite one. An integer max reduction
vectorizes (a floating-point max with NaN semantics does not without fast-math, which stays off); large arrays
are split over the worker pool (``_runtime.run_parallel``); the kernel: ``_kernels/scan.py``.
"""

from __future__ import annotations

import numpy as np

from ._kernels.scan import MASKS, max_bits
from ._runtime import run_parallel
from ._threads import get_num_threads

# Elements from which the scan runs on the worker pool: one core streams through it near the memory bandwidth,
# so only arrays far beyond the caches gain from a second one
PARALLEL_ELEMENTS = 1 << 22
_CHUNKS = 4


def _max_bits_of(a: np.ndarray):
    utype, mask, inf_bits = MASKS[a.dtype.itemsize]
    bits = a.reshape(-1).view(utype)
    n = bits.shape[0]
    threads = get_num_threads()
    if n < PARALLEL_ELEMENTS or threads == 1:
        return max_bits(bits, 0, n, mask), inf_bits, utype
    # slices of the array on the worker pool, each one call of the serial, GIL-free kernel (a ``parallel=True``
    # twin would be a second, costlier compilation); the largest of their maxima is the same whatever the split
    parts = [(c * n // _CHUNKS, (c + 1) * n // _CHUNKS) for c in range(_CHUNKS)]
    found = []

    def work(part):
        for lo, hi in part:
            found.append(max_bits(bits, lo, hi, mask))  # (list.append is atomic under the GIL)

    run_parallel(work, parts)
    return max(found), inf_bits, utype


def max_abs(a: np.ndarray) -> float:
    """``max(|a|)`` of a C-contiguous float32/float64 array, ``inf`` when it holds a NaN or an infinity (0 when
    empty)."""
    m, inf_bits, utype = _max_bits_of(a)
    if m >= inf_bits:
        return float("inf")
    return float(np.array(m, utype).view(a.dtype))


def finite_weights(plan, x5: np.ndarray, w_max: float) -> bool:
    """``Variant.check`` of the variants that multiply padding zeros by weights (terms the definition does not
    have: ``gather-gemm``'s im2col blocks, ``gather-plane``'s padded rows): they give the definition's pattern
    when the weights are finite (0 * inf and 0 * NaN are NaN; ``w_max`` is the weight's :func:`max_abs`).
    Otherwise the call runs an exact variant (``_api.exact_request``)."""
    return w_max < float("inf")

