"""The index arithmetic every kernel shares, written once.

One spatial axis maps input to output as ``out_index = in_index * stride + tap * dilation - start``.
"""

from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS


@njit(inline="always", **NJIT_FLAGS)
def ceil_div(a, b):
    return -((-a) // b)


@njit(inline="always", **NJIT_FLAGS)
def tap_offset(tap, dilation, start):
    """``out_index - in_index * stride`` for one tap."""
    return tap * dilation - start


@njit(inline="always", **NJIT_FLAGS)
def input_range(size_in, out_lo, out_hi, stride, offset):
    """Input indices ``i`` in ``[first, stop)`` whose ``i * stride + offset`` lies in ``[out_lo, out_hi)``."""
    first = max(0, ceil_div(out_lo - offset, stride))
    stop = min(size_in, ceil_div(out_hi - offset, stride))
    return first, stop


@njit(inline="always", **NJIT_FLAGS)
def reaching_range(size_in, out_lo, out_hi, stride, kernel, dilation, start):
    """Input indices in ``[first, stop)`` that reach ``[out_lo, out_hi)`` through at least one tap."""
    first = max(0, ceil_div(out_lo - tap_offset(kernel - 1, dilation, start), stride))
    stop = min(size_in, ceil_div(out_hi - tap_offset(0, dilation, start), stride))
    return first, stop


@njit(inline="always", **NJIT_FLAGS)
def source_between(out_index, stride, offset, lo, hi):
    """Inverse map: the input index in ``[lo, hi)`` reaching ``out_index`` through a tap, or -1 when none does."""
    num = out_index - offset
    if num % stride != 0:
        return -1
    i = num // stride
    if i < lo or i >= hi:
        return -1
    return i


@njit(inline="always", **NJIT_FLAGS)
def source_index(out_index, stride, offset, size_in):
    """Inverse map: the input index reaching ``out_index`` through a tap, or -1 when none does."""
    return source_between(out_index, stride, offset, 0, size_in)


@njit(inline="always", **NJIT_FLAGS)
def tile_bounds(t, tile, size):
    """Bounds ``[lo, hi)`` of tile number ``t`` of length ``tile`` along an axis of length ``size``."""
    lo = t * tile
    return lo, min(size, lo + tile)


@njit(inline="always", **NJIT_FLAGS)
def unravel(index, a, b, c):
    """Flat ``index`` over a C-ordered grid (rest, a, b, c) -> (rest, i_a, i_b, i_c)."""
    i_c = index % c
    index //= c
    i_b = index % b
    index //= b
    return index // a, index % a, i_b, i_c


@njit(inline="always", **NJIT_FLAGS)
def split_task(task, channels, tiles):
    """Task number -> (sample, channel, tile_d, tile_h, tile_w) for a grid of ``tiles`` (3,) per plane."""
    rest, td, th, tw = unravel(task, tiles[0], tiles[1], tiles[2])
    return rest // channels, rest % channels, td, th, tw


@njit(inline="always", **NJIT_FLAGS)
def tile_counts(out_shape, tile):
    """Number of tiles per output axis, as a 3-tuple."""
    return (ceil_div(out_shape[0], tile[0]), ceil_div(out_shape[1], tile[1]), ceil_div(out_shape[2], tile[2]))


# ``flat[at(base + i)]``: the offset as an unsigned index: numba then skips its negative-index wrap-around, which
# otherwise keeps LLVM from vectorizing a loop over computed offsets. A cast, not an ``inline="always"`` function:
# numba inlines those in its own IR, typing a fresh copy of the body at every call site, and the kernels index
# this way in dozens of places (the cast gives the same machine code and compiles in a fraction of the time).
at = uintp
