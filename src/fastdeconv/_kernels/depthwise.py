"""Forward convolution of layers with one input channel per group (depthwise, any channel multiplier).

``y[n, co, o] = bias[co] + sum_k x_padded[n, co // M, o * stride + k * dilation] * w[co, 0, k]`` with ``M =
C_out // C_in`` output channels per input channel. A task is a block of output rows and columns of one (sample,
input channel, output depth); it copies the input its block reads into a scratch once, padded with zeros and
split into the phases of the strides along H and W (space-to-depth):
``ph[p_w, kd, p_h, r, q] = x_padded[n, ci, od * s_d + kd * d_d, (oh_lo + r) * s_h + p_h, (ow_lo + q) * s_w + p_w]``
(the rows are copied from x first, then split along W in one pass over all of them).
Tap ``(kh, kw)`` with ``kh * d_h = j_h * s_h + p_h`` and ``kw * d_w = j_w * s_w + p_w`` reads, for the output
``(oh, ow)``, element ``(oh - oh_lo + j_h, ow - ow_lo + j_w)`` of phase plane ``(p_w, kd, p_h)``. The block's
outputs are accumulated in a buffer of rows as long as the scratch's (``L``, the block's columns plus the
largest ``j_w``): output ``(r, c)`` at ``r * L + c`` reads the plane at ``r * L + c`` plus a constant per tap,
so each tap is ONE contiguous multiply-add over all rows of the block (the loop vectorises, its set-up paid once
per block, not per row), up to eight taps per pass over the buffer. The last ``L - cols`` elements of each buffer row
are not outputs (they read the next scratch row) and are dropped when the block is stored.

Each output element is its bias plus its terms in (kD, kH, kW) order, the padded zeros included: the terms and
order of ``conv.correlate_tasks`` on the padded input, so the same bits, whatever the blocks or the threads.
The ``M`` output channels of an input channel share the scratch.
"""

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import ceil_div


@njit(**NJIT_FLAGS)
def _split_w(tmp, ph, count, part, s_w, n_w):
    """``ph[p * part + f] = tmp[f * s_w + p]`` for ``f < count``, ``p < n_w``: the split along W of a block's
    padded rows. Strides 2 to 4 with every phase read take all phases in one pass: LLVM vectorises that as an
    interleaved load group (wide loads and shuffles; one phase at a time is a gather). (A function of its own:
    inside the kernel's loop nest LLVM does not, and the split takes twice as long.)"""
    if n_w == 2 and s_w == 2:
        for f in range(count):
            ph[f] = tmp[uintp(2) * f]
            ph[part + f] = tmp[uintp(2) * f + uintp(1)]
        return
    if n_w == 3 and s_w == 3:
        p2 = uintp(2) * part
        for f in range(count):
            ph[f] = tmp[uintp(3) * f]
            ph[part + f] = tmp[uintp(3) * f + uintp(1)]
            ph[p2 + f] = tmp[uintp(3) * f + uintp(2)]
        return
    if n_w == 4 and s_w == 4:
        p2, p3 = uintp(2) * part, uintp(3) * part
        for f in range(count):
            ph[f] = tmp[uintp(4) * f]
            ph[part + f] = tmp[uintp(4) * f + uintp(1)]
            ph[p2 + f] = tmp[uintp(4) * f + uintp(2)]
            ph[p3 + f] = tmp[uintp(4) * f + uintp(3)]
        return
    step = uintp(s_w)
    for p in range(n_w):
        o = uintp(p) * part
        for f in range(count):
            ph[o + f] = tmp[uintp(p) + f * step]


