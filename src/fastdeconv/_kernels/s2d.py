"""Winograd F(2, 2) on the space-to-depth input of a strided forward convolution (``fastdeconv._s2d``).

Per axis with the transform (``wino[axis] == 1``), two taps and three points: the input tile ``d_0, d_1, d_2``
becomes ``d_0 + d_1, d_1, d_1 + d_2`` (``B^T``, the middle point's sign moved to the other factor), a two-tap
weight or dual ``g_0, g_1`` becomes ``g_0, g_1 - g_0, g_1``, and the products ``m_0, m_1, m_2`` give the outputs
``m_0 + m_1, m_2 - m_1`` (``A^T``). Axes without it (the leading unit axes of rank 1 and 2) have one point; points
are numbered ``(z * l_h + a) * l_w + b`` over the axes (D, H, W). The channels of the space-to-depth input are
``c' = (group * P + phase) * C_in_g + ci``: phase-major within a group, so that a phase's channels are one
contiguous run of the channels-last packed input. Every kernel is serial (the caller runs blocks of them on the
worker pool), its inner loops run along a contiguous axis (channels or tiles), and every value's terms are summed
in a fixed order.
"""

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS


@njit(**NJIT_FLAGS)
def s2d_pack(x, xs, n_lo, q_lo, stride, start, cin_g):
    """The space-to-depth input of a block, channels-last: ``xs[n - n_lo, qd, qh, qw, c'] = x_padded[n, c,
    (q + q_lo) * s + phase]`` per axis (zeros outside x), ``c'`` as in the module docstring. One packed row
    (all ``qw`` and channels, a few kB to a few hundred) at a time, from rows of x read along their length;
    flat unsigned offsets (no negative-index test in the inner loops)."""
    n_blk, q_d, q_h, q_w, cc = xs.shape
    c_in = x.shape[1]
    size_d, size_h, size_w = x.shape[2], x.shape[3], x.shape[4]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    groups = c_in // cin_g
    zero = xs.dtype.type(0)
    xf = x.reshape(-1)
    xsf = xs.reshape(-1)
    step = uintp(cc)
    for nb in range(n_blk):
        n = n_lo + nb
        for qd in range(q_d):
            for qh in range(q_h):
                row_out = ((nb * q_d + qd) * q_h + qh) * q_w * cc
                for gi in range(groups):
                    for p_d in range(s_d):
                        i_d = (qd + q_lo[0]) * s_d + p_d - start[0]
                        for p_h in range(s_h):
                            i_h = (qh + q_lo[1]) * s_h + p_h - start[1]
                            row_in = 0 <= i_d < size_d and 0 <= i_h < size_h
                            for p_w in range(s_w):
                                cc0 = (gi * s_d * s_h * s_w + (p_d * s_h + p_h) * s_w + p_w) * cin_g
                                off = q_lo[2] * s_w + p_w - start[2]  # qw reads x at qw * s_w + off
                                lo = 0 if off >= 0 else min(q_w, (-off + s_w - 1) // s_w)
                                hi = min(q_w, max(lo, (size_w - off + s_w - 1) // s_w)) if row_in else lo
                                for ci in range(cin_g):
                                    dst = uintp(row_out + cc0 + ci)
                                    for qw in range(uintp(lo)):
                                        xsf[dst + qw * step] = zero
                                    if hi > lo:
                                        src = uintp((((n * c_in + gi * cin_g + ci) * size_d + i_d) * size_h + i_h)
                                                    * size_w + lo * s_w + off)
                                        d0 = dst + uintp(lo) * step
                                        for m in range(uintp(hi - lo)):
                                            xsf[d0 + m * step] = xf[src + m * uintp(s_w)]
                                    for qw in range(uintp(hi), uintp(q_w)):
                                        xsf[dst + qw * step] = zero


@njit(**NJIT_FLAGS)
def s2d_transform(xs, v, wino, col0):
    """``V`` of a block: ``v[point, col0 + col, c']`` with ``col`` over (sample, tile per axis) of the block, from
    the packed ``xs`` (tile ``t`` reads ``2 t, 2 t + 1, 2 t + 2`` along a transformed axis), along W, then H,
    then D."""
    n_blk, q_d, q_h, q_w, cc = xs.shape
    l_d, l_h, l_w = 1 + 2 * wino[0], 1 + 2 * wino[1], 1 + 2 * wino[2]
    t_d = (q_d - 1) // 2 if wino[0] else q_d
    t_h = (q_h - 1) // 2 if wino[1] else q_h
    t_w = (q_w - 1) // 2 if wino[2] else q_w
    cols = v.shape[1]
    xsf = xs.reshape(-1)
    vf = v.reshape(-1)
    e = np.empty((27, cc), xs.dtype)  # (u_d, u_h, b) after the W pass
    f = np.empty((27, cc), xs.dtype)  # (u_d, a, b) after the H pass
    width = uintp(cc)
    col = col0
    for nb in range(n_blk):
        for td in range(t_d):
            for th in range(t_h):
                for tw in range(t_w):
                    for u_d in range(l_d):
                        for u_h in range(l_h):
                            r = (u_d * 3 + u_h) * 3
                            qd, qh = td * (1 + wino[0]) + u_d, th * (1 + wino[1]) + u_h
                            src = uintp((((nb * q_d + qd) * q_h + qh) * q_w + tw * (1 + wino[2])) * cc)
                            e0, e1, e2 = e[r], e[min(r + 1, 26)], e[min(r + 2, 26)]
                            if l_w == 1:
                                for c in range(width):
                                    e0[c] = xsf[src + c]
                            else:
                                for c in range(width):
                                    d1 = xsf[src + width + c]
                                    e0[c] = xsf[src + c] + d1
                                    e1[c] = d1
                                    e2[c] = d1 + xsf[src + 2 * width + c]
                    for u_d in range(l_d):
                        for b in range(l_w):
                            r = u_d * 9 + b
                            if l_h == 1:
                                f[r, :] = e[r, :]
                            else:
                                a0, a1, a2 = e[r], e[r + 3], e[r + 6]
                                f0, f1, f2 = f[r], f[r + 3], f[r + 6]
                                for c in range(width):
                                    d1 = a1[c]
                                    f0[c] = a0[c] + d1
                                    f1[c] = d1
                                    f2[c] = d1 + a2[c]
                    for a in range(l_h):
                        for b in range(l_w):
                            r = a * 3 + b
                            k = a * l_w + b
                            dst = uintp((k * cols + col) * cc)
                            if l_d == 1:
                                g0 = f[r]
                                for c in range(width):
                                    vf[dst + c] = g0[c]
                            else:
                                plane = uintp(l_h * l_w * cols * cc)
                                g0, g1, g2 = f[r], f[r + 9], f[r + 18]
                                for c in range(width):
                                    d1 = g1[c]
                                    vf[dst + c] = g0[c] + d1
                                    vf[dst + plane + c] = d1
                                    vf[dst + 2 * plane + c] = d1 + g2[c]
                    col += 1


@njit(**NJIT_FLAGS)
def _taps_to_points(h, l_d, l_h, l_w, out):
    """The two-tap transform of the rows ``h[(j_d * 2 + j_h) * 2 + j_w]`` into the points' rows
    ``out[(z * l_h + a) * l_w + b]``, along W, then H, then D (vector loops along the rows)."""
    cc = h.shape[1]
    e = np.empty((12, cc), h.dtype)   # (j_d, j_h, b)
    f = np.empty((18, cc), h.dtype)   # (j_d, a, b)
    for j_d in range(2 if l_d == 3 else 1):
        for j_h in range(2 if l_h == 3 else 1):
            at, r = (j_d * 2 + j_h) * 2, (j_d * 2 + j_h) * 3
            if l_w == 1:
                for c in range(cc):
                    e[r, c] = h[at, c]
            else:
                for c in range(cc):
                    g0, g1 = h[at, c], h[at + 1, c]
                    e[r, c] = g0
                    e[r + 1, c] = g1 - g0
                    e[r + 2, c] = g1
    for j_d in range(2 if l_d == 3 else 1):
        for b in range(l_w):
            r0, r = (j_d * 2) * 3 + b, (j_d * 3) * 3 + b
            if l_h == 1:
                for c in range(cc):
                    f[r, c] = e[r0, c]
            else:
                for c in range(cc):
                    g0, g1 = e[r0, c], e[r0 + 3, c]
                    f[r, c] = g0
                    f[r + 3, c] = g1 - g0
                    f[r + 6, c] = g1
    for a in range(l_h):
        for b in range(l_w):
            r, k = a * 3 + b, a * l_w + b
            if l_d == 1:
                for c in range(cc):
                    out[k, c] = f[r, c]
            else:
                step = l_h * l_w
                for c in range(cc):
                    g0, g1 = f[r, c], f[r + 9, c]
                    out[k, c] = g0
                    out[k + step, c] = g1 - g0
                    out[k + 2 * step, c] = g1


@njit(**NJIT_FLAGS)
def _move_taps(h, w, co, stride, wino, into_rows):
    """Output channel ``co``'s kernel taps ``w[co, ci, j * s + p]`` and the rows of ``h``, one row per transformed
    tap ``(j_d, j_h, j_w)``, its columns the space-to-depth channels ``(p_d, p_h, p_w, ci)``: copied into ``h``
    (``into_rows``: ``s2d_weight``) or from it into ``w`` (``s2d_weight_grad``'s store)."""
    cin_g = w.shape[1]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    for j_d in range(1 + wino[0]):
        for j_h in range(1 + wino[1]):
            for j_w in range(1 + wino[2]):
                row = (j_d * 2 + j_h) * 2 + j_w
                for p_d in range(s_d):
                    for p_h in range(s_h):
                        for p_w in range(s_w):
                            base = ((p_d * s_h + p_h) * s_w + p_w) * cin_g
                            k_d, k_h, k_w = j_d * s_d + p_d, j_h * s_h + p_h, j_w * s_w + p_w
                            for ci in range(cin_g):
                                if into_rows:
                                    h[row, base + ci] = w[co, ci, k_d, k_h, k_w]
                                else:
                                    w[co, ci, k_d, k_h, k_w] = h[row, base + ci]


@njit(**NJIT_FLAGS)
def s2d_weight(w, u, stride, wino, co_lo, co_hi):
    """``U`` of the output channels ``[co_lo, co_hi)``: ``u[point, co, c'_g]`` from the phase taps
    ``w[co, ci, j * s + p]`` (two per transformed axis), ``c'_g = phase * C_in_g + ci`` within the group."""
    cin_g = w.shape[1]
    l_d, l_h, l_w = 1 + 2 * wino[0], 1 + 2 * wino[1], 1 + 2 * wino[2]
    phases = stride[0] * stride[1] * stride[2]
    h = np.zeros((8, phases * cin_g), w.dtype)
    out = np.empty((27, phases * cin_g), w.dtype)
    for co in range(co_lo, co_hi):
        _move_taps(h, w, co, stride, wino, True)
        _taps_to_points(h, l_d, l_h, l_w, out)
        for k in range(l_d * l_h * l_w):
            u[k, co, :] = out[k, :]


@njit(**NJIT_FLAGS)
def s2d_weight_grad(q, gw, stride, wino, co_lo, co_hi):
    """The weight gradient of the output channels ``[co_lo, co_hi)`` from the point sums ``q[point, co, c'_g]``:
    per axis ``q_0 + q_1, q_2 - q_1`` (``G^T``), along W, then H, then D, into the kernel's taps
    ``gw[co, ci, j * s + p]``."""
    l_d, l_h, l_w = 1 + 2 * wino[0], 1 + 2 * wino[1], 1 + 2 * wino[2]
    q_h, q_w = 1 + wino[1], 1 + wino[2]
    width = q.shape[2]
    e = np.empty((18, width), q.dtype)  # (z, a, j_w)
    f = np.empty((12, width), q.dtype)  # (z, j_h, j_w)
    h = np.empty((8, width), q.dtype)   # (j_d, j_h, j_w)
    for co in range(co_lo, co_hi):
        for z in range(l_d):
            for a in range(l_h):
                k, r = (z * l_h + a) * l_w, (z * 3 + a) * 2
                if l_w == 1:
                    e[r, :] = q[k, co, :]
                else:
                    for c in range(width):
                        m1 = q[k + 1, co, c]
                        e[r, c] = q[k, co, c] + m1
                        e[r + 1, c] = q[k + 2, co, c] - m1
        for z in range(l_d):
            for b in range(q_w):
                r0, r = z * 6 + b, z * 4 + b
                if l_h == 1:
                    f[r, :] = e[r0, :]
                else:
                    for c in range(width):
                        m1 = e[r0 + 2, c]
                        f[r, c] = e[r0, c] + m1
                        f[r + 2, c] = e[r0 + 4, c] - m1
        for j_h in range(q_h):
            for j_w in range(q_w):
                r = j_h * 2 + j_w
                if l_d == 1:
                    h[r, :] = f[r, :]
                else:
                    for c in range(width):
                        m1 = f[r + 4, c]
                        h[r, c] = f[r, c] + m1
                        h[4 + r, c] = f[r + 8, c] - m1
        _move_taps(h, gw, co, stride, wino, False)


@njit(**NJIT_FLAGS)
def s2d_dual(dual, a, n_lo, n_blk, t_lo, tiles, wino, col0):
    """``A dy`` of a block of ``n_blk`` samples: ``a[point, col0 + col, co]`` from the tiles' two outputs per axis
    ``dual[n, co, 2 t + j]`` (zero beyond the output), ``col`` as in :func:`s2d_transform`."""
    c_out = dual.shape[1]
    size_d, size_h, size_w = dual.shape[2], dual.shape[3], dual.shape[4]
    l_d, l_h, l_w = 1 + 2 * wino[0], 1 + 2 * wino[1], 1 + 2 * wino[2]
    zero = dual.dtype.type(0)
    h = np.zeros((8, c_out), dual.dtype)
    out = np.empty((27, c_out), dual.dtype)
    col = col0
    for nb in range(n_blk):
        for td in range(tiles[0]):
            for th in range(tiles[1]):
                for tw in range(tiles[2]):
                    for j_d in range(1 + wino[0]):
                        o_d = (td + t_lo[0]) * (1 + wino[0]) + j_d
                        for j_h in range(1 + wino[1]):
                            o_h = (th + t_lo[1]) * (1 + wino[1]) + j_h
                            for j_w in range(1 + wino[2]):
                                o_w = (tw + t_lo[2]) * (1 + wino[2]) + j_w
                                row = (j_d * 2 + j_h) * 2 + j_w
                                if o_d < size_d and o_h < size_h and o_w < size_w:
                                    for co in range(c_out):
                                        h[row, co] = dual[n_lo + nb, co, o_d, o_h, o_w]
                                else:
                                    for co in range(c_out):
                                        h[row, co] = zero
                    _taps_to_points(h, l_d, l_h, l_w, out)
                    for k in range(l_d * l_h * l_w):
                        for co in range(c_out):
                            a[k, col, co] = out[k, co]
                    col += 1


@njit(**NJIT_FLAGS)
def _store_tile(f, y, n, first, wino):
    """``s2d_inverse``'s store of one tile of sample ``n`` whose first output is ``first = (o_d, o_h, o_w)``: the
    last pass (along D, ``f``'s rows ``r``, ``r + 4``, ``r + 8``) into the outputs inside ``y``."""
    c_out = y.shape[1]
    size_d, size_h, size_w = y.shape[2], y.shape[3], y.shape[4]
    l_d = 1 + 2 * wino[0]
    for j_d in range(1 + wino[0]):
        o_d = first[0] + j_d
        for j_h in range(1 + wino[1]):
            o_h = first[1] + j_h
            for j_w in range(1 + wino[2]):
                o_w = first[2] + j_w
                if o_d >= size_d or o_h >= size_h or o_w >= size_w:
                    continue
                r = j_h * 2 + j_w
                if l_d == 1:
                    for co in range(c_out):
                        y[n, co, o_d, o_h, o_w] = f[r, co]
                elif j_d == 0:
                    for co in range(c_out):
                        y[n, co, o_d, o_h, o_w] = f[r, co] + f[r + 4, co]
                else:
                    for co in range(c_out):
                        y[n, co, o_d, o_h, o_w] = f[r + 8, co] - f[r + 4, co]


@njit(**NJIT_FLAGS)
def s2d_inverse(m, y, n_lo, n_blk, t_lo, tiles, wino, col0):
    """The outputs of a block of ``n_blk`` samples from the point products ``m[point, col0 + col, co]``: per axis
    ``m_0 + m_1, m_2 - m_1`` at ``2 t, 2 t + 1`` (those inside ``y``), along W, then H, then D."""
    c_out = y.shape[1]
    l_d, l_h, l_w = 1 + 2 * wino[0], 1 + 2 * wino[1], 1 + 2 * wino[2]
    q_d, q_h, q_w = 1 + wino[0], 1 + wino[1], 1 + wino[2]  # outputs per tile per axis
    e = np.empty((18, c_out), m.dtype)  # (z, a, j_w)
    f = np.empty((12, c_out), m.dtype)  # (z, j_h, j_w)
    col = col0
    for nb in range(n_blk):
        for td in range(tiles[0]):
            for th in range(tiles[1]):
                for tw in range(tiles[2]):
                    for z in range(l_d):
                        for a in range(l_h):
                            k, r = (z * l_h + a) * l_w, (z * 3 + a) * 2
                            if l_w == 1:
                                for co in range(c_out):
                                    e[r, co] = m[k, col, co]
                            else:
                                for co in range(c_out):
                                    m1 = m[k + 1, col, co]
                                    e[r, co] = m[k, col, co] + m1
                                    e[r + 1, co] = m[k + 2, col, co] - m1
                    for z in range(l_d):
                        for b in range(q_w):
                            r0, r = z * 6 + b, z * 4 + b
                            if l_h == 1:
                                for co in range(c_out):
                                    f[r, co] = e[r0, co]
                            else:
                                for co in range(c_out):
                                    m1 = e[r0 + 2, co]
                                    f[r, co] = e[r0, co] + m1
                                    f[r + 2, co] = e[r0 + 4, co] - m1
                    _store_tile(f, y, n_lo + nb, ((td + t_lo[0]) * q_d, (th + t_lo[1]) * q_h, (tw + t_lo[2]) * q_w),
                                wino)
                    col += 1
