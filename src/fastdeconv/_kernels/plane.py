"""Gather form for groups with one input channel (depthwise layers, single-channel images) or few output
channels (RGB output layers, class maps): phase correlations over a zero-padded copy of the input rows.

When every output channel reads a single input channel (``C_in / groups == 1``: depthwise and FCN bilinear
upsampling, single-channel images) there is no channel contraction to hand to BLAS, and the direct kernels'
rows are only as long as an input row (32 elements in a depthwise 32x32 layer: too short for LLVM's vector
loop). With few output channels (3 in an RGB layer) BLAS has a contraction, but a GEMM 3 x K wide runs far
below its peak. Here each task copies the input rows one block of output rows needs, of every input channel
of its group, into zero-bordered scratch rows of pitch ``pitch``. Along an axis with stride ``s`` the outputs
``o = phase + s * m`` are a dense correlation of the input with the taps reaching that phase
(``_geometry.Axis.phases``: tap ``k`` reads input ``m + base``), so in the scratch rows one (phase, input
channel, tap) triple is a single contiguous run over the whole block, ``buf[m_h * pitch + m_w] += w[k] *
xpad[(m_h + base_h - lo_h) * pitch + m_w + base_w - lo_w]``: no bounds check, no zero of the dilated input,
runs of thousands of elements. Each phase's terms (input channel, tap) are summed four at a time (one store
per element per four terms), for ``CHANNEL_BLOCK`` output channels at once when a group has several (each
input element loaded once for all of them); ``store_block`` then interleaves the phases into the output and
adds the bias. The columns of a run beyond a phase's outputs (``pitch`` exceeds them by the taps' spread) are
computed and never stored.

Each output element is computed by one task from its terms in a fixed order (input channel, depth tap, row
tap, column tap): bitwise-identical results across thread counts. Scratch per worker: the padded rows plus one
block of phase rows, sized to stay in L2. When the variant applies, its layout (tables, pitch, blocks) and the
driver that runs the tasks are the variant's (``variants/gather_plane.py``).
"""

from __future__ import annotations

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._blocks import store_block
from ._index import unravel


@njit(**NJIT_FLAGS)
def _fill_rows(xpad, dst, xf, src_row, first_row, n_rows, size_h, size_w, lo_w, pitch):
    """``xpad[dst + r * pitch + c] = x[first_row + r, lo_w + c]`` (zero outside the input) for ``n_rows`` rows;
    ``src_row`` is the flat offset of input row 0 of the plane."""
    c_lo = min(pitch, max(0, -lo_w))
    c_hi = max(c_lo, min(pitch, size_w - lo_w))
    for r in range(n_rows):
        row = uintp(dst + r * pitch)
        ih = first_row + r
        if ih < 0 or ih >= size_h:
            for c in range(uintp(pitch)):
                xpad[row + c] = 0
            continue
        src = uintp(src_row + ih * size_w + lo_w + c_lo)
        for c in range(uintp(c_lo)):
            xpad[row + c] = 0
        for c in range(uintp(c_hi - c_lo)):
            xpad[row + uintp(c_lo) + c] = xf[src + c]
        for c in range(uintp(c_hi), uintp(pitch)):
            xpad[row + c] = 0


@njit(**NJIT_FLAGS)
def _correlate(buf, dst, xpad, taps, weights, n_taps, n):
    """``buf[dst + q] = sum_t weights[t] * xpad[taps[t] + q]`` for ``q < n``, the taps in table order (four per
    pass over ``buf``).

    The caller's tap count starts as ``np.int64(0)``: from a literal ``0`` numba's type inference, which resolves
    a call once per type its arguments take while it iterates, would compile this helper (and ``_correlate3``)
    a second time for ``Literal[int](0)``."""
    d, cnt = uintp(dst), uintp(n)
    if n_taps == 0:
        for q in range(cnt):
            buf[d + q] = 0
        return
    t = 0
    while t < n_taps:
        left = n_taps - t
        o0, a0 = uintp(taps[t]), weights[t]
        if left >= 4:
            o1, o2, o3 = uintp(taps[t + 1]), uintp(taps[t + 2]), uintp(taps[t + 3])
            a1, a2, a3 = weights[t + 1], weights[t + 2], weights[t + 3]
            if t == 0:
                for q in range(cnt):
                    buf[d + q] = ((a0 * xpad[o0 + q] + a1 * xpad[o1 + q]) + a2 * xpad[o2 + q]) + a3 * xpad[o3 + q]
            else:
                for q in range(cnt):
                    buf[d + q] = (((buf[d + q] + a0 * xpad[o0 + q]) + a1 * xpad[o1 + q]) + a2 * xpad[o2 + q]
                                  ) + a3 * xpad[o3 + q]
            t += 4
        elif left >= 2:
            o1, a1 = uintp(taps[t + 1]), weights[t + 1]
            if t == 0:
                for q in range(cnt):
                    buf[d + q] = a0 * xpad[o0 + q] + a1 * xpad[o1 + q]
            else:
                for q in range(cnt):
                    buf[d + q] = (buf[d + q] + a0 * xpad[o0 + q]) + a1 * xpad[o1 + q]
            t += 2
        else:
            if t == 0:
                for q in range(cnt):
                    buf[d + q] = a0 * xpad[o0 + q]
            else:
                for q in range(cnt):
                    buf[d + q] += a0 * xpad[o0 + q]
            t += 1


