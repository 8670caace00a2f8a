"""Scatter form (one-to-many): every input element adds its weighted kernel footprint into the output.

``y[in_index * stride + tap * dilation - start] += x[in_index] * w[tap]``, walked input-first. Each task owns
a block of up to ``CHANNEL_BLOCK`` output channels and an output tile, which it fills a few rows at a time
through a small phase-major buffer (``_blocks``) sized to stay in cache: it walks the input rows that reach
those output rows and adds each input element's footprint restricted to them. In the buffer the footprint
of one tap of the last axis over a whole input row is one contiguous run (``buf[c, r, p, shift + i] +=
w * x[i]``), so the adds vectorize and every input load feeds all channels of the block; the phases are
interleaved into the output, plus the bias, once at the end. Only input elements are visited, never the
zeros of the dilated input.

No two tasks write the same output element, and each element receives its terms in the order (input
channel, i_d, kd, i_h, kh, kw) whatever the tiling: bitwise-identical results across thread counts.

``scatter_tasks`` runs a range of the tasks in the calling thread: ``_tasks.scatter`` hands contiguous ranges to
fastdeconv's worker pool, ``scatter_serial`` runs them all, which wins on small problems (below
``_model.SERIAL_WORK`` multiply-adds), where handing out work costs more than it saves.
"""

import numpy as np

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._blocks import (
    CHANNEL_BLOCK,
    apply_runs,
    phase_count,
    split_channel_block,
    store_block,
    task_count,
    zero,
)
from ._index import input_range, reaching_range, split_task, tap_offset, tile_bounds

# Elements of the per-task buffer (64 KiB in float32): the rows being filled stay in L2.
BUFFER_ELEMENTS = 16384


