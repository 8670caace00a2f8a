"""The scan kernel behind ``_scan.max_abs``: the largest magnitude of a float array read as unsigned bits.

The float's bits are read as an unsigned integer with the sign bit cleared: finite magnitudes order like their
bit patterns, and every infinity or NaN lies above the largest finite one. An integer max reduction vectorizes
(a floating-point max with NaN semantics does not without fast-math, which stays off).
"""

from __future__ import annotations

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS


@njit(**NJIT_FLAGS)
def max_bits(bits, lo, hi, mask):
    """Largest ``bits[i] & mask`` over ``[lo, hi)``."""
    m = bits.dtype.type(0)
    for i in range(uintp(lo), uintp(hi)):  # unsigned: no negative-index wrap-around, so LLVM vectorizes
        v = bits[i] & mask
        m = v if v > m else m
    return m


# per item size: the unsigned type of the float's bits, the mask clearing its sign bit, an infinity's bits
MASKS = {4: (np.uint32, np.uint32(0x7FFFFFFF), np.uint32(0x7F800000)),
         8: (np.uint64, np.uint64(0x7FFFFFFFFFFFFFFF), np.uint64(0x7FF0000000000000))}
