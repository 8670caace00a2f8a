"""Scatter form on BLAS: channel contraction as one GEMM, then a parallel col2im.

For every input pixel ``p`` the footprint over all (output channel, tap) pairs is one column of
``cols = W^T @ X`` with ``W`` the weight as a (C_in_g, C_out_g * K) matrix (its natural memory layout, so no
copy) and ``X`` the input as (C_in_g, pixels). Every product in that GEMM is a term of the definition: no
zero of the stride-dilated input is ever multiplied. ``col2im`` then adds each column's footprint into the
output, ``y[o] = bias + sum over taps reaching o``. It is partitioned by output row (sample, channel, row),
so no two threads write the same element and every element sums its terms in the same tap order: the result
is bitwise identical for any current thread count (``set_num_threads``). The GEMM's own sums are OpenBLAS's,
whose kernels depend on the product's sizes: the chunks follow numba's pool size (below), so a process with
another ``NUMBA_NUM_THREADS`` may differ in the last bits.

The chunking and the driver are the variants' (``variants/scatter_gemm.py``). Work is chunked over (sample block,
output-channel block) so the scratch (``cols`` plus the packed input) of
all workers together stays within one output's size; a sample whose columns alone would not fit (or whose
whole columns would leave only thin GEMMs) is cut into slabs along its outermost axis, which its worker adds
into the output one after another (the terms of an output element then arrive slab by slab, in an order
fixed by the shapes). The chunking depends only on the shapes and numba's pool size, never on the current
thread count.

Layers with a wide stride along the last axis (``WIDE_STRIDE``: iSTFT-like overlap-add) run the GEMM
pixels-major instead, ``cols^T = X^T @ W`` (the same products), and col2im adds each pixel's column taps as one
contiguous run, pixels last to first so that every element still receives its terms in tap order.

The gather twin (variant ``gather-gemm-cols``) runs the same chunks and GEMMs, then every output element sums its
terms in a register, by output phase, and is stored once (``gather_phases``).
"""

from __future__ import annotations

import numpy as np

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import at, source_between

# Strides along the last axis from which col2im adds a row's taps input pixel by input pixel (contiguous output,
# one run of the pixel's column taps) instead of tap by tap (input pixels ``stride`` apart in the output): at 256
# (an iSTFT-like layer) the strided stores 1 KiB apart alias in the store buffer (4K aliasing) every fourth
# element. There the GEMM is pixels-major, ``cols^T = X^T @ W`` (``_run``), so that a pixel's column taps are
# contiguous in ``cols`` too: the overlap-add is one vector loop per (pixel, channel, tap row).
WIDE_STRIDE = 32


