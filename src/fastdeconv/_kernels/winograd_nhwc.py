"""gather-winograd-nhwc's kernels: ``_kernels/winograd.py``'s scheme on channels-last data.

The channels-first kernels pack the input channels-last (a transpose through a 16-channel tile) and store every
output row channel by channel (planes a page apart). On x (N, D, H, W, C_in) the pack is one contiguous copy per
input row (``pack_nhwc``: the group's C_in_g run of each pixel), and the inverse transform stores each output
pixel's block of channels as one contiguous vector into y (N, oD, oH, oW, C_out) (``inverse_nhwc``). Everything
between is the channels-first code itself (``input_point``, ``weight_point``, the same ``np.dot`` per point), on
the same tiles, chunks and transformed weights, and ``inverse_nhwc`` sums each output's terms in
``inverse``'s order: a channels-last result holds the channels-first one's bits, transposed.
"""

from __future__ import annotations

import numpy as np

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import at
from .epilogue import activate_run
from .winograd import count_terms, input_point, sum_row, weight_point


@njit(**NJIT_FLAGS)
def pack_nhwc(x, n0, nb, ci0, offset, r0, xp):
    """``xp[j, offset[0] + i_d, offset[1] + i_h - r0, offset[2] + i_w, ci] = x[n0 + j, i_d, i_h, i_w, ci0 + ci]``,
    zero elsewhere (``winograd.pack``'s buffer, from channels-last x).

    Row by row of the buffer, in one pass: its padding zeroed, the input row copied as one contiguous run (the
    whole row when the group has every channel, else C_in_g per pixel).
    """
    size_d, size_h, size_w, c_in = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    depth, rows, cols, cin = xp.shape[1], xp.shape[2], xp.shape[3], xp.shape[4]
    xf, pf = x.reshape(-1), xp.reshape(-1)
    zero = xp.dtype.type(0)
    row_len = cols * cin
    left = offset[2] * cin
    right = (offset[2] + size_w) * cin
    for j in range(nb):
        for pd in range(depth):
            i_d = pd - offset[0]
            for pr in range(rows):
                i_h = r0 + pr - offset[1]
                dst = ((j * depth + pd) * rows + pr) * row_len
                if i_d < 0 or i_d >= size_d or i_h < 0 or i_h >= size_h:
                    for e in range(row_len):
                        pf[at(dst + e)] = zero
                    continue
                for e in range(left):
                    pf[at(dst + e)] = zero
                for e in range(right, row_len):
                    pf[at(dst + e)] = zero
                src = (((n0 + j) * size_d + i_d) * size_h + i_h) * size_w * c_in + ci0
                if cin == c_in:
                    for e in range(size_w * cin):
                        pf[at(dst + left + e)] = xf[at(src + e)]
                else:
                    for i_w in range(size_w):
                        d, s = dst + left + i_w * cin, src + i_w * c_in
                        for c in range(cin):
                            pf[at(d + c)] = xf[at(s + c)]


@njit(**NJIT_FLAGS)
def _store_pixels(bf, yf, bias, where, code, params):
    """``inverse_nhwc``'s store of one output row of the phase: ``run`` output pixels from ``dst`` on, ``pitch``
    apart, each the ``cb`` channels ``c0 + c`` of its row of ``buf`` (``bf``, row x ``cb`` channels) stored as one
    contiguous run, bias added, then the epilogue ``code`` on the run while it is in L1; ``where = (dst, pitch,
    run, c0, cb)`` (int64). One call per row: the whole store."""
    dst, pitch, run, c0, cb = where
    p_a, p_b, one = params[0], params[1], params[2]
    for q in range(run):
        d, s = dst + q * pitch, q * cb
        for c in range(cb):
            yf[at(d + c)] = bf[at(s + c)] + bias[c0 + c]
        if code != 0:
            activate_run(yf, d, cb, code, p_a, p_b, one)


@njit(**NJIT_FLAGS)
def inverse_nhwc(m_blocks, terms, buf, y, bias, block, where, stride, msize, code, params):
    """``winograd.inverse`` into channels-last ``y`` (N, oD, oH, oW, C_out): the same sums in the same order into
    ``buf`` (row x channels), then each output pixel's ``cb`` channels stored as one contiguous run (bias added),
    the epilogue ``code`` applied to the run while it is in L1."""
    n0, nb, c0, th0 = block
    phase, mcount, ntiles = where
    n_pt, n_t, cb = m_blocks.shape
    t_d, t_h, t_w = ntiles[0], ntiles[1], ntiles[2]
    m_d, m_h, m_w = msize[0], msize[1], msize[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    o_d, o_h, o_w, c_out = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    run = min(mcount[2], t_w * m_w)
    mf, yf, bf = m_blocks.reshape(-1), y.reshape(-1), buf.reshape(-1)
    term_counts = count_terms(terms)
    pitch = s_w * c_out  # between neighbouring outputs of the phase row
    for j in range(nb):
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
                        pixel = (((n0 + j) * o_d + phase[0] + s_d * md) * o_h + phase[1] + s_h * mh) * o_w + phase[2]
                        _store_pixels(bf, yf, bias, (pixel * c_out + c0, pitch, run, c0, cb), code, params)


@njit(**NJIT_FLAGS)
def run_task_nhwc(x, weights, bias, y, chunk, repack, spec, buffers, code, params):
    """``winograd.run_task`` on channels-last x (N, D, H, W, C_in) and y (N, oD, oH, oW, C_out): the same
    arguments (``buffers``' last entry, the channels-first pack's transpose tile, is not read), the same points
    and GEMMs, ``pack_nhwc`` and ``inverse_nhwc`` at either end."""
    wt, u_all = weights
    gi, cin_g, n0, nb, th0, nth, c0, cb = chunk
    tables, u_coefs, v_terms, v_counts, a_terms, msize, step, offset, stride = spec
    xp_buf, v_buf, u_buf, m_buf, buf, _tile = buffers
    xp = xp_buf[:nb]
    if repack:
        pack_nhwc(x, n0, nb, gi * cin_g, offset, th0 * step[1], xp)
    n_pt = u_coefs.shape[0]
    shared = u_all.shape[0] > 0
    c_in = x.shape[4]
    cout_g = y.shape[4] // (c_in // cin_g)  # (not wt.shape[3]: with shared weights wt is an empty stand-in)
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
        inverse_nhwc(m_blocks, a_terms, buf, y, bias, (n0, nb, gi * cout_g + c0, th0),
                     (tables[p, 0], tables[p, 1], local), stride, msize, code, params)
