"""Gather form (many-to-one): every output element sums the input elements that reach it.

For output index ``o`` and tap ``k`` the source is ``(o + start - k * dilation) / stride`` when that divides
exactly (``source_index``), so the zeros of the stride-dilated input are never visited. Along the last axis
the outputs are taken phase by phase (sub-pixel decomposition): the outputs ``o = first + stride * m`` of
one phase all see the same taps, and tap ``k`` reads the input at ``base + m`` -- a dense correlation of the
undilated input with a sub-kernel, accumulated in a contiguous buffer and stored once.
"""

import numpy as np
from numba import njit, prange

from ..config import PARALLEL_FLAGS
from ._index import ceil_div, source_index, split_task, tap_offset, tile_bounds, tile_counts


@njit(**PARALLEL_FLAGS)
def gather(x, w, bias, y, groups, stride, dilation, start, tile):
    """Transposed convolution, gather form, into ``y`` (fully overwritten)."""
    n_batch, c_in, size_d, size_h, size_w = x.shape
    c_out_g, k_d, k_h, k_w = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    c_out = y.shape[1]
    c_in_g = c_in // groups
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    tiles = tile_counts(y.shape[2:], tile)
    n_tasks = n_batch * c_out * tiles[0] * tiles[1] * tiles[2]
    for task in prange(n_tasks):
        n, co, td, th, tw = split_task(task, c_out, tiles)
        g = co // c_out_g
        col = co - g * c_out_g
        od_lo, od_hi = tile_bounds(td, tile[0], y.shape[2])
        oh_lo, oh_hi = tile_bounds(th, tile[1], y.shape[3])
        ow_lo, ow_hi = tile_bounds(tw, tile[2], y.shape[4])
        acc = np.empty(ceil_div(ow_hi - ow_lo, s_w), dtype=y.dtype)
        b = bias[co]
        for od in range(od_lo, od_hi):
            for oh in range(oh_lo, oh_hi):
                yrow = y[n, co, od, oh]
                for phase in range(min(s_w, ow_hi - ow_lo)):
                    first = ow_lo + phase
                    count = ceil_div(ow_hi - first, s_w)
                    acc[:count] = 0
                    for ci in range(g * c_in_g, (g + 1) * c_in_g):
                        for kd in range(k_d):
                            i_d = source_index(od, s_d, tap_offset(kd, d_d, start[0]), size_d)
                            if i_d < 0:
                                continue
                            for kh in range(k_h):
                                i_h = source_index(oh, s_h, tap_offset(kh, d_h, start[1]), size_h)
                                if i_h < 0:
                                    continue
                                xrow = x[n, ci, i_d, i_h]
                                for kw in range(k_w):
                                    off_w = tap_offset(kw, d_w, start[2])
                                    if (first - off_w) % s_w != 0:
                                        continue  # this tap never reaches this phase
                                    base = (first - off_w) // s_w  # input index for m = 0
                                    m_lo = max(0, -base)
                                    m_hi = min(count, size_w - base)
                                    wv = w[ci, col, kd, kh, kw]
                                    for m in range(m_lo, m_hi):
                                        acc[m] += wv * xrow[base + m]
                    for m in range(count):
                        yrow[first + m * s_w] = acc[m] + b