@njit(**NJIT_FLAGS)
def _add_wide(cf, yf, out, rows, source, columns):
    """``col2im``'s adds of one (channel, depth tap, row tap) for wide strides: per input pixel ``i_w`` of the
    box ``[w0, w1)``, its column taps that land inside the output as one run, at ``i_w * s_w + off_w + kw *
    d_w``. The term of (tap ``kw``, pixel ``q``) is ``cf[(row0 + kw) * tap_step + q * pixel_step]`` (``q``
    counts the box's pixels, sample-major). The pixels go last to first, so that every output element
    receives its terms in tap order, as from the tap-by-tap adds.

    The groups (every member int64) are those of ``col2im``: ``out = (n, n0, co, c_out, od, o_d, o_h, o_w)``
    the output block (``n`` samples from ``n0``, channel ``co`` of ``c_out``, depth ``od`` of an (o_d, o_h,
    o_w) output), ``rows = (ih_lo, ih_hi, size_w, s_h, off_h)`` the input rows of the row tap (landing at
    ``i_h * s_h + off_h``, ``size_w`` pixels apart in ``cf``), ``source = (row0, tap_step, pixel_step, pix,
    offset)`` where the terms are (``pix`` pixels per sample, ``offset`` that of the depth tap's source plane
    minus the box's first row), ``columns = (w0, w1, k_w, s_w, d_w, off_w)`` the box's input columns and the
    last axis's kernel, stride, dilation and first tap offset."""
    n, n0, co, c_out, od, o_d, o_h, o_w = out
    ih_lo, ih_hi, size_w, s_h, off_h = rows
    row0, tap_step, pixel_step, pix, offset = source
    w0, w1, k_w, s_w, d_w, off_w = columns
    for j in range(n):
        plane = (((n0 + j) * c_out + co) * o_d + od) * o_h
        for i_h in range(ih_lo, ih_hi):
            out_row = (plane + i_h * s_h + off_h) * o_w
            q0 = j * pix + offset + i_h * size_w - w0  # pixel number of (i_h, 0) in the box
            for i_w in range(w1 - 1, w0 - 1, -1):
                first = i_w * s_w + off_w  # where tap 0 would land
                k_lo, k_hi = max(0, -(first // d_w)), min(k_w, -((first - o_w) // d_w))
                dst = out_row + first
                src = row0 * tap_step + (q0 + i_w) * pixel_step
                if d_w == 1 and tap_step == 1:
                    for kw in range(k_lo, k_hi):
                        yf[at(dst + kw)] += cf[at(src + kw)]
                else:
                    for kw in range(k_lo, k_hi):
                        yf[at(dst + kw * d_w)] += cf[at(src + kw * tap_step)]


# Shortest input row (within a slab) from which ``_add_grouped`` runs: its per-row edge loops cost more than the
# interleaving saves on shorter rows, and less on longer ones
GROUPED_ROW = 64


@njit(**NJIT_FLAGS)
def _add_grouped(cf, yf, out, rows, source, columns, taps):
    """``col2im``'s adds of one (channel, depth tap, row tap) in groups of ``s_w`` (2 or 4) consecutive column
    taps (undilated): for one input pixel a group's taps land on ``s_w`` neighbouring outputs, so over the
    pixels where all of them land inside, the group's ``cols`` rows are interleaved into one contiguous output
    run (a vector loop; tap by tap the stores are ``s_w`` apart). Only the full groups: ``col2im`` adds the
    taps left over (``k_w % s_w``) tap by tap afterwards. An element receives one term per group, and the
    groups go in tap order: the terms come in tap order, as tap by tap.

    ``out`` and ``rows`` as for ``_add_wide``; ``source = (row0, n_cols, pix, offset)``: tap ``kw``'s terms are
    the ``cf`` row ``row0 + kw`` (``n_cols`` long), ``offset`` that of the depth tap's source plane minus the
    box's first pixel; ``columns = (w0, w1, k_w, s_w)``: the box's input columns, the last axis's kernel and
    stride."""
    n, n0, co, c_out, od, o_d, o_h, o_w = out
    ih_lo, ih_hi, size_w, s_h, off_h = rows
    row0, n_cols, pix, offset = source
    w0, w1, k_w, s_w = columns
    for g0 in range(0, k_w - k_w % s_w, s_w):
        lo, hi = w0, w1  # the pixels every tap of the group lands inside from
        for t in range(s_w):
            lo, hi = max(lo, taps[2, g0 + t, 1]), min(hi, taps[2, g0 + t, 2])
        hi = max(lo, hi)
        for j in range(n):
            plane = (((n0 + j) * c_out + co) * o_d + od) * o_h
            for i_h in range(ih_lo, ih_hi):
                dst = (plane + i_h * s_h + off_h) * o_w + taps[2, g0, 0]
                src = (row0 + g0) * n_cols + j * pix + offset + i_h * size_w
                for t in range(s_w):  # the edges, tap by tap
                    t_lo, t_hi = max(w0, taps[2, g0 + t, 1]), min(w1, taps[2, g0 + t, 2])
                    for i_w in range(t_lo, min(t_hi, lo)):
                        yf[at(dst + i_w * s_w + t)] += cf[at(src + t * n_cols + i_w)]
                    for i_w in range(max(t_lo, hi), t_hi):
                        yf[at(dst + i_w * s_w + t)] += cf[at(src + t * n_cols + i_w)]
                if s_w == 2:
                    for i_w in range(lo, hi):
                        yf[at(dst + 2 * i_w)] += cf[at(src + i_w)]
                        yf[at(dst + 2 * i_w + 1)] += cf[at(src + n_cols + i_w)]
                else:
                    for i_w in range(lo, hi):
                        yf[at(dst + 4 * i_w)] += cf[at(src + i_w)]
                        yf[at(dst + 4 * i_w + 1)] += cf[at(src + n_cols + i_w)]
                        yf[at(dst + 4 * i_w + 2)] += cf[at(src + 2 * n_cols + i_w)]
                        yf[at(dst + 4 * i_w + 3)] += cf[at(src + 3 * n_cols + i_w)]


@njit(**NJIT_FLAGS)
def _write_pairs(cf, yf, out, rows, source, columns, bv):
    """``col2im``'s writes of one (channel, depth tap, row tap) when every output receives exactly one term and
    the two column taps are neighbours over the same inputs (kernel 2, stride 2 along the last axis):
    ``y[..., 2 * i_w + off_w + t] = cols[row of tap t, i_w] + bias`` for t = 0, 1, the two rows interleaved in
    one loop (stores to consecutive outputs, which LLVM vectorizes; the tap-by-tap loop stores every other one).

    ``out`` and ``rows`` as for ``_add_wide``; ``source = (crow, n_cols, pix, offset)``: tap 0's terms start at
    ``cf[crow]``, tap 1's a row (``n_cols``) further; ``columns = (off_w, iw_lo, iw_hi)``: tap 0's output
    offset and the input columns both taps land inside from."""
    n, n0, co, c_out, od, o_d, o_h, o_w = out
    ih_lo, ih_hi, size_w, s_h, off_h = rows
    crow, n_cols, pix, offset = source
    off_w, iw_lo, iw_hi = columns
    for j in range(n):
        base = crow + j * pix + offset
        plane = (((n0 + j) * c_out + co) * o_d + od) * o_h
        for i_h in range(ih_lo, ih_hi):
            dst = (plane + i_h * s_h + off_h) * o_w + off_w
            src = base + i_h * size_w
            for i_w in range(iw_lo, iw_hi):
                yf[at(dst + 2 * i_w)] = cf[at(src + i_w)] + bv
                yf[at(dst + 2 * i_w + 1)] = cf[at(src + n_cols + i_w)] + bv


@njit(**NJIT_FLAGS)
def col2im(cols, y, bias, block, box, kernel, stride, taps, flags):
    """Add every column footprint of ``cols`` (cb * K, n * P; ``pixels_major``: its transpose) into
    ``y[n0:n0+n, c0:c0+cb]``.

    ``cols`` holds the columns of the input pixels in ``box`` (``box[axis] = (lo, hi)``, ``P`` pixels per
    sample): the whole input, or a slab of it (``scatter_gemm`` cuts a sample too large for the memory rule
    into slabs along one axis, added one after another). Channel by channel and depth by depth, tap by tap in
    (kd, kh, kw) order, the tap's row of ``cols`` is added for all ``n`` samples at once (so the per-tap
    set-up is shared by the samples: DCGAN planes are only 4x4 to 16x16 pixels). ``taps[axis, k]`` holds the
    tap's output offset and the input range ``[lo, hi)`` that lands inside the output (precomputed: no
    division in the loops); from ``WIDE_STRIDE`` on, a (depth tap, row tap)'s column taps are added input pixel
    by input pixel instead (``_add_wide``, the only path that reads a ``pixels_major`` block), and with stride 2
    or 4 on rows of ``GROUPED_ROW`` pixels or more, in interleaved groups of ``stride`` taps (``_add_grouped``).
    Every path adds an element's terms in tap order. The ``first`` slab sets the output to the bias before adding; with
    ``once`` (every output element receives exactly one term: ``exactly_once``) each element is written once,
    ``term + bias``, instead (the same value: addition commutes exactly).

    ``block = (n0, c0, n, cb)`` (int64) is the output block, ``flags = (once, first, pixels_major)``.
    """
    n0, c0, n, cb = block
    once, first, pixels_major = flags
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    d0, d1, h0, h1, w0, w1 = box[0, 0], box[0, 1], box[1, 0], box[1, 1], box[2, 0], box[2, 1]
    size_h, size_w = h1 - h0, w1 - w0
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_w = taps[2, 1, 0] - taps[2, 0, 0] if k_w > 1 else 1  # the last axis's dilation
    pix = (d1 - d0) * size_h * size_w
    c_out, n_cols = y.shape[1], cols.shape[1]
    yf, cf = y.reshape(-1), cols.reshape(-1)
    # U-Net's 2x2 stride-2 up-convolution: a row's two column taps land on neighbouring outputs over the same
    # inputs, so each output row is their two cols rows interleaved (one vectorized loop, ``_write_pairs``)
    grouped = (s_w == 2 or s_w == 4) and k_w >= s_w and d_w == 1 and size_w >= GROUPED_ROW  # see _add_grouped
    pairs = (k_w == 2 and s_w == 2 and taps[2, 1, 0] == taps[2, 0, 0] + 1 and taps[2, 0, 1] == taps[2, 1, 1]
             and taps[2, 0, 2] == taps[2, 1, 2])
    for c in range(cb):
        co = c0 + c
        bv = bias[co]
        for od in range(o_d):
            if first and not once:
                for j in range(n):
                    for oh in range(o_h):
                        for ow in range(o_w):
                            y[n0 + j, co, od, oh, ow] = bv
            for kd in range(k_d):
                i_d = source_between(od, s_d, taps[0, kd, 0], max(d0, taps[0, kd, 1]), min(d1, taps[0, kd, 2]))
                if i_d < 0:
                    continue
                for kh in range(k_h):
                    off_h = taps[1, kh, 0]
                    ih_lo, ih_hi = max(h0, taps[1, kh, 1]), min(h1, taps[1, kh, 2])
                    row0 = ((c * k_d + kd) * k_h + kh) * k_w
                    out = (n, n0, co, c_out, od, o_d, o_h, o_w)
                    rows = (ih_lo, ih_hi, size_w, s_h, off_h)
                    if (s_w >= WIDE_STRIDE or pixels_major) and not once:
                        _add_wide(cf, yf, out, rows,
                                  (row0, 1 if pixels_major else n_cols, cols.shape[1] if pixels_major else 1, pix,
                                   (i_d - d0) * size_h * size_w - h0 * size_w),
                                  (w0, w1, k_w, s_w, d_w, taps[2, 0, 0]))
                        continue
                    kw0 = 0  # the first column tap added tap by tap below
                    if grouped and not once:
                        _add_grouped(cf, yf, out, rows,
                                     (row0, n_cols, pix, (i_d - d0) * size_h * size_w - h0 * size_w - w0),
                                     (w0, w1, k_w, s_w), taps)
                        kw0 = k_w - k_w % s_w
                    elif once and pairs:
                        _write_pairs(cf, yf, out, rows,
                                     (row0 * n_cols, n_cols, pix, (i_d - d0) * size_h * size_w - h0 * size_w - w0),
                                     (taps[2, 0, 0], max(w0, taps[2, 0, 1]), min(w1, taps[2, 0, 2])), bv)
                        continue
                    for kw in range(kw0, k_w):
                        off_w = taps[2, kw, 0]
                        iw_lo, iw_hi = max(w0, taps[2, kw, 1]), min(w1, taps[2, kw, 2])
                        crow = (row0 + kw) * n_cols
                        for j in range(n):
                            base = crow + j * pix + (i_d - d0) * size_h * size_w - h0 * size_w - w0
                            plane = (((n0 + j) * c_out + co) * o_d + od) * o_h
                            for i_h in range(ih_lo, ih_hi):
                                dst = (plane + i_h * s_h + off_h) * o_w + off_w
                                src = base + i_h * size_w
                                if once:
                                    for i_w in range(iw_lo, iw_hi):
                                        yf[at(dst + i_w * s_w)] = cf[at(src + i_w)] + bv
                                else:
                                    for i_w in range(iw_lo, iw_hi):
                                        yf[at(dst + i_w * s_w)] += cf[at(src + i_w)]


@njit(**NJIT_FLAGS)
def _phase_ranges(table, first, w0, w1, n_pw):
    """``gather_phases``'s positions ``[m_lo, m_hi)`` to write in each phase ``pw < n_pw`` of the last axis (its
    rows of the phase table: ``table = phases[2]``), as an (n_pw, 2) array: all of the phase's outputs for the
    ``first`` slab, else only those its input columns ``[w0, w1)`` reach (once per call: they depend on the
    phase alone)."""
    ranges = np.empty((n_pw, 2), np.int64)
    for pw in range(n_pw):
        m_w = table[pw, 0]
        m_lo, m_hi = 0, m_w
        if not first:  # only the outputs this slab's inputs reach
            m_lo, m_hi = m_w, 0
            for tw in range(table[pw, 1]):
                base = table[pw, 3 + 2 * tw]
                m_lo, m_hi = min(m_lo, max(0, w0 - base)), max(m_hi, min(m_w, w1 - base))
        ranges[pw, 0], ranges[pw, 1] = m_lo, m_hi
    return ranges


@njit(**NJIT_FLAGS)
def _reached(table, lo, hi):
    """``reached[r, m]``: whether a tap of output ``m`` of phase ``r`` of an axis (its rows of the phase table,
    ``table = phases[axis]``) reads an input ``m + base`` of the slab's ``[lo, hi)`` (``gather_phases``: a later
    slab adds to the rows it reaches only)."""
    m_max = 0
    for r in range(table.shape[0]):
        m_max = max(m_max, table[r, 0])
    reached = np.zeros((table.shape[0], m_max), np.bool_)
    for r in range(table.shape[0]):
        for m in range(table[r, 0]):
            for t in range(table[r, 1]):
                if lo <= m + table[r, 3 + 2 * t] < hi:
                    reached[r, m] = True
    return reached


@njit(**NJIT_FLAGS)
def gather_phases(cols, y, bias, block, box, kernel, stride, phases, flags, acc):
    """The gather twin of ``col2im``: each output element of ``y[n0:n0+n, c0:c0+cb]`` sums, in ``acc``, the
    ``cols`` entries of the (input pixel in ``box``, tap) pairs that reach it, and is stored once.

    By output phase (``phases[axis, r] = (outputs, taps, then (tap, base) pairs)``, ``_geometry.Axis.phases``):
    output ``r + stride * m`` of an axis is reached by tap ``k`` from input ``m + base``, so along the last axis
    a tap's terms for a row of a phase are one contiguous run of ``cols``. Per element the terms come in
    (kd, kh, kw) order; the ``first`` slab starts from the bias, a later one from the element's partial sum
    (the slabs of a sample cut by ``scatter_gemm``): the same terms in the same order as ``col2im``, so the
    same bits. ``block = (n0, c0, n, cb)`` (int64) is the output block, as for ``col2im``; ``flags = (first,
    pixels_major)``: ``cols`` is (cb * K, n * P), or with ``pixels_major`` its transpose (the run of a tap's terms
    is then strided).
    """
    n0, c0, n, cb = block
    first, pixels_major = flags
    o_h, o_w = y.shape[3], y.shape[4]
    vol = y.shape[2] * o_h * o_w
    d0, d1, h0, h1, w0, w1 = box[0, 0], box[0, 1], box[1, 0], box[1, 1], box[2, 0], box[2, 1]
    size_h, size_w = h1 - h0, w1 - w0
    pix = (d1 - d0) * size_h * size_w
    k_h, k_w = kernel[1], kernel[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    tap_step, pixel_step = (1, cols.shape[1]) if pixels_major else (cols.shape[1], 1)
    yf, cf = y.reshape(-1), cols.reshape(-1)
    ranges = _phase_ranges(phases[2], first, w0, w1, min(s_w, o_w))
    reach_d, reach_h = _reached(phases[0], d0, d1), _reached(phases[1], h0, h1)
    for c in range(cb):
        co = c0 + c
        bv = bias[co]
        for j in range(n):
            sample = ((n0 + j) * y.shape[1] + co) * vol
            col0 = j * pix - w0
            for pd in range(min(s_d, y.shape[2])):  # the phases with outputs (``phase_table``)
                for ph in range(min(s_h, o_h)):
                    for pw in range(min(s_w, o_w)):
                        m_lo, m_hi = ranges[pw, 0], ranges[pw, 1]
                        if m_lo >= m_hi:
                            continue
                        for md in range(phases[0, pd, 0]):
                            for mh in range(phases[1, ph, 0]):
                                if not (first or (reach_d[pd, md] and reach_h[ph, mh])):
                                    continue
                                out = sample + ((pd + s_d * md) * o_h + ph + s_h * mh) * o_w + pw
                                for m in range(m_lo, m_hi):
                                    acc[m] = bv if first else yf[at(out + m * s_w)]
                                for td in range(phases[0, pd, 1]):
                                    i_d = md + phases[0, pd, 3 + 2 * td]
                                    if i_d < d0 or i_d >= d1:
                                        continue
                                    for th in range(phases[1, ph, 1]):
                                        i_h = mh + phases[1, ph, 3 + 2 * th]
                                        if i_h < h0 or i_h >= h1:
                                            continue
                                        row = ((c * kernel[0] + phases[0, pd, 2 + 2 * td]) * k_h
                                               + phases[1, ph, 2 + 2 * th]) * k_w
                                        src = col0 + ((i_d - d0) * size_h + i_h - h0) * size_w
                                        for tw in range(phases[2, pw, 1]):
                                            base = phases[2, pw, 3 + 2 * tw]
                                            lo, hi = max(m_lo, w0 - base), min(m_hi, w1 - base)
                                            tap = row + phases[2, pw, 2 + 2 * tw]
                                            run = tap * tap_step + (src + base) * pixel_step
                                            if pixel_step == 1:  # (a loop of its own: it vectorizes)
                                                for m in range(lo, hi):
                                                    acc[m] += cf[at(run + m)]
                                            else:
                                                for m in range(lo, hi):
                                                    acc[m] += cf[at(run + m * pixel_step)]
                                for m in range(m_lo, m_hi):
                                    yf[at(out + m * s_w)] = acc[m]


@njit(**NJIT_FLAGS)
def col2im_minor(cols, y, bias, block, in_shape, kernel, stride, taps, once, plane):
    """``col2im`` for a block of ``n`` whole samples packed sample-minor (``pack_minor``: column ``p * n + j``).

    Small planes (DCGAN's 4x4 to 16x16 inputs) make ``col2im``'s rows only a few elements long; here a tap's
    term for one input pixel is a contiguous vector over the samples. Per channel the output plane of every
    sample is summed in ``plane`` (output position x sample, in L1/L2: bias, then each tap in (kd, kh, kw)
    order, the same terms in the same order as ``col2im``: the same bits), then stored sample by sample.
    ``block = (n0, c0, n, cb)`` (int64) is the output block, as for ``col2im``.
    """
    n0, c0, n, cb = block
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    size_h, size_w = in_shape[1], in_shape[2]
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    vol = o_d * o_h * o_w
    c_out, n_cols = y.shape[1], cols.shape[1]
    yf, cf, pf = y.reshape(-1), cols.reshape(-1), plane.reshape(-1)
    for c in range(cb):
        co = c0 + c
        bv = bias[co]
        if not once:
            for q in range(vol * n):
                pf[q] = bv
        for kd in range(k_d):
            for kh in range(k_h):
                for kw in range(k_w):
                    row = (((c * k_d + kd) * k_h + kh) * k_w + kw) * n_cols
                    for i_d in range(taps[0, kd, 1], taps[0, kd, 2]):
                        od = i_d * s_d + taps[0, kd, 0]
                        for i_h in range(taps[1, kh, 1], taps[1, kh, 2]):
                            oh = i_h * s_h + taps[1, kh, 0]
                            for i_w in range(taps[2, kw, 1], taps[2, kw, 2]):
                                src = row + ((i_d * size_h + i_h) * size_w + i_w) * n
                                dst = ((od * o_h + oh) * o_w + i_w * s_w + taps[2, kw, 0]) * n
                                if once:
                                    for j in range(n):
                                        pf[at(dst + j)] = cf[at(src + j)] + bv
                                else:
                                    for j in range(n):
                                        pf[at(dst + j)] += cf[at(src + j)]
        for j in range(n):
            base = ((n0 + j) * c_out + co) * vol
            for q in range(vol):
                yf[at(base + q)] = pf[at(q * n + j)]


@njit(**NJIT_FLAGS)
def pack_minor(x, n0, n, ci0, cin_g, xp):
    """``xp[ci, p * n + j] = x[n0 + j, ci0 + ci, p]``: a sample block as one (C_in_g, P * n) matrix, sample-minor
    (for ``col2im_minor``)."""
    pix = x.shape[2] * x.shape[3] * x.shape[4]
    xf, pf = x.reshape(-1), xp.reshape(-1)
    for ci in range(cin_g):
        for j in range(n):
            src = ((n0 + j) * x.shape[1] + ci0 + ci) * pix
            dst = ci * pix * n + j
            for p in range(pix):
                pf[at(dst + p * n)] = xf[at(src + p)]


@njit(**NJIT_FLAGS)
def pack_channels(x, n0, n, ci0, cin_g, xp):
    """``xp[ci, j * P + p] = x[n0 + j, ci0 + ci, p]``: a sample block as one (C_in_g, n * P) matrix."""
    pix = x.shape[2] * x.shape[3] * x.shape[4]
    xf, pf = x.reshape(-1), xp.reshape(-1)
    for ci in range(cin_g):
        for j in range(n):
            src = ((n0 + j) * x.shape[1] + ci0 + ci) * pix
            dst = (ci * n + j) * pix
            for p in range(pix):
                pf[at(dst + p)] = xf[at(src + p)]