@njit(**NJIT_FLAGS)
def _add_taps(acc, ph, run, wf, wt, n_e):
    """``acc[e] += ph[run[t] + e] * wf[wt + t]`` for ``e < n_e``, the taps ``t`` in order, up to eight per pass
    (one load and store of ``acc`` per element for all of them, the terms still added one after the other)."""
    taps = run.size
    t = 0
    while t + 8 <= taps:
        a0, a1, a2, a3 = uintp(run[t]), uintp(run[t + 1]), uintp(run[t + 2]), uintp(run[t + 3])
        a4, a5, a6, a7 = uintp(run[t + 4]), uintp(run[t + 5]), uintp(run[t + 6]), uintp(run[t + 7])
        w0, w1, w2, w3 = wf[wt + t], wf[wt + t + 1], wf[wt + t + 2], wf[wt + t + 3]
        w4, w5, w6, w7 = wf[wt + t + 4], wf[wt + t + 5], wf[wt + t + 6], wf[wt + t + 7]
        for e in range(n_e):
            acc[e] = ((((((((acc[e] + ph[a0 + e] * w0) + ph[a1 + e] * w1) + ph[a2 + e] * w2)
                          + ph[a3 + e] * w3) + ph[a4 + e] * w4) + ph[a5 + e] * w5) + ph[a6 + e] * w6)
                      + ph[a7 + e] * w7)
        t += 8
    if t + 4 <= taps:
        a0, a1, a2, a3 = uintp(run[t]), uintp(run[t + 1]), uintp(run[t + 2]), uintp(run[t + 3])
        w0, w1, w2, w3 = wf[wt + t], wf[wt + t + 1], wf[wt + t + 2], wf[wt + t + 3]
        for e in range(n_e):
            acc[e] = (((acc[e] + ph[a0 + e] * w0) + ph[a1 + e] * w1) + ph[a2 + e] * w2) + ph[a3 + e] * w3
        t += 4
    if t + 2 <= taps:
        a0, a1 = uintp(run[t]), uintp(run[t + 1])
        w0, w1 = wf[wt + t], wf[wt + t + 1]
        for e in range(n_e):
            acc[e] = (acc[e] + ph[a0 + e] * w0) + ph[a1 + e] * w1
        t += 2
    if t < taps:
        a0 = uintp(run[t])
        w0 = wf[wt + t]
        for e in range(n_e):
            acc[e] += ph[a0 + e] * w0


