"""Scatter form (one-to-many): every input element adds its weighted kernel footprint into the output.

``y[in_index * stride + tap * dilation - start] += x[in_index] * w[tap]``, walked input-first. The output is
split into tiles (sample, output channel, spatial tile); a task scatters only the part of each footprint
that lands in its own tile, so no two threads ever add into the same element and the order of the terms of
every output element is fixed (bitwise-reproducible across thread counts).
"""

from numba import njit, prange

from ..config import PARALLEL_FLAGS
from ._index import input_range, reaching_range, split_task, tap_offset, tile_bounds, tile_counts


@njit(**PARALLEL_FLAGS)
def scatter(x, w, bias, y, groups, stride, dilation, start, tile):
    """Transposed convolution, scatter form, into ``y`` (fully overwritten)."""
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
        b = bias[co]
        for od in range(od_lo, od_hi):
            for oh in range(oh_lo, oh_hi):
                for ow in range(ow_lo, ow_hi):
                    y[n, co, od, oh, ow] = b
        # input rows that reach this tile through some tap
        id_lo, id_hi = reaching_range(size_d, od_lo, od_hi, s_d, k_d, d_d, start[0])
        ih_lo, ih_hi = reaching_range(size_h, oh_lo, oh_hi, s_h, k_h, d_h, start[1])
        for ci in range(g * c_in_g, (g + 1) * c_in_g):
            for i_d in range(id_lo, id_hi):
                for kd in range(k_d):
                    od = i_d * s_d + tap_offset(kd, d_d, start[0])
                    if od < od_lo or od >= od_hi:
                        continue
                    for i_h in range(ih_lo, ih_hi):
                        xrow = x[n, ci, i_d, i_h]
                        for kh in range(k_h):
                            oh = i_h * s_h + tap_offset(kh, d_h, start[1])
                            if oh < oh_lo or oh >= oh_hi:
                                continue
                            yrow = y[n, co, od, oh]
                            for kw in range(k_w):
                                off_w = tap_offset(kw, d_w, start[2])
                                iw_lo, iw_hi = input_range(size_w, ow_lo, ow_hi, s_w, off_w)
                                wv = w[ci, col, kd, kh, kw]
                                for i_w in range(iw_lo, iw_hi):
                                    yrow[i_w * s_w + off_w] += xrow[i_w] * wv

