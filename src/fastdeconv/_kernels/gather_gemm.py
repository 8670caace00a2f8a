"""Gather form on BLAS: sub-pixel (phase) decomposition, im2col of the undilated input, one GEMM per phase.

Along an axis with stride ``s`` the outputs ``o = r + s * m`` of phase ``r`` are all reached by the same taps
``k`` (those with ``(r + start - k * dilation) % s == 0``), tap ``k`` reading the input at ``m + base_k``. So
each of the ``prod(stride)`` output phases is a dense correlation of the *undilated* input with a sub-kernel:
``Y_r (C_out_g, cols) = W_r (C_out_g, C_in_g * T_r) @ im2col_r (C_in_g * T_r, cols)``. No zero of the
stride-dilated input is ever multiplied. ``phase_store`` writes the phase into its strided output positions
with the bias. Every output element is written exactly once, from one GEMM dot product, by one thread: the
result is bitwise identical for any current thread count (``set_num_threads``). Not for any pool size: the
chunks below follow ``NUMBA_NUM_THREADS``, a chunk's GEMM has the chunk's shape, and OpenBLAS picks its kernels
(so the order of a dot product's terms) by the sizes: the last bits may differ (~1e-6 relative in float32).

The phase table, the chunking, the packing and the driver are the variant's (``variants/gather_gemm.py``).
"""

from __future__ import annotations

from .._compiled import njit
from ..config import NJIT_FLAGS


@njit(**NJIT_FLAGS)
def phase_weights(w, ci0, c_in_g, c0, cb, taps, counts, wp):
    """``wp[co, ci * T + t] = w[ci0 + ci, c0 + co, kd_t, kh_t, kw_t]`` for the phase's ``T`` taps (one group's
    input channels, a block of ``cb`` output channels)."""
    t_d, t_h, t_w = counts[0], counts[1], counts[2]
    n_t = t_d * t_h * t_w
    for ci in range(c_in_g):
        for co in range(cb):
            q = ci * n_t
            for a in range(t_d):
                for b in range(t_h):
                    for c in range(t_w):
                        wp[co, q] = w[ci0 + ci, c0 + co, taps[0, a], taps[1, b], taps[2, c]]
                        q += 1


@njit(**NJIT_FLAGS)
def im2col(x, ci0, c_in_g, bases, counts, m_shape, row0, n_rows, cols):
    """``cols[ci * T + t, q * Mw + mw] = x[j, ci0 + ci, md + bd_t, mh + bh_t, mw + bw_t]`` (0 outside x).

    ``q`` runs over the phase's output rows ``row0 + q = (j * Md + md) * Mh + mh``, ``q < n_rows``.
    """
    size_d, size_h, size_w = x.shape[2], x.shape[3], x.shape[4]
    t_d, t_h, t_w = counts[0], counts[1], counts[2]
    n_t = t_d * t_h * t_w
    m_d, m_h, m_w = m_shape[0], m_shape[1], m_shape[2]
    for task in range(c_in_g * n_t):
        ci = task // n_t
        t = task - ci * n_t
        tw = t % t_w
        th = (t // t_w) % t_h
        td = t // (t_w * t_h)
        b_d, b_h, b_w = bases[0, td], bases[1, th], bases[2, tw]
        lo = min(m_w, max(0, -b_w))
        hi = max(lo, min(m_w, size_w - b_w))
        dst = cols[task]
        mh = row0 % m_h
        md = (row0 // m_h) % m_d
        j = row0 // (m_h * m_d)
        p = 0
        for _ in range(n_rows):
            i_d = md + b_d
            i_h = mh + b_h
            if i_d < 0 or i_d >= size_d or i_h < 0 or i_h >= size_h:
                dst[p:p + m_w] = 0
            else:
                src = x[j, ci0 + ci, i_d, i_h]
                dst[p:p + lo] = 0
                dst[p + lo:p + hi] = src[lo + b_w:hi + b_w]
                dst[p + hi:p + m_w] = 0
            p += m_w
            mh += 1
            if mh == m_h:
                mh = 0
                md += 1
                if md == m_d:
                    md = 0
                    j += 1


@njit(**NJIT_FLAGS)
def phase_store(tmp, y, bias, c0, cb, phase, m_shape, stride, row0, n_rows):
    """``y[j, c0 + c, r_d + s_d * md, r_h + s_h * mh, r_w + s_w * mw] = tmp[c, q * Mw + mw] + bias``."""
    m_d, m_h, m_w = m_shape[0], m_shape[1], m_shape[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    r_w = phase[2]
    for task in range(cb * n_rows):
        c = task // n_rows
        q = task - c * n_rows
        row = row0 + q
        mh = row % m_h
        rest = row // m_h
        md = rest % m_d
        j = rest // m_d
        yrow = y[j, c0 + c, phase[0] + s_d * md, phase[1] + s_h * mh]
        src = tmp[c]
        bv = bias[c0 + c]
        p = q * m_w
        for m in range(m_w):
            yrow[r_w + s_w * m] = src[p + m] + bv
