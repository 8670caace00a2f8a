"""The fused epilogue: an activation applied to output elements that are final (their bias already added).

A variant calls these on the region of the output a task (or a chunk of tasks) has just written, in the worker
that wrote it, while that region is still in cache: never as a pass over the whole output after the call.
``code`` numbers the activation (``NONE`` .. ``CLAMP``, as ``variants._epilogue`` gives it) and ``params`` holds
``(a, b, 1)`` in the output's dtype (the slope, or the clamp's bounds, and a one of that dtype), so that a float32
output is computed in float32. NaN stays NaN under every activation (a comparison with NaN is false).
"""

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import ceil_div, split_task, tile_bounds, tile_counts

NONE, RELU, LEAKY_RELU, TANH, SIGMOID, CLAMP = 0, 1, 2, 3, 4, 5


@njit(inline="always", **NJIT_FLAGS)
def activate(v, code, a, b, one):
    """One element: relu ``0 if v < 0``, leaky ``a * v if v < 0``, tanh, sigmoid ``1 / (1 + exp(-v))``, clamp
    ``min(max(v, a), b)`` (NaN kept)."""
    if code == RELU:
        return one - one if v < 0 else v
    if code == LEAKY_RELU:
        return a * v if v < 0 else v
    if code == TANH:
        return np.tanh(v)
    if code == SIGMOID:
        return one / (one + np.exp(-v))
    if code == CLAMP:
        if v < a:
            return a
        if v > b:
            return b
        return v
    return v


@njit(inline="always", **NJIT_FLAGS)
def activate_run(yf, start, count, code, a, b, one):
    """``yf[start:start + count]`` in place: one loop per activation (the test out of the loop, so that the
    piecewise-linear ones vectorize)."""
    s, n = uintp(start), uintp(count)
    if code == RELU:
        zero = one - one
        for i in range(n):
            v = yf[s + i]
            yf[s + i] = zero if v < zero else v
    elif code == LEAKY_RELU:
        zero = one - one
        for i in range(n):
            v = yf[s + i]
            yf[s + i] = a * v if v < zero else v
    elif code == CLAMP:
        for i in range(n):
            v = yf[s + i]
            v = a if v < a else v
            yf[s + i] = b if v > b else v
    else:
        for i in range(n):
            yf[s + i] = activate(yf[s + i], code, a, b, one)


@njit(**NJIT_FLAGS)
def activate_flat(yf, lo, hi, code, params):
    """``yf[lo:hi]`` (a flat view) in place."""
    activate_run(yf, lo, hi - lo, code, params[0], params[1], params[2])


@njit(**NJIT_FLAGS)
def activate_box(y, box, code, params):
    """The box ``y[box[0,0]:box[0,1], ..., box[4,0]:box[4,1]]`` of the C-contiguous 5-D ``y``, in place."""
    a, b, one = params[0], params[1], params[2]
    yf = y.reshape(-1)
    s1, s2, s3, s4 = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    w_lo, w_hi = box[4, 0], box[4, 1]
    for i0 in range(box[0, 0], box[0, 1]):
        for i1 in range(box[1, 0], box[1, 1]):
            for i2 in range(box[2, 0], box[2, 1]):
                for i3 in range(box[3, 0], box[3, 1]):
                    row = (((i0 * s1 + i1) * s2 + i2) * s3 + i3) * s4
                    activate_run(yf, row + w_lo, w_hi - w_lo, code, a, b, one)


@njit(**NJIT_FLAGS)
def activate_tasks(y, groups, block, tile, task_lo, task_hi, code, params):
    """The regions of the direct kernels' tasks ``[task_lo, task_hi)`` (sample, group x block of ``block`` output
    channels, output tile; ``_index.split_task``): ``block = CHANNEL_BLOCK`` for the scatter and gather kernels,
    1 for the correlation's (sample, output channel, tile) tasks. ``y`` is (N, C_out, oD, oH, oW)."""
    a, b, one = params[0], params[1], params[2]
    yf = y.reshape(-1)
    c_out, o_d, o_h, o_w = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    c_out_g = c_out // groups
    n_cb = ceil_div(c_out_g, block)
    tiles = tile_counts(y.shape[2:], tile)
    for task in range(task_lo, task_hi):
        n, cb, td, th, tw = split_task(task, groups * n_cb, tiles)
        g = cb // n_cb
        col0 = (cb - g * n_cb) * block
        co0 = g * c_out_g + col0
        nb = min(block, c_out_g - col0)
        od_lo, od_hi = tile_bounds(td, tile[0], o_d)
        oh_lo, oh_hi = tile_bounds(th, tile[1], o_h)
        ow_lo, ow_hi = tile_bounds(tw, tile[2], o_w)
        for co in range(co0, co0 + nb):
            for od in range(od_lo, od_hi):
                for oh in range(oh_lo, oh_hi):
                    row = (((n * c_out + co) * o_d + od) * o_h + oh) * o_w
                    activate_run(yf, row + ow_lo, ow_hi - ow_lo, code, a, b, one)


@njit(**NJIT_FLAGS)
def bias_activate(tmp, bias, c0, code, params):
    """``tmp[c, :] = act(tmp[c, :] + bias[c0 + c])`` for a 2-D C-contiguous block of one GEMM's results (the
    elements its store then writes once, adding a zero bias)."""
    a, b, one = params[0], params[1], params[2]
    width = tmp.shape[1]
    tf = tmp.reshape(-1)
    for c in range(tmp.shape[0]):
        bv = bias[c0 + c]
        row = uintp(c * width)
        for i in range(uintp(width)):
            tf[row + i] += bv
        activate_run(tf, row, width, code, a, b, one)


@njit(**NJIT_FLAGS)
def activate_plane_tasks(y, groups, s_h, block, blocks, task_lo, task_hi, code, params):
    """The regions of ``plane.plane_tasks``' tasks ``[task_lo, task_hi)`` (sample, group, output depth, block of
    ``block`` phase rows): all the group's channels, output rows ``[s_h * blk * block, s_h * (blk + 1) * block)``
    (every row phase ``r < s_h`` of those phase rows). ``y`` is (N, C_out, oD, oH, oW)."""
    a, b, one = params[0], params[1], params[2]
    yf = y.reshape(-1)
    c_out, o_d, o_h, o_w = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    c_out_g = c_out // groups
    for task in range(task_lo, task_hi):
        rest = task // blocks
        blk = task - rest * blocks
        od = rest % o_d
        rest //= o_d
        g = rest % groups
        n = rest // groups
        oh_lo = s_h * blk * block
        oh_hi = min(o_h, oh_lo + s_h * block)
        for co in range(g * c_out_g, (g + 1) * c_out_g):
            row = (((n * c_out + co) * o_d + od) * o_h + oh_lo) * o_w
            activate_run(yf, row, (oh_hi - oh_lo) * o_w, code, a, b, one)