@njit(**NJIT_FLAGS)
def scatter_tasks(x, w, bias, y, groups, stride, dilation, start, tile, task_lo, task_hi):
    """Tasks ``[task_lo, task_hi)`` of ``scatter`` in the calling thread, scratch allocated once. A task: channel
    block x output tile, by row blocks."""
    _, tiles, n_cb = task_count(x, w, y, groups, tile)
    size_d, size_h, size_w = x.shape[2], x.shape[3], x.shape[4]
    c_in_g = x.shape[1] // groups
    c_out_g, k_d, k_h, k_w = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    xf, yf, wf = x.reshape(-1), y.reshape(-1), w.reshape(-1)
    wstride = k_d * k_h * k_w  # between output channels in ``wf``
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    # scratch for the largest task: nb * rows * row_len <= max(BUFFER_ELEMENTS, CHANNEL_BLOCK * longest row)
    longest = min(s_w, tile[2]) * phase_count(tile[2], 0, s_w)
    buf = np.empty(max(BUFFER_ELEMENTS, CHANNEL_BLOCK * longest), dtype=y.dtype)
    wtab = np.empty((k_w, 5), dtype=np.int64)  # (kw, first input index, run length, phase, first m)
    # one input channel's work on a block of rows: each output row receives at most k_d * k_h * k_w runs
    runs = np.empty((k_d * min(tile[1], BUFFER_ELEMENTS) * k_h * k_w, 4), dtype=np.int64)
    for task in range(task_lo, task_hi):
        n, cb, td, th, tw = split_task(task, groups * n_cb, tiles)
        g, col0, nb = split_channel_block(cb, n_cb, c_out_g)
        co0 = g * c_out_g + col0
        od_lo, od_hi = tile_bounds(td, tile[0], y.shape[2])
        oh_lo, oh_hi = tile_bounds(th, tile[1], y.shape[3])
        ow_lo, ow_hi = tile_bounds(tw, tile[2], y.shape[4])
        width = ow_hi - ow_lo
        phases = min(s_w, width)
        count = phase_count(width, 0, s_w)
        rows = max(1, min(oh_hi - oh_lo, BUFFER_ELEMENTS // (nb * phases * count)))
        row_len = phases * count  # one output row in ``buf``, phase-major
        plane = rows * row_len  # one channel in ``buf``
        # last-axis taps of this segment
        n_wt = 0
        for kw in range(k_w):
            off_w = tap_offset(kw, d_w, start[2])
            iw_lo, iw_hi = input_range(size_w, ow_lo, ow_hi, s_w, off_w)
            if iw_hi > iw_lo:
                rel = iw_lo * s_w + off_w - ow_lo  # first landing place in the segment
                wtab[n_wt, 0], wtab[n_wt, 1], wtab[n_wt, 2] = kw, iw_lo, iw_hi - iw_lo
                wtab[n_wt, 3], wtab[n_wt, 4] = rel % s_w, rel // s_w
                n_wt += 1
        for od in range(od_lo, od_hi):
            id_lo, id_hi = reaching_range(size_d, od, od + 1, s_d, k_d, d_d, start[0])
            for h0 in range(oh_lo, oh_hi, rows):
                h1 = min(h0 + rows, oh_hi)
                zero(buf, nb * plane)
                ih_lo, ih_hi = reaching_range(size_h, h0, h1, s_h, k_h, d_h, start[1])
                for ci in range(g * c_in_g, (g + 1) * c_in_g):
                    n_runs = 0
                    for i_d in range(id_lo, id_hi):
                        for kd in range(k_d):
                            if i_d * s_d + tap_offset(kd, d_d, start[0]) != od:
                                continue
                            xplane = ((n * x.shape[1] + ci) * size_d + i_d) * size_h
                            for i_h in range(ih_lo, ih_hi):
                                xrow = (xplane + i_h) * size_w
                                for kh in range(k_h):
                                    oh = i_h * s_h + tap_offset(kh, d_h, start[1])
                                    if oh < h0 or oh >= h1:
                                        continue
                                    brow = (oh - h0) * row_len
                                    wrow = (((ci * c_out_g + col0) * k_d + kd) * k_h + kh) * k_w
                                    for t in range(n_wt):
                                        runs[n_runs, 0] = brow + wtab[t, 3] * count + wtab[t, 4]
                                        runs[n_runs, 1] = xrow + wtab[t, 1]
                                        runs[n_runs, 2] = wtab[t, 2]
                                        runs[n_runs, 3] = wrow + wtab[t, 0]
                                        n_runs += 1
                    apply_runs(buf, xf, wf, runs, n_runs, nb, plane, wstride, False)
                y0 = (((n * y.shape[1] + co0) * o_d + od) * o_h + h0) * o_w + ow_lo
                store_block(buf, (nb, plane, h1 - h0, row_len, count), yf, (y0, o_w, o_d * o_h * o_w, width, s_w), bias,
                            co0)


def scatter_serial(x, w, bias, y, groups, stride, dilation, start, tile):
    """``scatter`` in the calling thread (same tasks, same bits): wins below ``_model.SERIAL_WORK`` multiply-adds."""
    scatter_tasks(x, w, bias, y, groups, stride, dilation, start, tile, 0, task_count(x, w, y, groups, tile)[0])


@njit(**NJIT_FLAGS)
def scatter_tiny(x, w, bias, y, groups, stride, dilation, start, tile):
    """``scatter_serial`` for the tiniest problems (a 3x3 input, 4 -> 2 channels: 648 multiply-adds), where
    setting up buffered runs costs more than the terms: the definition walked directly. Each element
    receives the same terms in the same order (input channel, i_d, kd, i_h, kh, kw) from zero, and the bias
    last: the same bits as ``scatter_serial``. (``tile`` is unused: the same signature as the others.)"""
    c_in_g, c_out_g = x.shape[1] // groups, w.shape[1]
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    span = np.empty((w.shape[4], 3), np.int64)  # per last-axis tap: offset, input range landing inside
    for kw in range(w.shape[4]):
        off = tap_offset(kw, dilation[2], start[2])
        span[kw, 0] = off
        span[kw, 1], span[kw, 2] = input_range(x.shape[4], 0, o_w, stride[2], off)
    y[...] = 0
    for n in range(x.shape[0]):
        for co in range(y.shape[1]):
            g, cg = co // c_out_g, co % c_out_g
            for ci in range(g * c_in_g, (g + 1) * c_in_g):
                for i_d in range(x.shape[2]):
                    for kd in range(w.shape[2]):
                        od = i_d * stride[0] + tap_offset(kd, dilation[0], start[0])
                        if od < 0 or od >= o_d:
                            continue
                        for i_h in range(x.shape[3]):
                            for kh in range(w.shape[3]):
                                oh = i_h * stride[1] + tap_offset(kh, dilation[1], start[1])
                                if oh < 0 or oh >= o_h:
                                    continue
                                for kw in range(w.shape[4]):
                                    wv = w[ci, cg, kd, kh, kw]
                                    for i_w in range(span[kw, 1], span[kw, 2]):
                                        y[n, co, od, oh, i_w * stride[2] + span[kw, 0]] += x[n, ci, i_d, i_h, i_w] * wv
            bv = bias[co]
            for od in range(o_d):
                for oh in range(o_h):
                    for ow in range(o_w):
                        y[n, co, od, oh, ow] += bv