@njit(**NJIT_FLAGS)
def depthwise_tasks(x, w, bias, y, stride, dilation, start, block, task_lo, task_hi):
    """Tasks ``[task_lo, task_hi)`` in the calling thread: task ``(((n * C_in + ci) * oD + od) * hB + hb) * wB +
    wb`` is output rows ``[hb * rows, (hb + 1) * rows)`` and columns ``[wb * cols, (wb + 1) * cols)`` (``block =
    (rows, cols)``) of depth ``od`` of the output channels of ``ci``.

    ``x`` (N, C_in, D, H, W), ``w`` (C_out, 1, kD, kH, kW), ``bias`` (C_out,) and ``y`` (N, C_out, oD, oH, oW)
    are C-contiguous; ``stride``, ``dilation``, ``start`` (the leading zero padding) are int64 (3,).
    """
    c_in, size_d, size_h, size_w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    c_out, k_d, k_h, k_w = w.shape[0], w.shape[2], w.shape[3], w.shape[4]
    out_d, out_h, out_w = y.shape[2], y.shape[3], y.shape[4]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    st_d, st_h, st_w = start[0], start[1], start[2]
    mult = c_out // c_in
    rows, cols = block[0], block[1]
    h_blocks, w_blocks = ceil_div(out_h, rows), ceil_div(out_w, cols)
    n_h = min(s_h, (k_h - 1) * d_h + 1)  # the phases some tap reads
    n_w = min(s_w, (k_w - 1) * d_w + 1)
    j_h, j_w = ((k_h - 1) * d_h) // s_h, ((k_w - 1) * d_w) // s_w  # the largest offsets inside a phase
    q_len = cols + j_w  # a scratch row, and a row of the accumulator
    r_rows = rows + j_h  # the scratch rows of a phase plane
    plane = r_rows * q_len
    planes = k_d * n_h  # the (kd, p_h) planes of one phase along W
    seg = q_len * s_w  # the padded input row segment a block's phases come from
    taps = k_d * k_h * k_w
    # the scratch, laid out (p_w, kd, p_h, r, q), and the accumulator, once per call: the tasks of the call
    # reuse them (zeroed once: the rows a block does not use are copied, never read)
    ph = np.zeros(n_w * planes * plane, y.dtype)
    acc = np.empty(rows * q_len, y.dtype)
    # the padded rows of a block, laid out (kd, p_h, r, u), before the split along W (with s_w == 1 that split
    # is the identity: the rows are written into the scratch directly)
    tmp = ph if s_w == 1 else np.zeros(planes * r_rows * seg, y.dtype)
    run = np.empty(taps, np.int64)  # per tap, where its run starts in the scratch (the same for every block)
    t = 0
    for kd in range(k_d):
        for kh in range(k_h):
            for kw in range(k_w):
                run[t] = (((kw * d_w) % s_w * planes + kd * n_h + (kh * d_h) % s_h) * plane
                          + ((kh * d_h) // s_h) * q_len + (kw * d_w) // s_w)
                t += 1
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    wf = w.reshape(-1)
    zero = y.dtype.type(0)
    for task in range(task_lo, task_hi):
        wb = task % w_blocks
        rest = task // w_blocks
        hb = rest % h_blocks
        rest //= h_blocks
        od = rest % out_d
        rest //= out_d
        ci = rest % c_in
        n = rest // c_in
        oh_lo, ow_lo = hb * rows, wb * cols
        n_rows, n_cols = min(out_h, oh_lo + rows) - oh_lo, min(out_w, ow_lo + cols) - ow_lo
        # the scratch rows the block reads (its runs end inside them, the dropped elements' reads included)
        r_used = n_rows + j_h
        # element u of a row segment is x's column ow_lo * s_w + u - st_w: inside x for u in [u_lo, u_hi)
        u_lo = min(seg, max(0, st_w - ow_lo * s_w))
        u_hi = max(u_lo, min(seg, size_w + st_w - ow_lo * s_w))
        # unsigned offsets everywhere below (all are >= 0): a signed index makes numba test for negative-index
        # wrap-around, which turns these loops into gathers and scatters
        for kd in range(k_d):
            i_d = od * s_d + kd * d_d - st_d
            for p_h in range(n_h):
                for r in range(r_used):
                    i_h = (oh_lo + r) * s_h + p_h - st_h
                    dst = uintp(((kd * n_h + p_h) * r_rows + r) * seg)
                    if i_d < 0 or i_d >= size_d or i_h < 0 or i_h >= size_h:
                        for u in range(uintp(seg)):
                            tmp[dst + u] = zero
                        continue
                    src = uintp((((n * c_in + ci) * size_d + i_d) * size_h + i_h) * size_w + ow_lo * s_w + u_lo
                                - st_w)
                    if w_blocks > 1:  # (with one block of columns, the padding's place in a row never changes:
                        # only zeros are ever written there, by the initial zeroing and by rows outside x)
                        for u in range(uintp(u_lo)):
                            tmp[dst + u] = zero
                        for u in range(uintp(u_hi), uintp(seg)):
                            tmp[dst + u] = zero
                    o = dst + uintp(u_lo)
                    for u in range(uintp(u_hi - u_lo)):  # contiguous: vector loads and stores
                        tmp[o + u] = xf[src + u]
        if s_w > 1:
            # the split along W of all rows of the block in one loop: element f * s_w + p_w of the rows is
            # element f of phase p_w (f = (P * r_rows + r) * q_len + q for the (kd, p_h) plane P, as the
            # segments are q_len * s_w long; the rows past r_used are split too, and never read)
            _split_w(tmp, ph, uintp(planes * plane), uintp(planes * plane), s_w, n_w)
        n_e = uintp((n_rows - 1) * q_len + n_cols)
        for co in range(ci * mult, ci * mult + mult):
            bv = bias[co]
            for e in range(n_e):
                acc[e] = bv
            _add_taps(acc, ph, run, wf, co * taps, n_e)
            for r in range(n_rows):
                yrow = uintp((((n * c_out + co) * out_d + od) * out_h + oh_lo + r) * out_w + ow_lo)
                arow = uintp(r * q_len)
                for c in range(uintp(n_cols)):
                    yf[yrow + c] = acc[arow + c]