@njit(**NJIT_FLAGS)
def _correlate3(buf, dst, cstride, xpad, taps, weights, n_taps, n):
    """``buf[dst + c * cstride + q] = sum_t weights[3 * t + c] * xpad[taps[t] + q]`` for three channels ``c`` and
    ``q < n``: each input element is loaded once for the three; four taps per pass, in table order."""
    d0, cnt = uintp(dst), uintp(n)
    d1, d2 = d0 + uintp(cstride), d0 + uintp(2 * cstride)
    for q in range(cnt):
        buf[d0 + q] = 0
        buf[d1 + q] = 0
        buf[d2 + q] = 0
    t = 0
    while t + 4 <= n_taps:
        o0, o1, o2, o3 = uintp(taps[t]), uintp(taps[t + 1]), uintp(taps[t + 2]), uintp(taps[t + 3])
        w = 3 * t
        a00, a01, a02, a03 = weights[w], weights[w + 3], weights[w + 6], weights[w + 9]
        a10, a11, a12, a13 = weights[w + 1], weights[w + 4], weights[w + 7], weights[w + 10]
        a20, a21, a22, a23 = weights[w + 2], weights[w + 5], weights[w + 8], weights[w + 11]
        for q in range(cnt):
            x0, x1, x2, x3 = xpad[o0 + q], xpad[o1 + q], xpad[o2 + q], xpad[o3 + q]
            buf[d0 + q] = (((buf[d0 + q] + a00 * x0) + a01 * x1) + a02 * x2) + a03 * x3
            buf[d1 + q] = (((buf[d1 + q] + a10 * x0) + a11 * x1) + a12 * x2) + a13 * x3
            buf[d2 + q] = (((buf[d2 + q] + a20 * x0) + a21 * x1) + a22 * x2) + a23 * x3
        t += 4
    while t < n_taps:
        o0 = uintp(taps[t])
        a0, a1, a2 = weights[3 * t], weights[3 * t + 1], weights[3 * t + 2]
        for q in range(cnt):
            x0 = xpad[o0 + q]
            buf[d0 + q] += a0 * x0
            buf[d1 + q] += a1 * x0
            buf[d2 + q] += a2 * x0
        t += 1


