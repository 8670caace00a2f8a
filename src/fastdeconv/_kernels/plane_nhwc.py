"""``gather-plane-nhwc``: channels-last rows of few channels per group as long flat runs, W-periodic weights.

In a channels-last output row the C_out channels of consecutive pixels are one contiguous run of ``o_w * C_out``
elements. Along W (stride ``s``, dilation ``d``) an output at full position ``F = ow + start`` is ``F = q * s + r``
and tap ``k`` reaches it from input ``q - e`` with ``r = (k * d) mod s`` and ``e = (k * d) // s``: for one slot
``e`` every phase ``r`` reads the same input pixel ``q - e``. So with ``L = s * C_out`` and the flat index
``J = F * C_out + co`` of the row, slot ``e`` of input channel ``ci`` (of the group) adds

    y[J] += wexp[e][J mod L] * xrep[J - e * L]

where ``xrep`` is the input row repeated along the phases (``xrep[i * L + r * C_out + co] = x[i, channel of co's
group, ci]``: a copy of the channels-last row when ``s == 1`` and one channel per group) and ``wexp[e]`` holds, per
``(r, co)``, the weight of the tap with that ``(r, e)`` (0 where no tap has it). Each term is one contiguous run
over every output pixel and channel its input pixels reach, with no short per-pixel channel loop: the weights are
periodic with ``L``, repeated in the pack to a period ``P`` (a multiple of ``L``) long enough for the vector loop.

Per output row the terms are (depth tap, row tap, input channel, slot), in that order. The row runs in column
chunks that stay in L1: four terms per pass over the range all four reach, one at a time where only some do (an
element gets exactly its terms, in term order: no padding zero is multiplied); the first group's pass sets the
elements (the rest of the chunk is zeroed first), the last group's adds the bias (``P``-periodic too; elsewhere a
pass of its own), then the epilogue. A task is one block of output rows of a (sample, output depth); the ``xrep``
rows it reads are built once per task. Every output element is computed by one task from its terms in an order
fixed by the shapes: the same bits on any number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from .epilogue import activate_run


@njit(**NJIT_FLAGS)
def _add1(yf, yb, wexp, w0, xrep, x0, ja, jb, period):
    """``yf[yb + J] += wexp[w0 + J mod period] * xrep[x0 + J]`` for ``J`` in ``[ja, jb)`` (``J >= 0``)."""
    j = ja
    while j < jb:
        m = j % period
        n = uintp(min(jb - j, period - m))
        yd, wd, xd = uintp(yb + j), uintp(w0 + m), uintp(x0 + j)
        for i in range(n):
            yf[yd + i] += wexp[wd + i] * xrep[xd + i]
        j += n


@njit(inline="always", **NJIT_FLAGS)
def _add4(yf, yb, wexp, wo, xrep, xo, t, ja, jb, period, bexp, first, last):
    """Terms ``t .. t + 3`` of ``(wo, xo)`` over ``[ja, jb)``, added in order in one pass; ``first``: the row's
    first terms there (the elements are set, not read: no zeroing pass), ``last``: its last (the bias
    ``bexp[J mod period]`` added in the same pass)."""
    w0, w1, w2, w3 = wo[t], wo[t + 1], wo[t + 2], wo[t + 3]
    x0, x1, x2, x3 = xo[t], xo[t + 1], xo[t + 2], xo[t + 3]
    j = ja
    while j < jb:
        m = j % period
        n = uintp(min(jb - j, period - m))
        yd, bd = uintp(yb + j), uintp(m)
        a0, a1, a2, a3 = uintp(w0 + m), uintp(w1 + m), uintp(w2 + m), uintp(w3 + m)
        b0, b1, b2, b3 = uintp(x0 + j), uintp(x1 + j), uintp(x2 + j), uintp(x3 + j)
        if first and last:
            for i in range(n):
                yf[yd + i] = (((wexp[a0 + i] * xrep[b0 + i] + wexp[a1 + i] * xrep[b1 + i])
                               + wexp[a2 + i] * xrep[b2 + i]) + wexp[a3 + i] * xrep[b3 + i]) + bexp[bd + i]
        elif first:
            for i in range(n):
                yf[yd + i] = ((wexp[a0 + i] * xrep[b0 + i] + wexp[a1 + i] * xrep[b1 + i])
                              + wexp[a2 + i] * xrep[b2 + i]) + wexp[a3 + i] * xrep[b3 + i]
        elif last:
            for i in range(n):
                yf[yd + i] = ((((yf[yd + i] + wexp[a0 + i] * xrep[b0 + i]) + wexp[a1 + i] * xrep[b1 + i])
                               + wexp[a2 + i] * xrep[b2 + i]) + wexp[a3 + i] * xrep[b3 + i]) + bexp[bd + i]
        else:
            for i in range(n):
                yf[yd + i] = (((yf[yd + i] + wexp[a0 + i] * xrep[b0 + i]) + wexp[a1 + i] * xrep[b1 + i])
                              + wexp[a2 + i] * xrep[b2 + i]) + wexp[a3 + i] * xrep[b3 + i]
        j += n


@njit(**NJIT_FLAGS)
def _set(yf, yb, vals, ja, jb, period):
    """``yf[yb + J] = vals[J mod period]`` for ``J`` in ``[ja, jb)``, or 0 when ``vals`` is empty."""
    j = ja
    while j < jb:
        m = j % period
        n = uintp(min(jb - j, period - m))
        yd, vd = uintp(yb + j), uintp(m)
        if vals.shape[0] == 0:
            for i in range(n):
                yf[yd + i] = 0
        else:
            for i in range(n):
                yf[yd + i] = vals[vd + i]
        j += n


@njit(**NJIT_FLAGS)
def _bias(yf, yb, bexp, ja, jb, period):
    """``yf[yb + J] += bexp[J mod period]`` for ``J`` in ``[ja, jb)``."""
    j = ja
    while j < jb:
        m = j % period
        n = uintp(min(jb - j, period - m))
        yd, bd = uintp(yb + j), uintp(m)
        for i in range(n):
            yf[yd + i] += bexp[bd + i]
        j += n


@njit(**NJIT_FLAGS)
def _fill(xrep, dst, xf, src, size_w, c_in, cin_g, cout_g, ci, s_w):
    """``xrep[dst + i * L + r * C_out + co] = x[src + i * C_in + (co // cout_g) * cin_g + ci]`` for every input
    pixel ``i`` of the row, phase ``r < s_w`` and output channel ``co`` (``L = s_w * C_out``)."""
    groups = c_in // cin_g
    c_out = groups * cout_g
    d = uintp(dst)
    for i in range(size_w):
        s = uintp(src + i * c_in + ci)
        if cout_g == 1 and cin_g == 1:  # one channel per group: the pixel's channels, s_w times
            for _ in range(s_w):
                for c in range(uintp(c_out)):
                    xrep[d + c] = xf[s + c]
                d += uintp(c_out)
            continue
        for _ in range(s_w):
            for g in range(groups):
                v = xf[s + uintp(g * cin_g)]
                for j in range(uintp(cout_g)):
                    xrep[d + j] = v
                d += uintp(cout_g)


@njit(inline="always", **NJIT_FLAGS)
def _chunk(yf, yb, wf, xrep, bexp, terms, nt, c0, c1, period):
    """Elements ``[c0, c1)`` of one output row (``yf[yb + J]``) from its ``nt`` terms ``terms = (wexp offsets,
    xrep offsets, first J, end J)``: zeroed where the first group of four does not set them, the terms in order
    (four at a time where all four reach, else one by one), the bias where the last group did not add it."""
    wo, xo, lo_t, hi_t = terms
    empty = bexp[:0]
    # the range where the first and the last group of four terms run fused (empty: no such group)
    fa, fb = c0, c0
    if nt >= 4:
        fa, fb = c0, c1
        for v in range(4):
            fa, fb = max(fa, lo_t[v]), min(fb, hi_t[v])
    la, lb = c0, c0
    if nt >= 4 and nt % 4 == 0:
        la, lb = c0, c1
        for v in range(nt - 4, nt):
            la, lb = max(la, lo_t[v]), min(lb, hi_t[v])
    if fa >= fb:
        fa, fb = c0, c0
    if la >= lb:
        la, lb = c0, c0
    _set(yf, yb, empty, c0, fa, period)  # zero where the first group's fused pass does not set
    _set(yf, yb, empty, fb, c1, period)
    t = 0
    while t < nt:
        g = min(4, nt - t)
        ca, cb = c0, c1  # the range every term of the group reaches (within the chunk)
        for v in range(t, t + g):
            ca, cb = max(ca, lo_t[v]), min(cb, hi_t[v])
        if g < 4 or ca >= cb:
            ca, cb = c0, c0
        first, last = t == 0, t + 4 == nt
        if ca < cb:
            _add4(yf, yb, wf, wo, xrep, xo, t, ca, cb, period, bexp, first, last)
        for v in range(t, t + g):  # each term where not every term of the group reaches
            ta, tb = max(c0, lo_t[v]), min(c1, hi_t[v])
            if ca < cb:
                _add1(yf, yb, wf, wo[v], xrep, xo[v], ta, min(tb, ca), period)
                _add1(yf, yb, wf, wo[v], xrep, xo[v], max(ta, cb), tb, period)
            else:
                _add1(yf, yb, wf, wo[v], xrep, xo[v], ta, tb, period)
        t += g
    _bias(yf, yb, bexp, c0, la, period)  # the bias where the last group's fused pass did not add it
    _bias(yf, yb, bexp, lb, c1, period)


@njit(**NJIT_FLAGS)
def plane_nhwc_tasks(x, wexp, bexp, y, tabs, counts, slots, geometry, code, params, task_lo, task_hi):
    """Tasks ``[task_lo, task_hi)`` of (sample, output depth, block of output rows) into the channels-last ``y``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Channels-last x (N, D, H, W, C_in) and y (N, oD, oH, oW, C_out), C-contiguous, one float dtype.
    wexp : numpy.ndarray
        The pack (C_in_g, kD, kH, slots, P): per (input channel of the group, depth tap, row tap, slot) the
        weights of ``J mod P`` (``J``: the flat full position, pixel-major, channel-minor).
    bexp : numpy.ndarray
        The bias repeated to the period P.
    tabs, counts : numpy.ndarray
        Per axis and output position, the (tap, input position) pairs reaching it in tap order (D and H used).
    slots : numpy.ndarray
        The W slots ``e`` that have a tap, in increasing order (int64).
    geometry : numpy.ndarray
        int64: groups, W stride, W start, period P, output rows per task, row blocks, input rows per task at most,
        column chunk.
    code, params
        The epilogue (``_kernels.epilogue``; code 0: none).
    """
    size_d, size_h, size_w, c_in = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    o_d, o_h, o_w, c_out = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    groups, s_w, start_w, period, block, blocks, rows_max, chunk = (
        geometry[0], geometry[1], geometry[2], geometry[3], geometry[4], geometry[5], geometry[6], geometry[7])
    cin_g, cout_g = c_in // groups, c_out // groups
    k_d, k_h, n_e = wexp.shape[1], wexp.shape[2], wexp.shape[3]
    span = s_w * c_out  # L
    row_len = size_w * span
    xf, yf, wf = x.reshape(-1), y.reshape(-1), wexp.reshape(-1)
    a, b, one = params[0], params[1], params[2]
    max_dt = 1
    for od in range(o_d):
        max_dt = max(max_dt, counts[0, od])
    xrep = np.empty(max(1, max_dt * rows_max * cin_g * row_len), dtype=x.dtype)
    n_terms = max(1, max_dt * k_h * cin_g * n_e)
    wo = np.empty(n_terms, dtype=np.int64)
    xo = np.empty(n_terms, dtype=np.int64)
    lo_t = np.empty(n_terms, dtype=np.int64)
    hi_t = np.empty(n_terms, dtype=np.int64)
    j_first = start_w * c_out
    terms = (wo, xo, lo_t, hi_t)
    j_end = j_first + o_w * c_out
    for task in range(task_lo, task_hi):
        blk = task % blocks
        od = (task // blocks) % o_d
        n = task // (blocks * o_d)
        h0 = blk * block
        h1 = min(h0 + block, o_h)
        lo, hi = size_h, 0
        for oh in range(h0, h1):
            for u in range(counts[1, oh]):
                i_h = tabs[1, oh, 2 * u + 1]
                lo, hi = min(lo, i_h), max(hi, i_h + 1)
        for t in range(counts[0, od]):
            i_d = tabs[0, od, 2 * t + 1]
            for rr in range(lo, hi):
                src = ((n * size_d + i_d) * size_h + rr) * size_w * c_in
                for ci in range(cin_g):
                    _fill(xrep, ((t * rows_max + rr - lo) * cin_g + ci) * row_len, xf, src, size_w, c_in, cin_g,
                          cout_g, ci, s_w)
        for oh in range(h0, h1):
            nt = 0
            for t in range(counts[0, od]):
                kd = tabs[0, od, 2 * t]
                for u in range(counts[1, oh]):
                    kh, i_h = tabs[1, oh, 2 * u], tabs[1, oh, 2 * u + 1]
                    for ci in range(cin_g):
                        base = ((t * rows_max + i_h - lo) * cin_g + ci) * row_len
                        for ie in range(n_e):
                            e = slots[ie]
                            ja = max(e * span, j_first)
                            jb = min((e + size_w) * span, j_end)
                            if ja >= jb:
                                continue
                            wo[nt] = (((ci * k_d + kd) * k_h + kh) * n_e + ie) * period
                            xo[nt] = base - e * span
                            lo_t[nt], hi_t[nt] = ja, jb
                            nt += 1
            yb = ((n * o_d + od) * o_h + oh) * o_w * c_out - j_first  # yf[yb + J]: the row's element J
            for c0 in range(j_first, j_end, chunk):
                c1 = min(c0 + chunk, j_end)
                _chunk(yf, yb, wf, xrep, bexp, terms, nt, c0, c1, period)
                if code != 0:
                    activate_run(yf, yb + c0, c1 - c0, code, a, b, one)
