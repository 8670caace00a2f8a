"""Gather form with Winograd minimal filtering: each output phase is a small dense correlation, done as F(2, r).

Along an axis with stride ``s`` the outputs ``o = phase + s * m`` are all reached by the same ``r`` taps (see
``gather_gemm``), tap ``u`` reading the input at ``m + base + delta * u``: a correlation with an ``r``-tap
sub-kernel whose sources are ``delta`` apart (``delta = dilation / gcd(stride, dilation)``). Splitting the
phase's outputs by ``m mod delta`` gives ``delta`` sub-phases, each a dense correlation of every ``delta``-th
input. When every phase of every axis has the same ``r`` in {1, 2, 3} (``kernel % stride == 0`` gives this:
DCGAN's 4x4 stride-2 blocks, 3x3 stride-1 and dilated layers, their 1-D and 3-D kin), Winograd's F(M, r)
computes ``M`` outputs of a tile from ``alpha = M + r - 1`` inputs with ``alpha`` products instead of
``M * r``: ``y = A^T [(G g) * (B^T d)]`` per axis. In 2-D, F(2x2, 2x2) needs 9 products per 4 outputs x 4 taps
(1.78x fewer) and F(2x2, 3x3) 16 per 4 x 9 (2.25x fewer); in 3-D, 27 per 8 x 8 and 64 per 8 x 27. With
channels every transform point ``xi`` is one GEMM, ``M_xi (tiles, C_out block) = V_xi (tiles, C_in_g) @ U_xi
(C_in_g, C_out block)`` with ``U_xi = sum_u G[xi, u] w_u`` (transformed weights) and ``V_xi = sum_v B^T[xi, v]
x_v`` (transformed input tiles, from a channels-last packed copy of the input); ``inverse`` then forms each
output as ``bias + sum_xi A^T[i, xi] M_xi``.

The matrices hold only 0, +-1 and 1/2, so the rounding is that of a few extra additions (~1e-6 relative in
float32; the tests hold it to the same tolerance as every other variant). Every output element is written
once, by one thread, from the same sums in the same order whatever the current thread count: results are
bitwise identical across calls and ``set_num_threads`` values. Not across numba's pool sizes: the chunks are
sized for ``NUMBA_NUM_THREADS`` (``_choice``), so the GEMMs' tile and channel sides differ, and OpenBLAS, which
picks its kernels by the sizes, may sum a product's terms in another order (the last bits; ~4e-7 relative
measured in float32).

Weights: either every (weight phase, point)'s U is made once per call, straight from the weight, and shared by
the workers (``shares_weights``: when they take at most 3/4 of the output and the cost model finds it pays), or
the weights are re-laid out per (output phase, tap) as contiguous (C_in, C_out_g) planes (the size of the
weight) and each chunk makes the U of its points. Memory: each worker holds its packed input rows, one U, one V
and the ``alpha^rank`` M blocks of its chunk. Chunks (sample block, block of tile rows, output-channel block) are
chosen by the cost model (``_choice``: BLAS's rate by product size, the transforms slower once a chunk outgrows
L2, shared weights larger than L2 re-read by every chunk) among those for which all of it stays within one
output's size; when nothing fits (weights larger than the output), the variant is not a candidate.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache, lru_cache
from math import prod as _prod
from typing import NamedTuple

import numpy as np
from numba import from_dtype, types

from .. import _compiled
from .. import _geometry as geo
from .. import _model as M
from .._compiled import njit
from .._runtime import run_parallel
from .._threads import max_threads
from ..config import NJIT_FLAGS
from ._index import at
from .scan import max_abs

# F(M, r) in correlation form, y_i = sum_u d[i + u] g[u]:  y = AT @ ((G @ g) * (BT @ d)), from Toom-Cook on
# the interpolation points below (plus infinity): F(2, 2) has only 0 and +-1, F(2, 3) adds 1/2. (F(4, 2) on
# points 0, +-1, 2 is no faster on the DCGAN and super-resolution layers, whose transforms grow denser, and
# has 10x the rounding error, ~5e-6 relative in float32; so M = 2.)
POINTS = {(1, 1): (), (2, 2): (0, -1), (2, 3): (0, 1, -1)}
TILES = {1: (1,), 2: (2,), 3: (2,)}  # candidate M per sub-kernel length r
PACK_CHANNELS = 16  # channels ``pack`` transposes at a time (one 64-byte vector of float32)
TRANSFORM_ROWS = 16  # input channels ``transform_weights`` transforms at a time


@cache
def matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T (alpha, alpha), G (alpha, r), A^T (M, alpha)) of F(M, r), float64 (rows of B^T and G: points).

    Linear convolution by Toom-Cook evaluates at the points (``A``, ``G``: Vandermonde rows, infinity the
    leading coefficient) and interpolates (``C = V^-1``); correlation is its transpose: ``B^T = C^T``,
    ``A^T = A^T`` (Winograd's transposition principle). Computed in exact fractions.
    """
    alpha = m + r - 1
    pts = [Fraction(p) for p in POINTS[m, r]]

    def rows(n):
        return [[p ** i for i in range(n)] for p in pts] + [[Fraction(int(i == n - 1)) for i in range(n)]]

    v, a, g = rows(alpha), rows(m), rows(r)
    # invert the Vandermonde matrix v (Gauss-Jordan in fractions)
    aug = [row + [Fraction(int(i == j)) for j in range(alpha)] for i, row in enumerate(v)]
    for c in range(alpha):
        pivot = next(i for i in range(c, alpha) if aug[i][c] != 0)
        aug[c], aug[pivot] = aug[pivot], aug[c]
        aug[c] = [e / aug[c][c] for e in aug[c]]
        for i in range(alpha):
            if i != c and aug[i][c] != 0:
                aug[i] = [e - aug[i][c] * f for e, f in zip(aug[i], aug[c])]
    inverse = [row[alpha:] for row in aug]
    bt = [[inverse[j][i] for j in range(alpha)] for i in range(alpha)]
    at = [[a[j][i] for j in range(alpha)] for i in range(m)]
    return tuple(np.array([[float(e) for e in row] for row in mat]) for mat in (bt, g, at))


