"""Dense cross-correlation (PyTorch ``conv`` semantics) on an already padded input.

``y[n, co, o] = bias[co] + sum_{ci, k} xp[n, g * C_in_g + ci, o * stride + k * dilation] * w[co, ci, k]``
with weight (C_out, C_in // groups, kD, kH, kW). Used by the zero-fill form (stride 1, flipped kernel) and by
the forward convolution.
"""

from numba import njit, prange

from ..config import PARALLEL_FLAGS
from ._index import split_task, tile_bounds, tile_counts


@njit(**PARALLEL_FLAGS)
def correlate(xp, w, bias, y, groups, stride, dilation, tile):
    """Valid cross-correlation of ``xp`` with ``w`` into ``y`` (fully overwritten)."""
    n_batch = xp.shape[0]
    c_out, c_in_g, k_d, k_h, k_w = w.shape
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    c_out_g = c_out // groups
    tiles = tile_counts(y.shape[2:], tile)
    n_tasks = n_batch * c_out * tiles[0] * tiles[1] * tiles[2]
    for task in prange(n_tasks):
        n, co, td, th, tw = split_task(task, c_out, tiles)
        ci0 = (co // c_out_g) * c_in_g
        od_lo, od_hi = tile_bounds(td, tile[0], y.shape[2])
        oh_lo, oh_hi = tile_bounds(th, tile[1], y.shape[3])
        ow_lo, ow_hi = tile_bounds(tw, tile[2], y.shape[4])
        b = bias[co]
        for od in range(od_lo, od_hi):
            for oh in range(oh_lo, oh_hi):
                yrow = y[n, co, od, oh]
                for ow in range(ow_lo, ow_hi):
                    yrow[ow] = b
                for ci in range(c_in_g):
                    for kd in range(k_d):
                        for kh in range(k_h):
                            xrow = xp[n, ci0 + ci, od * s_d + kd * d_d, oh * s_h + kh * d_h]
                            for kw in range(k_w):
                                wv = w[co, ci, kd, kh, kw]
                                off = kw * d_w
                                for ow in range(ow_lo, ow_hi):
                                    yrow[ow] += xrow[ow * s_w + off] * wv
