"""Gather form (many-to-one): every output element sums the input elements that reach it.

For output index ``o`` and tap ``k`` the source is ``(o + start - k * dilation) / stride`` when that divides
exactly (``source_index``), so the zeros of the stride-dilated input are never visited. Each task owns a
block of up to ``CHANNEL_BLOCK`` output channels and a tile of output rows; it builds one output row at a
time. Along the last axis the outputs are taken phase by phase (sub-pixel decomposition): the outputs
``o = ow_lo + p + stride * m`` of phase ``p`` all see the same taps, and tap ``k`` reads the input at
``base + m`` -- a dense correlation of the undilated input with a sub-kernel, accumulated for all channels
of the block from one load of the input (``_blocks.accumulate``), then stored once with the bias.

Every output element adds its terms in the order (input channel, kd, kh, kw) starting from zero, then the
bias: the result does not depend on the tiling or the thread count.

``gather_tasks`` runs a range of the tasks in the calling thread: ``_tasks.gather`` hands contiguous ranges to
fastdeconv's worker pool, ``gather_serial`` runs them all, which wins on small problems (below
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
from ._index import source_index, split_task, tap_offset, tile_bounds

# Output elements of one block of rows (all channels of the block, 64 KiB in float32) and run-table entries per
# block: a block is built with one call of each helper (numba reference-counts array arguments on every call).
ROW_BLOCK_ELEMENTS = 16384
RUN_BUDGET = 65536
# Entries of the run table (32 bytes each): when a block's runs exceed it (a 1-D layer with a 1024-tap kernel
# and 514 input channels has half a million per output row) the table is applied and refilled, in order.
RUN_TABLE = 8192


@njit(**NJIT_FLAGS)
def gather_tasks(x, w, bias, y, groups, stride, dilation, start, tile, task_lo, task_hi):
    """Tasks ``[task_lo, task_hi)`` of ``gather`` in the calling thread, scratch allocated once. A task: channel
    block x output tile, row by row."""
    _, tiles, n_cb = task_count(x, w, y, groups, tile)
    size_d, size_h, size_w = x.shape[2], x.shape[3], x.shape[4]
    c_in_g = x.shape[1] // groups
    c_out_g, k_d, k_h, k_w = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    xf, yf, wf = x.reshape(-1), y.reshape(-1), w.reshape(-1)
    wstride = k_d * k_h * k_w  # between output channels in ``wf``
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    # scratch for the largest tile: the phase-major rows of the channel block, the tap tables, one row's runs
    longest = min(s_w, tile[2]) * phase_count(tile[2], 0, s_w)  # phase-major row of the widest tile
    per_row = c_in_g * k_d * k_h * k_w  # runs of one output row, at most
    rows_max = max(1, min(tile[1], ROW_BLOCK_ELEMENTS // longest, RUN_BUDGET // per_row))
    acc = np.empty(CHANNEL_BLOCK * rows_max * longest, dtype=y.dtype)
    wtab = np.empty((k_w, 5), dtype=np.int64)  # (phase, kw, first m, first input index, run length)
    dtab = np.empty((k_d, 2), dtype=np.int64)  # (kd, i_d) of the taps reaching the current plane
    htab = np.empty((k_h, 2), dtype=np.int64)  # (kh, i_h) of the taps reaching the current row
    runs = np.empty((max(k_w, min(rows_max * per_row, RUN_TABLE)), 4), dtype=np.int64)  # one block of rows' work
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
        row_len = phases * count  # one output row in ``acc``, phase-major
        rows = max(1, min(rows_max, ROW_BLOCK_ELEMENTS // (nb * row_len)))  # rows built per block
        # Last-axis taps of this segment, once per task: (phase, kw, first m, first input index, run length).
        n_wt = 0
        for p in range(phases):
            first = ow_lo + p
            cnt = phase_count(width, p, s_w)
            for kw in range(k_w):
                off_w = tap_offset(kw, d_w, start[2])
                if (first - off_w) % s_w != 0:
                    continue  # this tap never reaches this phase
                base = (first - off_w) // s_w  # input index for m = 0
                m_lo, m_hi = max(0, -base), min(cnt, size_w - base)
                if m_hi > m_lo:
                    wtab[n_wt, 0], wtab[n_wt, 1], wtab[n_wt, 2] = p, kw, m_lo
                    wtab[n_wt, 3], wtab[n_wt, 4] = base + m_lo, m_hi - m_lo
                    n_wt += 1
        for od in range(od_lo, od_hi):
            n_dt = 0
            for kd in range(k_d):
                i_d = source_index(od, s_d, tap_offset(kd, d_d, start[0]), size_d)
                if i_d >= 0:
                    dtab[n_dt, 0], dtab[n_dt, 1] = kd, i_d
                    n_dt += 1
            for h0 in range(oh_lo, oh_hi, rows):
                h1 = min(h0 + rows, oh_hi)
                plane = (h1 - h0) * row_len
                zero(acc, nb * plane)
                n_runs = 0
                for oh in range(h0, h1):
                    n_ht = 0
                    for kh in range(k_h):
                        i_h = source_index(oh, s_h, tap_offset(kh, d_h, start[1]), size_h)
                        if i_h >= 0:
                            htab[n_ht, 0], htab[n_ht, 1] = kh, i_h
                            n_ht += 1
                    brow = (oh - h0) * row_len
                    t_lo = 0
                    while t_lo < n_wt:  # phase by phase: the runs of one phase overlap, so consecutive runs fuse
                        t_hi = t_lo
                        while t_hi < n_wt and wtab[t_hi, 0] == wtab[t_lo, 0]:
                            t_hi += 1
                        for ci in range(g * c_in_g, (g + 1) * c_in_g):
                            for a in range(n_dt):
                                kd = dtab[a, 0]
                                xplane = ((n * x.shape[1] + ci) * size_d + dtab[a, 1]) * size_h
                                for e in range(n_ht):
                                    kh = htab[e, 0]
                                    xrow = (xplane + htab[e, 1]) * size_w
                                    wrow = (((ci * c_out_g + col0) * k_d + kd) * k_h + kh) * k_w
                                    if n_runs + t_hi - t_lo > runs.shape[0]:  # table full: apply it, in order
                                        apply_runs(acc, xf, wf, runs, n_runs, nb, plane, wstride, True)
                                        n_runs = 0
                                    for t in range(t_lo, t_hi):
                                        runs[n_runs, 0] = brow + wtab[t, 0] * count + wtab[t, 2]
                                        runs[n_runs, 1] = xrow + wtab[t, 3]
                                        runs[n_runs, 2] = wtab[t, 4]
                                        runs[n_runs, 3] = wrow + wtab[t, 1]
                                        n_runs += 1
                        t_lo = t_hi
                apply_runs(acc, xf, wf, runs, n_runs, nb, plane, wstride, True)
                y0 = (((n * y.shape[1] + co0) * o_d + od) * o_h + h0) * o_w + ow_lo
                store_block(acc, (nb, plane, h1 - h0, row_len, count), yf, (y0, o_w, o_d * o_h * o_w, width, s_w), bias,
                            co0)


def gather_serial(x, w, bias, y, groups, stride, dilation, start, tile):
    """``gather`` in the calling thread (same tasks, same bits): wins below ``_model.SERIAL_WORK`` multiply-adds."""
    gather_tasks(x, w, bias, y, groups, stride, dilation, start, tile, 0, task_count(x, w, y, groups, tile)[0])