def _tile_size(r: int, mcounts: list[int]) -> int:
    """M for an axis: the candidate with the fewest transform points over the phase's tiles (ties: smaller M)."""
    return min(TILES[r], key=lambda m: (sum(-(-c // m) for c in mcounts) * (m + r - 1), m))


# --------------------------------------------------------------------------- kernels (serial, nogil)
# The kernels index flat views with unsigned offsets (``_index.at``): see there. ``pack``, ``input_point`` and
# ``inverse`` have a single caller, ``run_task``, and are inlined into it (``inline="always"``): a separate
# function would be compiled on its own and then once more as part of ``run_task``. ``weight_point`` has two
# callers and stays a function (inlined it would be typed and compiled in each).


@njit(**NJIT_FLAGS)
def relayout(w, taps, r, ci_lo, ci_hi, wt):
    """``wt[p, u, ci, co] = w[ci, co, taps[p, 0, u_d], taps[p, 1, u_h], taps[p, 2, u_w]]`` for ci in [lo, hi).

    ``u = (u_d * r_h + u_h) * r_w + u_w`` runs over the phase's (r_d, r_h, r_w) taps.
    """
    n_phase, n_tap, c_in, c_out = wt.shape
    k_d, k_h, k_w = w.shape[2], w.shape[3], w.shape[4]
    k_all = k_d * k_h * k_w
    wf, tf = w.reshape(-1), wt.reshape(-1)
    for p in range(n_phase):
        u = 0
        for u_d in range(r[0]):
            for u_h in range(r[1]):
                for u_w in range(r[2]):
                    tap = (taps[p, 0, u_d] * k_h + taps[p, 1, u_h]) * k_w + taps[p, 2, u_w]
                    for ci in range(ci_lo, ci_hi):
                        dst = ((p * n_tap + u) * c_in + ci) * c_out
                        src = ci * c_out * k_all + tap
                        for co in range(c_out):
                            tf[at(dst + co)] = wf[at(src + co * k_all)]
                    u += 1


@njit(**NJIT_FLAGS)
def weight_point(wt, p, coefs, ci0, c0, u_mat):
    """``u_mat[ci, co] = sum_u coefs[u] * wt[p, u, ci0 + ci, c0 + co]`` (the transformed weights of one point)."""
    cin_g, cb = u_mat.shape
    n_tap, c_in, c_out = wt.shape[1], wt.shape[2], wt.shape[3]
    wf, uf = wt.reshape(-1), u_mat.reshape(-1)
    first = True
    for u in range(coefs.shape[0]):
        c = coefs[u]
        if c == 0:
            continue
        base = ((p * n_tap + u) * c_in + ci0) * c_out + c0
        for ci in range(cin_g):
            src = base + ci * c_out
            dst = ci * cb
            if first:
                for co in range(cb):
                    uf[at(dst + co)] = c * wf[at(src + co)]
            else:
                for co in range(cb):
                    uf[at(dst + co)] += c * wf[at(src + co)]
        first = False
    if first:
        uf[:] = 0


@njit(**NJIT_FLAGS)
def pack(x, n0, nb, ci0, offset, r0, xp, tile):
    """``xp[j, offset[0] + i_d, offset[1] + i_h - r0, offset[2] + i_w, ci] = x[n0 + j, ci0 + ci, i_d, i_h, i_w]``.

    Channels-last and zero-padded (zero elsewhere): every transform point then reads whole channel vectors,
    never a border test. The buffer holds the padded rows ``[r0, r0 + rows)`` only (a block of tile rows and
    its halo) of every depth plane. Per input row, 16 channels at a time: their rows are copied into ``tile``
    (16 x W, contiguous copies), then written out transposed, one 16-channel vector per column (a 64-byte
    store). Reading the channels straight from the input (planes a page apart, one cache set) thrashes the L1
    cache, and so does a 64 x 64 blocked transpose of the planes.
    """
    size_d, size_h, size_w = x.shape[2], x.shape[3], x.shape[4]
    depth, rows, cols, cin = xp.shape[1], xp.shape[2], xp.shape[3], xp.shape[4]
    plane = size_h * size_w
    volume = size_d * plane
    xf, pf, tf = x.reshape(-1), xp.reshape(-1), tile.reshape(-1)
    pf[:nb * depth * rows * cols * cin] = 0
    lo = max(0, r0 - offset[1])
    hi = min(size_h, r0 + rows - offset[1])
    for j in range(nb):
        for i_d in range(size_d):
            for i_h in range(lo, hi):
                dst_row = ((j * depth + offset[0] + i_d) * rows + offset[1] + i_h - r0) * cols + offset[2]
                src_row = ((n0 + j) * x.shape[1] + ci0) * volume + i_d * plane + i_h * size_w
                for c_lo in range(0, cin, PACK_CHANNELS):
                    c_n = min(PACK_CHANNELS, cin - c_lo)
                    for c in range(c_n):
                        src = src_row + (c_lo + c) * volume
                        for i_w in range(size_w):
                            tf[at(c * size_w + i_w)] = xf[at(src + i_w)]
                    if c_n == PACK_CHANNELS:  # a constant trip count: one vector per column
                        for i_w in range(size_w):
                            dst = (dst_row + i_w) * cin + c_lo
                            for c in range(PACK_CHANNELS):
                                pf[at(dst + c)] = tf[at(c * size_w + i_w)]
                    else:
                        for i_w in range(size_w):
                            dst = (dst_row + i_w) * cin + c_lo
                            for c in range(c_n):
                                pf[at(dst + c)] = tf[at(c * size_w + i_w)]


@njit(**NJIT_FLAGS)
def input_point(xp, nb, terms, step, ntiles, vt):
    """``vt[t, ci] = sum over terms of c * xp[j, t_d * step_d + v_d, t_h * step_h + v_h, t_w * step_w + v_w, ci]``.

    ``terms`` (the point's nonzero B^T products, offsets already relative to the padded buffer) are
    (coefficient, depth, row, column offset); tiles ``t = ((j * T_d + t_d) * T_h + t_h) * T_w + t_w`` start
    ``step`` inputs apart (M, times the sub-kernel's dilation). The terms are summed in table order, up to four
    per pass over a tile row of ``vt`` (one store per element per pass; a 2-D point has 1, 2 or 4 terms).
    """
    t_d, t_h, t_w = ntiles[0], ntiles[1], ntiles[2]
    depth, rows, cols, cin = xp.shape[1], xp.shape[2], xp.shape[3], xp.shape[4]
    pf, vf = xp.reshape(-1), vt.reshape(-1)
    col_step = step[2] * cin
    n_terms = terms.shape[0]
    nz = vt.dtype.type(-0.0)  # the first term's pass starts from -0.0: -0.0 + v is v, bit for bit
    for j in range(nb):
        for a_d in range(t_d):
            for a in range(t_h):
                row = (((j * t_d + a_d) * t_h + a) * t_w) * cin
                plane = j * depth + a_d * step[0]
                k = 0
                while k < n_terms:
                    take = 4 if n_terms - k >= 4 else (2 if n_terms - k >= 2 else 1)
                    s0 = (((plane + int(terms[k, 1])) * rows + a * step[1] + int(terms[k, 2])) * cols
                          + int(terms[k, 3])) * cin
                    c0 = terms[k, 0]
                    first = k == 0
                    if take == 1:
                        for b in range(t_w):
                            d, o = row + b * cin, s0 + b * col_step
                            for ci in range(cin):
                                acc = nz if first else vf[at(d + ci)]
                                vf[at(d + ci)] = acc + c0 * pf[at(o + ci)]
                        k += 1
                        continue
                    s1 = (((plane + int(terms[k + 1, 1])) * rows + a * step[1] + int(terms[k + 1, 2])) * cols
                          + int(terms[k + 1, 3])) * cin - s0
                    c1 = terms[k + 1, 0]
                    if take == 2:
                        for b in range(t_w):
                            d, o = row + b * cin, s0 + b * col_step
                            for ci in range(cin):
                                acc = nz if first else vf[at(d + ci)]
                                vf[at(d + ci)] = (acc + c0 * pf[at(o + ci)]) + c1 * pf[at(o + s1 + ci)]
                        k += 2
                        continue
                    s2 = (((plane + int(terms[k + 2, 1])) * rows + a * step[1] + int(terms[k + 2, 2])) * cols
                          + int(terms[k + 2, 3])) * cin - s0
                    s3 = (((plane + int(terms[k + 3, 1])) * rows + a * step[1] + int(terms[k + 3, 2])) * cols
                          + int(terms[k + 3, 3])) * cin - s0
                    c2, c3 = terms[k + 2, 0], terms[k + 3, 0]
                    for b in range(t_w):
                        d, o = row + b * cin, s0 + b * col_step
                        for ci in range(cin):
                            acc = nz if first else vf[at(d + ci)]
                            vf[at(d + ci)] = (((acc + c0 * pf[at(o + ci)]) + c1 * pf[at(o + s1 + ci)])
                                              + c2 * pf[at(o + s2 + ci)]) + c3 * pf[at(o + s3 + ci)]
                    k += 4


@njit(**NJIT_FLAGS)
def inverse(m_blocks, terms, buf, y, bias, n0, nb, c0, phase, stride, msize, mcount, ntiles, th0):
    """``y[n0 + j, c0 + c, phase + stride * m] = sum_xi A[i, xi] * m_blocks[xi, t, c] + bias``, ``m = t * M + i``.

    Tiles ``t`` are local to the chunk: tile row ``a`` is the phase's tile row ``th0 + a``.
    ``terms[i]`` lists output ``i``'s nonzero (coefficient, point) pairs, zero-padded at the end. One output
    row of the phase at a time: every tile's sums run over the channel vector (contiguous) into ``buf``
    (row x channels), then each channel's row is stored; outputs beyond the phase are skipped. (Storing
    channel by channel per element would hit planes a page apart in turn: one cache set, thrashed.)
    """
    n_pt, n_t, cb = m_blocks.shape
    t_d, t_h, t_w = ntiles[0], ntiles[1], ntiles[2]
    m_d, m_h, m_w = msize[0], msize[1], msize[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    o_h, o_w = y.shape[3], y.shape[4]
    volume = y.shape[2] * o_h * o_w
    run = min(mcount[2], t_w * m_w)
    mf, yf, bf = m_blocks.reshape(-1), y.reshape(-1), buf.reshape(-1)
    nz = buf.dtype.type(-0.0)  # the first term's pass starts from -0.0: -0.0 + v is v, bit for bit
    for j in range(nb):
        sample = ((n0 + j) * y.shape[1] + c0) * volume
        for a_d in range(t_d):
            for i_d in range(m_d):
                md = a_d * m_d + i_d
                if md >= mcount[0]:
                    break
                for a in range(t_h):
                    for i_h in range(m_h):
                        mh = (th0 + a) * m_h + i_h
                        if mh >= mcount[1]:
                            break
                        t0 = ((j * t_d + a_d) * t_h + a) * t_w
                        for i_w in range(m_w):
                            i = (i_d * m_h + i_h) * m_w + i_w
                            count = 0  # tiles of this row whose output i_w lies inside the phase
                            while count < t_w and count * m_w + i_w < run:
                                count += 1
                            n_terms = 0
                            while n_terms < terms.shape[1] and terms[i, n_terms, 0] != 0:
                                n_terms += 1
                            k = 0
                            while k < n_terms:  # up to four terms per pass over the row, in table order
                                take = 4 if n_terms - k >= 4 else (2 if n_terms - k >= 2 else 1)
                                c_0, s_0 = terms[i, k, 0], (int(terms[i, k, 1]) * n_t + t0) * cb
                                c_1, s_1 = c_0, s_0
                                c_2, s_2, c_3, s_3 = c_0, s_0, c_0, s_0
                                if take >= 2:
                                    c_1, s_1 = terms[i, k + 1, 0], (int(terms[i, k + 1, 1]) * n_t + t0) * cb
                                if take == 4:
                                    c_2, s_2 = terms[i, k + 2, 0], (int(terms[i, k + 2, 1]) * n_t + t0) * cb
                                    c_3, s_3 = terms[i, k + 3, 0], (int(terms[i, k + 3, 1]) * n_t + t0) * cb
                                first = k == 0
                                for b in range(count):
                                    dst, o = (b * m_w + i_w) * cb, b * cb
                                    if take == 1:
                                        for c in range(cb):
                                            acc = nz if first else bf[at(dst + c)]
                                            bf[at(dst + c)] = acc + c_0 * mf[at(s_0 + o + c)]
                                    elif take == 2:
                                        for c in range(cb):
                                            acc = nz if first else bf[at(dst + c)]
                                            bf[at(dst + c)] = (acc + c_0 * mf[at(s_0 + o + c)]) \
                                                + c_1 * mf[at(s_1 + o + c)]
                                    else:
                                        for c in range(cb):
                                            acc = nz if first else bf[at(dst + c)]
                                            acc = (acc + c_0 * mf[at(s_0 + o + c)]) + c_1 * mf[at(s_1 + o + c)]
                                            bf[at(dst + c)] = (acc + c_2 * mf[at(s_2 + o + c)]) \
                                                + c_3 * mf[at(s_3 + o + c)]
                                k += take
                        dst = sample + ((phase[0] + s_d * md) * o_h + phase[1] + s_h * mh) * o_w + phase[2]
                        for c in range(cb):
                            bv = bias[c0 + c]
                            for q in range(run):
                                yf[at(dst + c * volume + q * s_w)] = bf[at(q * cb + c)] + bv


@njit(**NJIT_FLAGS)
def transform_weights(w, taps, r, u_coefs, groups, cb_max, ci_lo, ci_hi, tmp, u_all):
    """Every (weight phase ``p``, point ``xi``)'s transformed weights, rows ``[ci_lo, ci_hi)``, straight from the
    weight: ``U[ci, co] = sum_u coefs[xi, u] * w[ci, co, tap u of p]`` (``weight_point``'s sums), stored per
    unit ``p * points + xi`` and block of ``cb_max`` output channels (``c0``) at ``unit * C_in * C_out_g + c0 *
    C_in``, a group's ``cin_g`` rows contiguous. ``TRANSFORM_ROWS`` input channels at a time (within a group),
    the phase's taps are first copied into ``tmp`` (``weight_point``'s layout: taps x rows x C_out_g), so the
    weight is read once and each ``weight_point`` call sums whole blocks of rows."""
    c_in, cout_g = w.shape[0], w.shape[1]
    k_h, k_w = w.shape[3], w.shape[4]
    k_all = w.shape[2] * k_h * k_w
    cin_g = c_in // groups
    n_pt, n_tap = u_coefs.shape[0], u_coefs.shape[1]
    per_point = c_in * cout_g
    wf, tf, uf = w.reshape(-1), tmp.reshape(-1), u_all.reshape(-1)
    zero = np.int64(0)  # (a literal 0 would make numba compile ``weight_point`` again, for ``Literal[int](0)``)
    ci_b = ci_lo
    while ci_b < ci_hi:
        gi = ci_b // cin_g
        row0 = ci_b - gi * cin_g
        rows = min(TRANSFORM_ROWS, ci_hi - ci_b, cin_g - row0)
        taps_rows = tmp[:n_tap * rows * cout_g].reshape((1, n_tap, rows, cout_g))
        for p in range(taps.shape[0]):
            u = 0
            for u_d in range(r[0]):
                for u_h in range(r[1]):
                    for u_w in range(r[2]):
                        tap = (taps[p, 0, u_d] * k_h + taps[p, 1, u_h]) * k_w + taps[p, 2, u_w]
                        for q in range(rows):
                            src = (ci_b + q) * cout_g * k_all + tap
                            dst = (u * rows + q) * cout_g
                            for co in range(cout_g):
                                tf[at(dst + co)] = wf[at(src + co * k_all)]
                        u += 1
            for xi in range(n_pt):
                for c0 in range(0, cout_g, cb_max):
                    cb = min(cb_max, cout_g - c0)
                    dst = (p * n_pt + xi) * per_point + c0 * c_in + (gi * cin_g + row0) * cb
                    weight_point(taps_rows, zero, u_coefs[xi], zero, c0, uf[dst:dst + rows * cb].reshape((rows, cb)))
        ci_b += rows


@njit(**NJIT_FLAGS)
def run_task(x, wt, bias, y, gi, cin_g, n0, nb, th0, nth, c0, cb, repack, tables, u_coefs, v_terms, v_counts,
             a_terms, msize, step, offset, stride, xp_buf, v_buf, u_buf, m_buf, buf, u_all, tile):
    """One chunk: group ``gi``, samples ``n0 : n0 + nb``, tile rows ``th0 : th0 + nth``, channels ``c0 : c0 + cb``.

    Every sub-phase, every point. ``tables[p] = (phase (3,), mcount (3,), ntiles (3,), (weight phase, 0, 0))``;
    ``v_terms[p, xi, :v_counts[p, xi]]`` are the point's input-transform terms (see ``input_point``). The GEMM
    of each point is ``np.dot`` on contiguous blocks (BLAS, called from numba: no Python round trip per point).
    ``repack`` is False when the previous chunk of this worker packed the same samples and rows. A non-empty
    ``u_all`` holds every point's transformed weights (``shares_weights``, see ``transform_weights``); otherwise
    each point's are computed here into ``u_buf``.
    """
    xp = xp_buf[:nb]
    if repack:
        pack(x, n0, nb, gi * cin_g, offset, th0 * step[1], xp, tile)
    n_pt = u_coefs.shape[0]
    shared = u_all.shape[0] > 0
    c_in = x.shape[1]
    cout_g = y.shape[1] // (c_in // cin_g)  # (not wt.shape[3]: with shared weights wt is an empty stand-in)
    per_point = c_in * cout_g
    u_mat = u_buf[:cin_g * cb].reshape((cin_g, cb))
    local = np.empty(3, np.int64)  # (set per phase below)
    for p in range(tables.shape[0]):
        if tables[p, 1, 0] == 0 or tables[p, 1, 1] == 0 or tables[p, 1, 2] == 0:
            continue
        local[0] = tables[p, 2, 0]
        local[1] = min(nth, tables[p, 2, 1] - th0)
        local[2] = tables[p, 2, 2]
        if local[1] <= 0:
            continue
        tiles = nb * local[0] * local[1] * local[2]
        vt = v_buf[:tiles * cin_g].reshape((tiles, cin_g))
        m_blocks = m_buf[:n_pt * tiles * cb].reshape((n_pt, tiles, cb))
        wph = tables[p, 3, 0]
        for xi in range(n_pt):
            if shared:
                first = (wph * n_pt + xi) * per_point + c0 * c_in + gi * cin_g * cb
                u_mat = u_all[first:first + cin_g * cb].reshape((cin_g, cb))
            else:
                weight_point(wt, wph, u_coefs[xi], gi * cin_g, c0, u_mat)
            input_point(xp, nb, v_terms[p, xi, :v_counts[p, xi]], step, local, vt)
            np.dot(vt, u_mat, m_blocks[xi])
        inverse(m_blocks, a_terms, buf, y, bias, n0, nb, gi * cout_g + c0, tables[p, 0], stride, msize,
                tables[p, 1], local, th0)


# --------------------------------------------------------------------------- geometry


class Phase(NamedTuple):
    phase: np.ndarray   # (3,) output offset of the (sub-)phase
    mcount: np.ndarray  # (3,) outputs of the sub-phase per axis
    ntiles: np.ndarray  # (3,) tiles per axis (ceil(mcount / M))
    wphase: int         # index of its output phase's re-laid-out weights (sub-phases share them)
    v_terms: tuple      # per point: (terms, 4) nonzero (B^T product, depth, row, column) in the padded buffer


class Layout(NamedTuple):
    phases: tuple[Phase, ...]
    wtaps: np.ndarray     # (output phases, 3, r_max) kernel index of tap u per axis (-1 unused)
    msize: np.ndarray     # (3,) M per axis
    step: np.ndarray      # (3,) input distance between neighbouring tiles (M x sub-kernel dilation)
    out_stride: np.ndarray  # (3,) output distance between neighbouring sub-phase outputs (stride x dilation)
    points: int           # alpha_d * alpha_h * alpha_w
    r: tuple[int, int, int]
    u_coefs: np.ndarray   # (points, taps) coefficients of the weight transform
    a_terms: np.ndarray   # (M_d * M_h * M_w, max terms, 2) nonzero (A^T product, point) per output, zero-padded
    tiles: int            # max tiles per sample over the phases
    row: int              # max outputs per phase row (tiles along the last axis x M)
    offset: np.ndarray    # (3,) padding before the input in the packed buffer
    padded: tuple[int, int, int]  # (depth, rows, columns) of the packed buffer per sample
    halo: int             # packed rows a block of n tile rows needs beyond n * step_h
    tile_rows: int        # max tile rows over the phases


def _axis_phases(a: geo.Axis):
    """Per output phase of an axis that has outputs: (phase, outputs, first source, taps in source order), and
    the spacing of the sources (the sub-kernel's dilation), or None when the phases differ in tap count or
    spacing (a phase with outputs but no tap among them: it has 0)."""
    phases = a.tap_phases()
    if len(phases) != a.phase_count:  # some phase with outputs has no tap (at most ``kernel`` have one)
        return None
    entries, counts, spacings = [], set(), set()
    for ph, mcount, ks, bases in phases:
        order = sorted(range(len(ks)), key=lambda i: bases[i])
        srcs = [bases[i] for i in order]
        spacing = srcs[1] - srcs[0] if len(srcs) > 1 else 1
        if any(q - p != spacing for p, q in zip(srcs, srcs[1:])):
            return None
        counts.add(len(ks))
        if len(ks) > 1:
            spacings.add(spacing)
        entries.append((ph, mcount, srcs[0], [ks[i] for i in order]))
    if len(counts) != 1 or len(spacings) > 1:
        return None
    return entries, (spacings.pop() if spacings else 1)


# The packed input of an axis may exceed its input by this many elements beyond twice (input + kernel): a
# sub-kernel whose sources lie farther apart (huge dilations) reads mostly zeros, and its buffers would grow with
# the dilation value rather than with the sizes.
PADDED_SLACK = 64


@lru_cache(maxsize=256)
def layout(plan: geo.Plan) -> Layout | None:
    """Sub-phases, tile sizes and transform coefficients, or None when Winograd does not apply (or cannot help).

    It applies to layers whose output phases all have the same number ``r`` in {1, 2, 3} of taps per axis
    with evenly spaced sources (``kernel % stride == 0`` gives this; dilation spaces them), with ``r >= 2`` on
    some axis. Sources ``delta`` apart split a phase into ``delta`` sub-phases (outputs ``m = rho + delta *
    m'``), each a dense correlation of every ``delta``-th input.
    """
    if plan.c_in // plan.groups == 0 or plan.c_out // plan.groups == 0:
        return None
    per_axis, rs, deltas = [], [], []
    for a in plan.axes:
        found = _axis_phases(a)
        if found is None or len(found[0][0][3]) not in TILES:
            return None
        entries, delta = found
        # sub-phases: (output offset, outputs, first source, output phase)
        subs = []
        for ph, mcount, base, _ks in entries:
            for rho in range(min(delta, mcount)):  # the sub-phases with outputs
                subs.append((ph + a.stride * rho, -(-(mcount - rho) // delta), base + rho, ph))
        per_axis.append((entries, subs))
        rs.append(len(entries[0][3]))
        deltas.append(delta)
    if max(rs) < 2:
        return None
    mats = [matrices(_tile_size(r, [e[1] for e in subs]), r) for r, (_, subs) in zip(rs, per_axis)]
    msize = np.array([m[2].shape[0] for m in mats], np.int64)
    step = msize * np.array(deltas, np.int64)
    alpha = [m[0].shape[0] for m in mats]
    # the packed buffer covers the input and every tile's alpha-wide (delta-spaced) patch
    offset, padded = np.zeros(3, np.int64), [1, 1, 1]
    for axis in range(3):
        lo, hi = 0, plan.axes[axis].size_in
        for _o, mcount, base, _ph in per_axis[axis][1]:
            if mcount:
                lo = min(lo, base)
                hi = max(hi, (-(-mcount // msize[axis]) - 1) * step[axis] + base + deltas[axis] * (alpha[axis] - 1) + 1)
        offset[axis], padded[axis] = -lo, hi - lo
        a = plan.axes[axis]
        if padded[axis] > 2 * (a.size_in + a.kernel) + PADDED_SLACK:
            return None
    grid = [(a, b, c) for a in range(alpha[0]) for b in range(alpha[1]) for c in range(alpha[2])]
    n_wph = [len(per_axis[axis][0]) for axis in range(3)]
    wtaps = np.full((n_wph[0] * n_wph[1] * n_wph[2], 3, max(rs)), -1, np.int64)
    for i, ed in enumerate(per_axis[0][0]):
        for j, eh in enumerate(per_axis[1][0]):
            for k, ew in enumerate(per_axis[2][0]):
                for axis, e in enumerate((ed, eh, ew)):
                    wtaps[(i * n_wph[1] + j) * n_wph[2] + k, axis, :len(e[3])] = e[3]

    def product(which, index, values):
        """prod over axes of mats[axis][which][index[axis], values[axis]]"""
        return mats[0][which][index[0], values[0]] * mats[1][which][index[1], values[1]] * \
            mats[2][which][index[2], values[2]]

    phases = []
    for sd in per_axis[0][1]:
        for sh in per_axis[1][1]:
            for sw in per_axis[2][1]:
                subs = (sd, sh, sw)
                mcount = np.array([e[1] for e in subs], np.int64)
                v_terms = []
                for point in grid:
                    terms = [(product(0, point, v), *(deltas[ax] * v[ax] + subs[ax][2] + offset[ax] for ax in range(3)))
                             for v in grid if product(0, point, v) != 0]
                    v_terms.append(np.array(terms, np.float64).reshape(-1, 4))
                wphase = (sd[3] * n_wph[1] + sh[3]) * n_wph[2] + sw[3]
                phases.append(Phase(np.array([e[0] for e in subs], np.int64), mcount, -(-mcount // msize), wphase,
                                    tuple(v_terms)))
    u_coefs = weight_transform(tuple(int(m) for m in msize), tuple(rs))
    outs = [(a, b, c) for a in range(msize[0]) for b in range(msize[1]) for c in range(msize[2])]
    a_lists = [[(product(2, o, point), k) for k, point in enumerate(grid) if product(2, o, point) != 0] for o in outs]
    a_terms = np.zeros((len(outs), max(len(t) for t in a_lists), 2))
    for i, t in enumerate(a_lists):
        a_terms[i, :len(t)] = t
    tiles = max(int(np.prod(ph.ntiles)) for ph in phases)
    row = max(int(ph.ntiles[2] * msize[2]) for ph in phases)
    last_row = max(int(t[:, 2].max()) for ph in phases for t in ph.v_terms)  # deepest packed row of tile row 0
    tile_rows = max(int(ph.ntiles[1]) for ph in phases)
    out_stride = np.array([a.stride * d for a, d in zip(plan.axes, deltas)], np.int64)
    return Layout(tuple(phases), wtaps, msize, step, out_stride, len(grid), tuple(rs), u_coefs, a_terms, tiles,
                  row, offset, tuple(padded), last_row + 1 - int(step[1]), tile_rows)


@cache
def weight_transform(msize: tuple[int, int, int], r: tuple[int, int, int]) -> np.ndarray:
    """(points, taps) coefficients of the weight transform ``G`` over the three axes of F(M, r) (``Layout.u_coefs``):
    a function of the tile sizes and tap counts alone, so that kept weights are made from their key
    (``WeightSpec``)."""
    mats = [matrices(m, rr) for m, rr in zip(msize, r)]
    grid = [(a, b, c) for a in range(mats[0][0].shape[0]) for b in range(mats[1][0].shape[0])
            for c in range(mats[2][0].shape[0])]
    taps_grid = [(a, b, c) for a in range(r[0]) for b in range(r[1]) for c in range(r[2])]
    coefs = np.array([[mats[0][1][point[0], u[0]] * mats[1][1][point[1], u[1]] * mats[2][1][point[2], u[2]]
                       for u in taps_grid] for point in grid])
    coefs.flags.writeable = False  # (shared by every layout of these sizes)
    return coefs


def weight_elements(plan: geo.Plan) -> int:
    """Elements of the re-laid-out weight (the weight's own size)."""
    return plan.c_in * (plan.c_out // plan.groups) * _prod(a.kernel for a in plan.axes)


def _tiles_per_row(lay: Layout) -> int:
    """Tiles per tile row, all depth tiles included."""
    return max(int(ph.ntiles[0] * ph.ntiles[2]) for ph in lay.phases)


# Share of the output's size the shared transformed weights may take; the rest of the one-output memory rule is
# left to the workers' chunks.
SHARED_FRACTION = 0.75
# Most elements an operator's kept transformed weights may take, relative to the weight (``_choice(kept=True)``)
KEPT_FACTOR = 3


def _shared_elements(plan: geo.Plan, lay: Layout) -> int:
    """Elements of every (weight phase, point)'s transformed weights: ``phases * alpha^rank * C_in * C_out_g``."""
    return len(lay.wtaps) * lay.points * plan.c_in * (plan.c_out // plan.groups)


def shares_weights(plan: geo.Plan) -> bool:
    """Whether the transformed weights of every (weight phase, point) are computed once per call and shared by
    the workers, instead of by every chunk for every sub-phase and point. They are made straight from the weight
    (``transform_weights``, one pass, no relayout, in the calling thread) and may take ``SHARED_FRACTION`` of the
    output's size; the cost model weighs making them against the per-chunk transforms they save (``_choice``).
    Chunks can be
    small enough for their M blocks and packed rows to stay in the core's L2 cache without transforming the
    weights again per chunk (DCGAN's 16x16 -> 32x32 block, dilated 3x3 layers).
    Weight-heavy layers (DCGAN's first block: ``36 * C_in * C_out`` is 4.5x its output) transform per chunk."""
    found = _choice(plan)
    return found is not None and found[3]


def _held(plan: geo.Plan, shared: bool) -> int:
    """Elements the call holds beside the workers' scratch: the shared transformed weights (made straight from
    the weight, so nothing else comes first) or the re-laid-out weight."""
    return _shared_elements(plan, layout(plan)) if shared else weight_elements(plan)


def _worker_scratch(lay: Layout, cin_g: int, nb: int, nth: int, cb: int) -> int:
    """Elements one worker allocates: packed rows, V^T, U, the M blocks of a phase, one output row per channel,
    the transpose tile of ``pack``."""
    tiles = nb * nth * _tiles_per_row(lay)
    packed = nb * lay.padded[0] * (nth * int(lay.step[1]) + lay.halo) * lay.padded[2] * cin_g
    return packed + tiles * cin_g + cin_g * cb + lay.points * cb * tiles + cb * lay.row + PACK_CHANNELS * lay.padded[2]


# The estimate's fitted constants are ``_model.WINOGRAD_*``.


def _cost(plan: geo.Plan, lay: Layout, nb: int, nth: int, cb: int, workers: int, shared: bool,
          kept: bool = False) -> float:
    """Estimated seconds of one call with chunks of ``nb`` samples x ``nth`` tile rows x ``cb`` channels, the
    transformed weights ``shared`` or made per chunk; ``kept``: the weight-only work (the shared transform or
    the relayout) was done once, by an operator."""
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    n_phase = len(lay.phases)
    scale = 1.0 if plan.dtype.itemsize == 4 else 0.5
    tiles = nb * nth * _tiles_per_row(lay)
    total_tiles = plan.batch * lay.tiles * g
    h_blocks = -(-lay.tile_rows // nth)
    tasks = g * -(-plan.batch // nb) * h_blocks * -(-cout_g // cb)
    c_blocks = -(-cout_g // cb)
    eff = M.WINOGRAD_SMALL_GEMM_GAIN
    if tiles * cb * cin_g > M.WINOGRAD_SMALL_GEMM:
        eff = 1.0
        for side, half in zip((tiles, cb, cin_g), M.WINOGRAD_GEMM_HALF):
            eff *= side / (side + half)
    gemm = 2.0 * lay.points * n_phase * cin_g * cout_g * total_tiles / (M.WINOGRAD_GEMM_RATE * scale * eff)
    u_work = 0.0 if shared else tasks * n_phase * lay.points * cin_g * cb * M.WINOGRAD_U_ELEMENT
    big = _worker_scratch(lay, cin_g, nb, nth, cb) * plan.dtype.itemsize > M.WINOGRAD_L2_BYTES
    spill = M.WINOGRAD_SPILL if big else 1.0
    v_work = c_blocks * n_phase * lay.points * cin_g * total_tiles * M.WINOGRAD_V_ELEMENT * spill
    halo = 1 + lay.halo * (h_blocks - 1) / max(1, plan.axes[1].size_in)
    pack = (c_blocks * plan.batch * plan.c_in * _prod(a.size_in for a in plan.axes) * halo
            * M.WINOGRAD_PACK_ELEMENT * spill)
    store = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes) * M.WINOGRAD_STORE_ELEMENT * spill
    calls = (tasks * (n_phase * lay.points * M.WINOGRAD_POINT_CALL + M.WINOGRAD_TASK_CALL)
             + total_tiles * n_phase * lay.points * M.WINOGRAD_TILE_POINT)
    balance = -(-tasks // workers) * workers / tasks
    if shared and _shared_elements(plan, lay) * plan.dtype.itemsize > M.WINOGRAD_L2_BYTES:
        # shared transformed weights larger than the core's cache (a one-off call's up to 3/4 of the output, an
        # operator's up to KEPT_FACTOR x the weight): every chunk streams its channel block of them from memory
        # (DCGAN's first block: 19 MB of them; a 256 -> 128 block: 4.7 MB, read by each of 64 small chunks),
        # which favours chunks of many samples
        u_work = tasks * n_phase * lay.points * cin_g * cb * plan.dtype.itemsize / M.BANDWIDTH
    parallel = (gemm + u_work + v_work + pack + store + calls) * balance / min(workers, tasks)
    if kept:
        return parallel
    if shared:  # made before the workers start, in the calling thread
        return parallel + _shared_elements(plan, lay) * M.WINOGRAD_SHARED_ELEMENT
    return parallel + weight_elements(plan) * M.WINOGRAD_RELAYOUT_ELEMENT / min(workers, tasks)


def chunks(plan: geo.Plan) -> tuple[int, int, int] | None:
    """(samples, tile rows, output channels) per chunk, or None when no chunk fits the memory rule."""
    found = _choice(plan)
    return None if found is None else found[:3]


@lru_cache(maxsize=256)
def _choice(plan: geo.Plan, kept: bool = False) -> tuple[int, int, int, bool] | None:
    """(samples, tile rows, output channels) per chunk and whether the transformed weights are shared, or None
    when no chunk fits the memory rule.

    All workers' scratch plus what the call holds (the re-laid-out weight, or the shared transformed weights)
    stays within one output's size; among the chunks that fit, the one with the least estimated time. A chunk
    of one sample may take part of its tile rows (large single images). Depends on the shapes, numba's pool
    size and the machine (``_model``'s L2 size and BLAS rate), never on the current thread count.

    ``kept``: the weight-only work is done once and kept by an operator (``pack_kept``), so it holds nothing
    per call: the workers' scratch alone keeps the rule, and the shared transformed weights may take up to
    ``KEPT_FACTOR`` times the weight's size.
    """
    lay = layout(plan)
    if lay is None or plan.batch == 0:
        return None
    cin_g, cout_g = plan.c_in // plan.groups, plan.c_out // plan.groups
    workers = max_threads()
    out_size = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    best = None
    if kept:
        fits = _shared_elements(plan, lay) <= KEPT_FACTOR * weight_elements(plan)
    else:
        fits = _shared_elements(plan, lay) <= SHARED_FRACTION * out_size
    for shared in (False, True) if fits else (False,):
        held = 0 if kept else _held(plan, shared)
        if held > out_size:
            continue
        budget = out_size - held
        for nb, nth in _sample_and_row_blocks(plan.batch, lay.tile_rows):
            cb = cout_g
            while True:
                tasks = plan.groups * -(-plan.batch // nb) * -(-lay.tile_rows // nth) * -(-cout_g // cb)
                if min(workers, tasks) * _worker_scratch(lay, cin_g, nb, nth, cb) <= budget:
                    cost = _cost(plan, lay, nb, nth, cb, workers, shared, kept)
                    if best is None or cost < best[0]:
                        best = (cost, nb, nth, cb, shared)
                if cb == 1:
                    break
                cb = -(-cb // 2)
    return None if best is None else best[1:]


def _sample_and_row_blocks(batch: int, tile_rows: int):
    """Candidate (samples, tile rows) per chunk: whole samples in up to 64 block sizes, then row blocks of one
    sample in up to 63 sizes (down to one tile row)."""
    for nb in sorted({-(-batch // n_blocks) for n_blocks in range(1, min(batch, 64) + 1)}, reverse=True):
        yield nb, tile_rows
    for nth in sorted({-(-tile_rows // h_blocks) for h_blocks in range(2, min(tile_rows, 64) + 1)}, reverse=True):
        yield 1, nth


def estimate(plan: geo.Plan, threads: int) -> float | None:
    """Estimated seconds of this variant on ``threads`` threads, or None when it does not apply."""
    found = _choice(plan)
    if found is None:
        return None
    nb, nth, cb, shared = found
    return _cost(plan, layout(plan), nb, nth, cb, threads, shared)


def scratch_elements(plan: geo.Plan) -> int:
    """Largest scratch (elements) one call allocates (all workers together, weight relayout included)."""
    found = chunks(plan)
    if found is None:
        return 0
    workers = max_threads() * _worker_scratch(layout(plan), plan.c_in // plan.groups, *found)
    return _held(plan, shares_weights(plan)) + workers


@lru_cache(maxsize=256)
def _arguments(plan: geo.Plan, nb_max: int, nth_max: int, cb_max: int) -> tuple:
    """What ``gather_winograd`` hands its kernels that depends on the plan and its chunk sizes alone, built
    once: the chunk list, the per-sub-phase table, the transform coefficients in the plan's dtype, the tap
    counts. (The arrays stay writeable: numba compiles read-only arrays separately. The kernels only read
    them.)"""
    lay = layout(plan)
    cout_g = plan.c_out // plan.groups
    tasks = [(gi, n0, min(nb_max, plan.batch - n0), th0, c0, min(cb_max, cout_g - c0))
             for gi in range(plan.groups) for n0 in range(0, plan.batch, nb_max)
             for th0 in range(0, lay.tile_rows, nth_max) for c0 in range(0, cout_g, cb_max)]
    tables = np.stack([np.stack([ph.phase, ph.mcount, ph.ntiles, np.array([ph.wphase, 0, 0], np.int64)])
                       for ph in lay.phases])
    most = max(len(t) for ph in lay.phases for t in ph.v_terms)
    v_terms = np.zeros((len(lay.phases), lay.points, most, 4), plan.dtype)
    v_counts = np.zeros((len(lay.phases), lay.points), np.int64)
    for p, ph in enumerate(lay.phases):
        for xi, t in enumerate(ph.v_terms):
            v_terms[p, xi, :len(t)] = t
            v_counts[p, xi] = len(t)
    return (tasks, tables, lay.u_coefs.astype(plan.dtype), v_terms, v_counts, lay.a_terms.astype(plan.dtype),
            np.array(lay.r, np.int64))


@lru_cache(maxsize=256)
def _gains(plan: geo.Plan) -> tuple[float, float, float]:
    """Largest factor by which the input transform (B^T), the weight transform (G) and the inverse (A^T) can
    grow a magnitude: per axis the largest absolute row sum of the matrix, multiplied over the axes."""
    lay = layout(plan)
    gains = [1.0, 1.0, 1.0]
    for m, r in zip(lay.msize, lay.r):
        for i, mat in enumerate(matrices(int(m), int(r))):
            gains[i] *= float(np.abs(mat).sum(axis=1).max())
    return gains[0], gains[1], gains[2]


def safe(plan: geo.Plan, x5: np.ndarray, w_max: float) -> bool:
    """Whether Winograd's transforms give the definition's finite result on these values: every value finite,
    and no transformed value, product or sum able to exceed half the dtype's largest (the bound multiplies the
    largest magnitudes by the transforms' gains and the input channels summed per product). Otherwise (an
    infinity would meet its own negation in ``B^T d``, a NaN weight would reach taps outside the input through
    the transformed weights, or 3e38 + 3e38 would overflow where the definition stays finite) the call runs an
    exact variant of the gather form instead (``_api.exact_plan``). One pass over x (``scan.max_abs``); ``w_max``
    is the weight's, which an operator finds once."""
    limit = float(np.finfo(plan.dtype).max) / 2
    g_x, g_w, g_y = _gains(plan)
    v = g_x * max_abs(x5)
    u = g_w * w_max
    return v <= limit and u <= limit and g_y * (plan.c_in // plan.groups) * v * u <= limit


class WeightSpec(NamedTuple):
    """Everything the weights ``run`` reads are made from, besides the weight itself (``_weights``): a kept
    pack's key (``pack_input``) and the one argument of the function that makes it, so that the two cannot
    drift apart. Plans of one operator with equal specs share their kept weights."""

    dtype: np.dtype
    groups: int
    wtaps: tuple        # ``Layout.wtaps`` as nested tuples: the weight phases (the output phases that have
    #                     outputs: fewer where an output axis is shorter than the stride) and their taps
    r: tuple[int, int, int]
    msize: tuple[int, int, int]  # the tile sizes, which pick the transform (they depend on the output's size)
    shared: bool
    cb: int             # the channel block of shared weights (0: not shared)
    kept: bool          # made once for an operator (its chunks: ``kept_choice``) or for one call (``_choice``)


class Weights(NamedTuple):
    """The weight as ``run`` reads it: every (weight phase, point)'s transformed weights in blocks of ``spec.cb``
    output channels (``spec.shared``), or the tap-major relayout ``wt`` the chunks transform from."""

    spec: WeightSpec  # what they were made from (``run`` checks it against its plan's)
    u_all: np.ndarray
    wt: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.u_all.nbytes + self.wt.nbytes


def kept_choice(plan: geo.Plan) -> tuple[int, int, int, bool] | None:
    """The chunks of a call with the weight packed once (an operator): a one-off call's whenever one fits the
    memory rule (so that both give the same bits), else those with kept weights (``_choice(kept=True)``)."""
    return _choice(plan) or _choice(plan, kept=True)


def kept_estimate(plan: geo.Plan, threads: int) -> float | None:
    """Estimated seconds of a call whose weight-only work was done once (an operator)."""
    found = kept_choice(plan)
    if found is None:
        return None
    nb, nth, cb, shared = found
    return _cost(plan, layout(plan), nb, nth, cb, threads, shared, kept=True)


def kept_scratch(plan: geo.Plan) -> int:
    """Scratch (elements, all workers) of a call whose weight-only work was done once."""
    found = kept_choice(plan)
    if found is None:
        return 0
    return max_threads() * _worker_scratch(layout(plan), plan.c_in // plan.groups, *found[:3])


def _spec(plan: geo.Plan, kept: bool) -> WeightSpec:
    """The spec of the weights a call of ``plan`` reads (from ``_choice``'s chunks as they are now: not cached
    apart from them)."""
    found = kept_choice(plan) if kept else _choice(plan)
    if found is None:  # (the cost model never picks the variant then: a caller's bug)
        raise ValueError("gather-winograd: no chunk of this plan fits the memory rule")
    wtaps, r, msize = _layout_key(plan)
    shared = bool(found[3])
    # (the re-laid-out weight does not depend on the chunks' channel block: only shared weights are blocked)
    return WeightSpec(plan.dtype, plan.groups, wtaps, r, msize, shared, int(found[2]) if shared else 0, kept)


@lru_cache(maxsize=256)
def _layout_key(plan: geo.Plan) -> tuple[tuple, tuple[int, int, int], tuple[int, int, int]]:
    """(wtaps, r, msize) of the plan's layout as tuples (what the weights are made from)."""
    lay = layout(plan)
    return (tuple(tuple(tuple(row) for row in phase) for phase in lay.wtaps.tolist()), lay.r,
            tuple(int(m) for m in lay.msize))


def pack_input(plan: geo.Plan) -> WeightSpec:
    """The key of an operator's kept weights for ``plan`` (what ``pack_kept`` makes them from)."""
    return _spec(plan, True)


def _weights(spec: WeightSpec, w5: np.ndarray) -> Weights:
    """The weights ``run`` reads, made from ``spec`` and the weight (C_in, C_out_g, kd, kh, kw) alone."""
    dtype = spec.dtype
    taps = np.array(spec.wtaps, np.int64)
    r_arr = np.array(spec.r, np.int64)
    u_coefs = weight_transform(spec.msize, spec.r).astype(dtype)
    c_in, cout_g = w5.shape[0], w5.shape[1]
    if spec.shared:
        u_all = np.empty(len(taps) * u_coefs.shape[0] * c_in * cout_g, dtype)
        args = (w5, taps, r_arr, u_coefs, spec.groups, spec.cb, 0, c_in,
                np.empty(_prod(spec.r) * TRANSFORM_ROWS * cout_g, dtype), u_all)
        _compile_cold(transform_weights, args)
        # in the calling thread: it is a single pass over the weight, shorter than one more launch of the
        # workers costs
        transform_weights(*args)
        return Weights(spec, u_all, np.empty((1, 1, 0, 0), dtype))  # run_task reads u_all
    wt = np.empty((len(taps), _prod(spec.r), c_in, cout_g), dtype)
    _compile_cold(relayout, (w5, taps, r_arr, 0, 0, wt))
    step = -(-c_in // max_threads())
    run_parallel(lambda part: [relayout(w5, taps, r_arr, lo, min(lo + step, c_in), wt) for lo in part],
                 list(range(0, c_in, step)))
    return Weights(spec, np.empty(0, dtype), wt)


@cache
def _run_task_signature(dtype: np.dtype) -> tuple:
    """The numba types ``run`` calls ``run_task`` with (``tests/test_winograd.py`` checks them against a call)."""
    a = [types.Array(from_dtype(np.dtype(dtype)), ndim, "C") for ndim in range(6)]  # a[n]: n-D float array
    ints = [types.Array(types.int64, ndim, "C") for ndim in range(4)]
    return ((a[5], a[4], a[1], a[5]) + (types.int64,) * 8 + (types.boolean, ints[3], a[2], a[4], ints[2], a[3])
            + (ints[1],) * 4 + (a[5], a[1], a[1], a[1], a[2], a[1], a[1]))


def _compile_cold(first, args: tuple) -> None:
    """On a cold first call (neither ``run_task`` nor ``first``, the weight step, compiled or cached for these
    types), compile ``first`` in a child process while this one compiles ``run_task``: on two cores the call
    then waits for the longer compile instead of both (DCGAN blocks: 0.8 s of 4.7). The kernels and their
    results are the same; the call itself runs them as always."""
    dtype = args[0].dtype
    if dtype in _RUN_TASK_READY:  # (the hot path: one set lookup; compiled once, a kernel stays compiled)
        return
    signature = _run_task_signature(dtype)
    if not _compiled.available(run_task, signature):
        beside = _compiled.compile_beside(first, args)
        try:
            _compiled.compile_for(run_task, signature)
        except BaseException:
            beside.kill()
            raise
        beside.wait()
    _RUN_TASK_READY.add(dtype)


_RUN_TASK_READY: set = set()  # dtypes for which ``run_task`` is compiled or cached in this process


def pack_call(plan: geo.Plan, w5: np.ndarray) -> Weights:
    """The weight-only work of one call (its chunks: ``chunks(plan)``)."""
    return _weights(_spec(plan, False), w5)


def pack_kept(spec: WeightSpec, w5: np.ndarray) -> Weights:
    """The weight-only work an operator does once, for the plans whose ``pack_input`` is ``spec`` (their chunks:
    ``kept_choice``)."""
    return _weights(spec, w5)


def gather_winograd(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Transposed convolution, gather form with Winograd F(2, r) on the output phases, into ``y5``."""
    run(plan, x5, pack_call(plan, w5), bias, y5)


def run(plan: geo.Plan, x5: np.ndarray, weights: Weights, bias: np.ndarray, y5: np.ndarray) -> None:
    """``gather_winograd`` on weights packed by ``pack_call`` or ``pack_kept`` (whose chunks it runs)."""
    lay = layout(plan)
    if weights.spec != _spec(plan, weights.spec.kept):  # (a bug, not the user's)
        raise ValueError("gather-winograd: the packed weights were made for another plan (phases, tiles or chunks)")
    found = kept_choice(plan) if weights.spec.kept else _choice(plan)
    nb_max, nth_max, cb_max, shared = found
    tasks, tables, u_coefs, v_terms, v_counts, a_terms, r_arr = _arguments(plan, nb_max, nth_max, cb_max)
    cin_g = plan.c_in // plan.groups
    dtype = plan.dtype
    u_all, wt = weights.u_all, weights.wt
    depth, rows, cols = lay.padded[0], nth_max * int(lay.step[1]) + lay.halo, lay.padded[2]
    tiles_max = nb_max * nth_max * _tiles_per_row(lay)

    def work(part):
        xp_buf = np.empty((nb_max, depth, rows, cols, cin_g), dtype)
        v_buf = np.empty(tiles_max * cin_g, dtype)
        u_buf = np.empty(cin_g * cb_max, dtype)
        m_buf = np.empty(lay.points * cb_max * tiles_max, dtype)
        buf = np.empty((lay.row, cb_max), dtype)
        tile = np.empty(PACK_CHANNELS * plan.axes[2].size_in, dtype)
        packed = None
        for gi, n0, nb, th0, c0, cb in part:
            run_task(x5, wt, bias, y5, gi, cin_g, n0, nb, th0, nth_max, c0, cb, packed != (gi, n0, th0), tables,
                     u_coefs, v_terms, v_counts, a_terms, lay.msize, lay.step, lay.offset, lay.out_stride, xp_buf,
                     v_buf, u_buf, m_buf, buf, u_all, tile)
            packed = (gi, n0, th0)

    run_parallel(work, tasks)