@njit(**NJIT_FLAGS)
def plane_tasks(task_lo, task_hi, x, w, bias, y, groups, t_d, t_h, t_w, geometry, blocked):
    """Transposed convolution, gather form, tasks ``[task_lo, task_hi)`` of ``task_count`` (sample, group, output
    depth, block of phase rows) into ``y``; scratch allocated once per call.

    Parameters
    ----------
    task_lo, task_hi : int
        The range of tasks to run.
    x, w, bias, y : numpy.ndarray
        Canonical C-contiguous x (N, C_in, D, H, W), weight (C_in, C_out // groups, kD, kH, kW), bias (C_out,)
        and output y (N, C_out, oD, oH, oW), one float dtype (``applies``).
    groups : int
        Channel groups.
    t_d, t_h, t_w, geometry : numpy.ndarray
        ``layout(plan)``: the per-axis phase tables and (lo_h, span_h, lo_w, pitch, block, blocks, channels per
        pass).
    blocked : None or bool
        None with one output channel per pass, True with a block of them. Not a number, so that numba decides
        ``blocked is None`` when it types the kernel and compiles only the pass kernel the layer calls (each of
        the two takes about a second to compile).
    """
    size_d, size_h, size_w = x.shape[2], x.shape[3], x.shape[4]
    cin_g = x.shape[1] // groups
    c_out_g, k_d, k_h, k_w = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    k_vol = k_d * k_h * k_w
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    s_d, s_h, s_w = t_d.shape[0], t_h.shape[0], t_w.shape[0]
    lo_h, span_h, lo_w, pitch, block, blocks, cb = (geometry[0], geometry[1], geometry[2], geometry[3], geometry[4],
                                                    geometry[5], geometry[6])
    xf, yf, wf = x.reshape(-1), y.reshape(-1), w.reshape(-1)
    max_dt = 0
    for p in range(s_d):
        max_dt = max(max_dt, t_d[p, 1])
    max_dt = max(1, max_dt)
    x_rows = block + span_h + 1  # padded rows of one depth tap (the last one: a run's tail reads into it)
    xpad = np.empty(cin_g * max_dt * x_rows * pitch, dtype=x.dtype)  # (input channel, depth tap, row, column)
    buf = np.empty(cb * s_w * block * pitch, dtype=y.dtype)  # (channel of the pass, column phase, row, column)
    n_max = max(1, cin_g * max_dt * t_h.shape[1] * t_w.shape[1])
    taps = np.empty(n_max, dtype=np.int64)  # flat xpad offset of each (input channel, tap) of one phase
    weights = np.empty(n_max * cb, dtype=w.dtype)  # its weight for each channel of the pass
    depth = np.empty((max_dt, 2), dtype=np.int64)  # (kd, input depth) of the depth taps reaching od
    phase_len = block * pitch  # one column phase in ``buf``
    for task in range(task_lo, task_hi):
        n, g, od, blk = unravel(task, groups, o_d, blocks)
        pd, md = od % s_d, od // s_d
        n_dt = 0
        for u in range(t_d[pd, 1]):
            i_d = md + t_d[pd, 3 + 2 * u]
            if 0 <= i_d < size_d:
                depth[n_dt, 0], depth[n_dt, 1] = t_d[pd, 2 + 2 * u], i_d
                n_dt += 1
        m0 = blk * block
        m1 = min(m0 + block, t_h[0, 0])
        for ci in range(cin_g):  # the input rows [m0 + lo_h, m1 + lo_h + span_h] of each depth tap's slice
            for t in range(n_dt):
                plane = ((n * x.shape[1] + g * cin_g + ci) * size_d + depth[t, 1]) * size_h * size_w
                _fill_rows(xpad, (ci * max_dt + t) * x_rows * pitch, xf, plane, m0 + lo_h, m1 - m0 + span_h + 1,
                           size_h, size_w, lo_w, pitch)
        for c0 in range(0, c_out_g, cb):
            nc = min(cb, c_out_g - c0)  # channels of this pass (a short last pass computes zero-weight extras)
            co = g * c_out_g + c0
            for ph in range(s_h):
                rows = min(m1, t_h[ph, 0]) - m0
                if rows <= 0:
                    continue
                for pw in range(s_w):
                    if t_w[pw, 0] == 0:  # no output in this column phase (its bases may lie outside the pad)
                        continue
                    n_taps = np.int64(0)  # (not a literal 0: see ``_correlate``)
                    for ci in range(cin_g):
                        w_ci = ((g * cin_g + ci) * c_out_g + c0) * k_vol  # w[g * cin_g + ci, c0]
                        for t in range(n_dt):
                            for uh in range(t_h[ph, 1]):
                                row = (ci * max_dt + t) * x_rows + t_h[ph, 3 + 2 * uh] - lo_h
                                wrow = w_ci + (depth[t, 0] * k_h + t_h[ph, 2 + 2 * uh]) * k_w
                                for uw in range(t_w[pw, 1]):
                                    taps[n_taps] = row * pitch + t_w[pw, 3 + 2 * uw] - lo_w
                                    for c in range(cb):
                                        weights[n_taps * cb + c] = wf[wrow + t_w[pw, 2 + 2 * uw] + c * k_vol] \
                                            if c < nc else 0
                                    n_taps += 1
                    if blocked is None:  # (cb == 1)
                        _correlate(buf, pw * phase_len, xpad, taps, weights, n_taps, rows * pitch)
                    else:
                        _correlate3(buf, pw * phase_len, s_w * phase_len, xpad, taps, weights, n_taps, rows * pitch)
                y0 = (((n * y.shape[1] + co) * o_d + od) * o_h + ph + s_h * m0) * o_w
                store_block(buf, (nc, s_w * phase_len, rows, pitch, phase_len), yf,
                            (y0, s_h * o_w, o_d * o_h * o_w, o_w, s_w), bias, co)
