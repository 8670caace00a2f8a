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

Here the numba kernels; the Toom-Cook matrices are ``variants/_winograd_math.py``, the layout, chunk search and
cost model ``variants/_winograd_schedule.py``, the weights' packing and the driver ``variants/_winograd_run.py``,
the record and its value check ``variants/gather_winograd.py``.
"""

from __future__ import annotations

import numpy as np

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import at
from .epilogue import activate

PACK_CHANNELS = 16  # channels ``pack`` transposes at a time (one 64-byte vector of float32)
TRANSFORM_ROWS = 16  # input channels ``transform_weights`` transforms at a time


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


@njit(inline="always", **NJIT_FLAGS)
def tiles_inside(t_w, m_w, i_w, run):
    """How many of a tile row's ``t_w`` tiles (``m_w`` outputs each) have their output ``i_w`` among the row's
    first ``run`` outputs (those inside the phase)."""
    count = 0
    while count < t_w and count * m_w + i_w < run:
        count += 1
    return count


@njit(**NJIT_FLAGS)
def count_terms(terms):
    """``counts[i]``: how many (coefficient, point) pairs ``terms[i]`` lists before its zero padding."""
    counts = np.empty(terms.shape[0], np.int64)
    for i in range(terms.shape[0]):
        n_terms = 0
        while n_terms < terms.shape[1] and terms[i, n_terms, 0] != 0:
            n_terms += 1
        counts[i] = n_terms
    return counts


@njit(**NJIT_FLAGS)
def _store_row(bf, yf, bias, where, code, params):
    """``inverse``'s store of one output row of the phase: ``buf``'s (``bf``, row x ``cb`` channels) ``run`` values
    of each channel ``c0 + c``, its bias added (then the activation ``code``), to ``yf`` from ``dst`` on, ``s_w``
    apart within a channel and ``volume`` apart between channels; ``where = (dst, volume, s_w, run, c0, cb)``
    (int64). One call per row: the whole store, channel by channel."""
    dst, volume, s_w, run, c0, cb = where
    if code == 0:
        for c in range(cb):
            bv = bias[c0 + c]
            for q in range(run):
                yf[at(dst + c * volume + q * s_w)] = bf[at(q * cb + c)] + bv
    else:  # the same store, the activation applied to each value stored
        p_a, p_b, one = params[0], params[1], params[2]
        for c in range(cb):
            bv = bias[c0 + c]
            for q in range(run):
                yf[at(dst + c * volume + q * s_w)] = activate(bf[at(q * cb + c)] + bv, code, p_a, p_b, one)


@njit(**NJIT_FLAGS)
def sum_row(mf, bf, terms, term_counts, row):
    """The inverse transform's sums of one output row of a phase into ``buf`` (tile x channels), for ``inverse`` and
    ``winograd_nhwc.inverse_nhwc``: output ``i_w`` of every tile whose output lies inside the phase (``run``),
    from the point products ``mf`` (``m_blocks`` flat), up to four terms per pass in ``terms``' order, the first
    pass starting from -0.0. ``row = (i_d, i_h, m_h, m_w, t0, n_t, cb, t_w, run)`` (int64)."""
    i_d, i_h, m_h, m_w, t0, n_t, cb, t_w, run = row
    nz = bf.dtype.type(-0.0)  # the first term's pass starts from -0.0: -0.0 + v is v, bit for bit
    for i_w in range(m_w):
        i = (i_d * m_h + i_h) * m_w + i_w
        count = tiles_inside(t_w, m_w, i_w, run)
        n_terms = term_counts[i]
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


@njit(**NJIT_FLAGS)
def inverse(m_blocks, terms, buf, y, bias, block, where, stride, msize, code, params):
    """``y[n0 + j, c0 + c, phase + stride * m] = sum_xi A[i, xi] * m_blocks[xi, t, c] + bias``, ``m = t * M + i``,
    then the epilogue's activation ``code`` (``_kernels.epilogue``; 0: none) in the same store.

    ``block = (n0, nb, c0, th0)`` (int64): the chunk's samples ``n0 : n0 + nb``, its first output channel and
    first tile row; ``where = (phase, mcount, ntiles)``: the sub-phase's first output, its output count and the
    chunk's tile counts per axis (``run_task``'s ``tables`` rows). Tiles ``t`` are local to the chunk: tile row
    ``a`` is the phase's tile row ``th0 + a``.
    ``terms[i]`` lists output ``i``'s nonzero (coefficient, point) pairs, zero-padded at the end. One output
    row of the phase at a time: every tile's sums run over the channel vector (contiguous) into ``buf``
    (row x channels), then each channel's row is stored; outputs beyond the phase are skipped. (Storing
    channel by channel per element would hit planes a page apart in turn: one cache set, thrashed.)
    """
    n0, nb, c0, th0 = block
    phase, mcount, ntiles = where
    n_pt, n_t, cb = m_blocks.shape
    t_d, t_h, t_w = ntiles[0], ntiles[1], ntiles[2]
    m_d, m_h, m_w = msize[0], msize[1], msize[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    o_h, o_w = y.shape[3], y.shape[4]
    volume = y.shape[2] * o_h * o_w
    run = min(mcount[2], t_w * m_w)
    mf, yf, bf = m_blocks.reshape(-1), y.reshape(-1), buf.reshape(-1)
    term_counts = count_terms(terms)
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
                        sum_row(mf, bf, terms, term_counts, (i_d, i_h, m_h, m_w, t0, n_t, cb, t_w, run))
                        dst = sample + ((phase[0] + s_d * md) * o_h + phase[1] + s_h * mh) * o_w + phase[2]
                        _store_row(bf, yf, bias, (dst, volume, s_w, run, c0, cb), code, params)


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
def run_task(x, weights, bias, y, chunk, repack, spec, buffers, code, params):
    """One chunk: group ``gi``, samples ``n0 : n0 + nb``, tile rows ``th0 : th0 + nth``, channels ``c0 : c0 + cb``.

    The groups: ``weights = (wt, u_all)``; ``chunk = (gi, cin_g, n0, nb, th0, nth, c0, cb)`` (int64); ``spec =
    (tables, u_coefs, v_terms, v_counts, a_terms, msize, step, offset, stride)``, the layer's transform (the same
    for every chunk); ``buffers = (xp_buf, v_buf, u_buf, m_buf, buf, tile)``, the worker's scratch.
    Every sub-phase, every point. ``tables[p] = (phase (3,), mcount (3,), ntiles (3,), (weight phase, 0, 0))``;
    ``v_terms[p, xi, :v_counts[p, xi]]`` are the point's input-transform terms (see ``input_point``). The GEMM
    of each point is ``np.dot`` on contiguous blocks (BLAS, called from numba: no Python round trip per point).
    ``repack`` is False when the previous chunk of this worker packed the same samples and rows. A non-empty
    ``u_all`` holds every point's transformed weights (``shares_weights``, see ``transform_weights``); otherwise
    each point's are computed here into ``u_buf``. ``code, params``: the epilogue, applied in the store.
    """
    wt, u_all = weights
    gi, cin_g, n0, nb, th0, nth, c0, cb = chunk
    tables, u_coefs, v_terms, v_counts, a_terms, msize, step, offset, stride = spec
    xp_buf, v_buf, u_buf, m_buf, buf, tile = buffers
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
        inverse(m_blocks, a_terms, buf, y, bias, (n0, nb, gi * cout_g + c0, th0), (tables[p, 0], tables[p, 1], local),
                stride, msize, code, params)
