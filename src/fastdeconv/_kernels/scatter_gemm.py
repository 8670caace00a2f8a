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

Work is chunked over (sample block, output-channel block) so the scratch (``cols`` plus the packed input) of
all workers together stays within one output's size; a sample whose columns alone would not fit (or whose
whole columns would leave only thin GEMMs) is cut into slabs along its outermost axis, which its worker adds
into the output one after another (the terms of an output element then arrive slab by slab, in an order
fixed by the shapes). The chunking depends only on the shapes and numba's pool size, never on the current
thread count. Workers claim chunks from a shared queue (``run_parallel``).

Layers with a wide stride along the last axis (``WIDE_STRIDE``: iSTFT-like overlap-add) run the GEMM
pixels-major instead, ``cols^T = X^T @ W`` (the same products), and col2im adds each pixel's column taps as one
contiguous run, pixels last to first so that every element still receives its terms in tap order.

``gather_cols`` (variant ``gather-gemm-cols``) is the gather twin: the same chunks and GEMMs, then every
output element sums its terms in a register, by output phase, and is stored once (``gather_phases``).
"""

from __future__ import annotations

from functools import lru_cache
from math import prod as _prod

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._compiled import njit
from .._runtime import run_parallel
from .._threads import max_threads
from ..config import NJIT_FLAGS
from ._index import at, source_between
from .plane import axis_table

# Scratch target per chunk (elements): big enough for an efficient GEMM, small enough to stay in L3
# between the GEMM that writes it and the col2im that reads it.
_CHUNK_ELEMENTS = 1 << 21
# Sample blocks from which ``col2im_minor`` runs (its vectors are as long as the block: shorter ones do not pay
# for its plane buffer, longer ones beat ``col2im`` on small planes), and the most elements of its plane buffer
MINOR_SAMPLES = 8
MINOR_PLANE = 1 << 16
# (the chunk choice's estimate reads ``_model``: CHUNK_GEMM_RATE, GEMM_HALF, SLAB_DISCOUNT, CHUNK_CALL)


# Strides along the last axis from which col2im adds a row's taps input pixel by input pixel (contiguous output,
# one run of the pixel's column taps) instead of tap by tap (input pixels ``stride`` apart in the output): at 256
# (an iSTFT-like layer) the strided stores 1 KiB apart alias in the store buffer (4K aliasing) every fourth
# element. There the GEMM is pixels-major, ``cols^T = X^T @ W`` (``_run``), so that a pixel's column taps are
# contiguous in ``cols`` too: the overlap-add is one vector loop per (pixel, channel, tap row).
WIDE_STRIDE = 32


@njit(**NJIT_FLAGS)
def _add_wide(cf, yf, n, n0, co, c_out, od, o_d, o_h, o_w, row0, tap_step, pixel_step, pix, offset, ih_lo, ih_hi,
              size_w, s_h, off_h, w0, w1, k_w, s_w, d_w, off_w):
    """``col2im``'s adds of one (channel, depth tap, row tap) for wide strides: per input pixel ``i_w`` of the
    box ``[w0, w1)``, its column taps that land inside the output as one run, at ``i_w * s_w + off_w + kw *
    d_w``. The term of (tap ``kw``, pixel ``q``) is ``cf[(row0 + kw) * tap_step + q * pixel_step]`` (``q``
    counts the box's pixels, sample-major). The pixels go last to first, so that every output element
    receives its terms in tap order, as from the tap-by-tap adds."""
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
def _add_grouped(cf, yf, n, n0, co, c_out, od, o_d, o_h, o_w, row0, n_cols, pix, offset, ih_lo, ih_hi, size_w, s_h,
                 off_h, w0, w1, k_w, s_w, taps):
    """``col2im``'s adds of one (channel, depth tap, row tap) in groups of ``s_w`` (2 or 4) consecutive column
    taps (undilated): for one input pixel a group's taps land on ``s_w`` neighbouring outputs, so over the
    pixels where all of them land inside, the group's ``cols`` rows are interleaved into one contiguous output
    run (a vector loop; tap by tap the stores are ``s_w`` apart). Only the full groups: ``col2im`` adds the
    taps left over (``k_w % s_w``) tap by tap afterwards. An element receives one term per group, and the
    groups go in tap order: the terms come in tap order, as tap by tap."""
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
def _write_pairs(cf, yf, n, n0, co, c_out, od, o_d, o_h, o_w, crow, n_cols, pix, offset, ih_lo, ih_hi, size_w, s_h,
                 off_h, off_w, iw_lo, iw_hi, bv):
    """``col2im``'s writes of one (channel, depth tap, row tap) when every output receives exactly one term and
    the two column taps are neighbours over the same inputs (kernel 2, stride 2 along the last axis):
    ``y[..., 2 * i_w + off_w + t] = cols[row of tap t, i_w] + bias`` for t = 0, 1, the two rows interleaved in
    one loop (stores to consecutive outputs, which LLVM vectorizes; the tap-by-tap loop stores every other one)."""
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
def col2im(cols, y, bias, n0, c0, n, cb, box, kernel, stride, taps, once, first, pixels_major):
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
    """
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
                    if s_w >= WIDE_STRIDE and not once:
                        _add_wide(cf, yf, n, n0, co, c_out, od, o_d, o_h, o_w, row0,
                                  1 if pixels_major else n_cols, cols.shape[1] if pixels_major else 1, pix,
                                  (i_d - d0) * size_h * size_w - h0 * size_w, ih_lo, ih_hi, size_w, s_h, off_h,
                                  w0, w1, k_w, s_w, d_w, taps[2, 0, 0])
                        continue
                    kw0 = 0  # the first column tap added tap by tap below
                    if grouped and not once:
                        _add_grouped(cf, yf, n, n0, co, c_out, od, o_d, o_h, o_w, row0, n_cols, pix,
                                     (i_d - d0) * size_h * size_w - h0 * size_w - w0, ih_lo, ih_hi, size_w, s_h,
                                     off_h, w0, w1, k_w, s_w, taps)
                        kw0 = k_w - k_w % s_w
                    elif once and pairs:
                        _write_pairs(cf, yf, n, n0, co, c_out, od, o_d, o_h, o_w, row0 * n_cols, n_cols, pix,
                                     (i_d - d0) * size_h * size_w - h0 * size_w - w0, ih_lo, ih_hi, size_w, s_h,
                                     off_h, taps[2, 0, 0], max(w0, taps[2, 0, 1]), min(w1, taps[2, 0, 2]), bv)
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
def gather_phases(cols, y, bias, n0, c0, n, cb, box, kernel, stride, phases, first, acc):
    """The gather twin of ``col2im``: each output element of ``y[n0:n0+n, c0:c0+cb]`` sums, in ``acc``, the
    ``cols`` entries of the (input pixel in ``box``, tap) pairs that reach it, and is stored once.

    By output phase (``phases[axis, r] = (outputs, taps, then (tap, base) pairs)``, ``_geometry.Axis.phases``):
    output ``r + stride * m`` of an axis is reached by tap ``k`` from input ``m + base``, so along the last axis
    a tap's terms for a row of a phase are one contiguous run of ``cols``. Per element the terms come in
    (kd, kh, kw) order; the ``first`` slab starts from the bias, a later one from the element's partial sum
    (the slabs of a sample cut by ``scatter_gemm``): the same terms in the same order as ``col2im``, so the
    same bits.
    """
    o_h, o_w = y.shape[3], y.shape[4]
    vol = y.shape[2] * o_h * o_w
    d0, d1, h0, h1, w0, w1 = box[0, 0], box[0, 1], box[1, 0], box[1, 1], box[2, 0], box[2, 1]
    size_h, size_w = h1 - h0, w1 - w0
    pix = (d1 - d0) * size_h * size_w
    k_h, k_w = kernel[1], kernel[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    n_cols = cols.shape[1]
    yf, cf = y.reshape(-1), cols.reshape(-1)
    for c in range(cb):
        co = c0 + c
        bv = bias[co]
        for j in range(n):
            sample = ((n0 + j) * y.shape[1] + co) * vol
            col0 = j * pix - w0
            for pd in range(min(s_d, y.shape[2])):  # the phases with outputs (``phase_table``)
                for ph in range(min(s_h, o_h)):
                    for pw in range(min(s_w, o_w)):
                        m_w = phases[2, pw, 0]
                        m_lo, m_hi = 0, m_w
                        if not first:  # only the outputs this slab's inputs reach
                            m_lo, m_hi = m_w, 0
                            for tw in range(phases[2, pw, 1]):
                                base = phases[2, pw, 3 + 2 * tw]
                                m_lo, m_hi = min(m_lo, max(0, w0 - base)), max(m_hi, min(m_w, w1 - base))
                        if m_lo >= m_hi:
                            continue
                        for md in range(phases[0, pd, 0]):
                            for mh in range(phases[1, ph, 0]):
                                reached = first
                                for td in range(phases[0, pd, 1]):
                                    if d0 <= md + phases[0, pd, 3 + 2 * td] < d1:
                                        for th in range(phases[1, ph, 1]):
                                            reached = reached or h0 <= mh + phases[1, ph, 3 + 2 * th] < h1
                                if not reached:
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
                                            run = (row + phases[2, pw, 2 + 2 * tw]) * n_cols + src + base
                                            for m in range(lo, hi):
                                                acc[m] += cf[at(run + m)]
                                for m in range(m_lo, m_hi):
                                    yf[at(out + m * s_w)] = acc[m]


@njit(**NJIT_FLAGS)
def col2im_minor(cols, y, bias, n0, c0, n, cb, in_shape, kernel, stride, taps, once, plane):
    """``col2im`` for a block of ``n`` whole samples packed sample-minor (``pack_minor``: column ``p * n + j``).

    Small planes (DCGAN's 4x4 to 16x16 inputs) make ``col2im``'s rows only a few elements long; here a tap's
    term for one input pixel is a contiguous vector over the samples. Per channel the output plane of every
    sample is summed in ``plane`` (output position x sample, in L1/L2: bias, then each tap in (kd, kh, kw)
    order, the same terms in the same order as ``col2im``: the same bits), then stored sample by sample.
    """
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


def slab_axis(plan: geo.Plan) -> int:
    """The axis along which a sample too large for the memory rule is cut into slabs: the outermost with more
    than one input position, so that a slab is one contiguous range of the sample's pixels."""
    return next((axis for axis, a in enumerate(plan.axes) if a.size_in > 1), 2)


def minor(plan: geo.Plan, n: int) -> bool:
    """Whether chunks of ``n`` samples are packed sample-minor and summed by ``col2im_minor``."""
    return n >= MINOR_SAMPLES and n * _prod(a.size_out for a in plan.axes) <= MINOR_PLANE


def pixels_major(plan: geo.Plan, n: int) -> bool:
    """Whether scatter-gemm's chunks of ``n`` samples run the GEMM pixels-major and ``col2im`` adds pixel by
    pixel (``_add_wide``): a wide stride along the last axis, elements reached more than once, not
    sample-minor."""
    return plan.axes[2].stride >= WIDE_STRIDE and not exactly_once(plan) and not minor(plan, n)


def _scratch(plan: geo.Plan, n: int, cb: int, slab: int) -> int:
    """Elements one worker holds for chunks of ``n`` samples x ``cb`` channels, cut in slabs of ``slab``
    positions along ``slab_axis``: ``cols``, plus the packed input of a sample block (and ``col2im_minor``'s
    plane buffer)."""
    k = _prod(a.kernel for a in plan.axes)
    pix = _prod(a.size_in for a in plan.axes)
    size = plan.axes[slab_axis(plan)].size_in
    per_slab = pix // size if size else 0
    plane = n * _prod(a.size_out for a in plan.axes) if minor(plan, n) else 0
    return cb * k * n * per_slab * slab + ((plan.c_in // plan.groups) * n * pix if n > 1 else 0) + plane


@lru_cache(maxsize=256)
def chunks(plan: geo.Plan) -> tuple[int, int, int] | None:
    """(samples, output channels, slab) per chunk: scratch <= one output, fixed by shape only.

    ``slab`` is the number of positions along ``slab_axis`` one GEMM covers: the whole axis, or (one sample
    per chunk) fewer, the chunk then running its slabs one after another. For each channel block (halving from
    all of them) the most whole samples within the budget and the cache target (in blocks of even size), or
    else one sample's largest slab; among those, the least estimated time. None when not even one slab of one
    channel fits.
    """
    g = plan.groups
    cout_g = plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    size = plan.axes[slab_axis(plan)].size_in
    per_slab = _prod(a.size_in for a in plan.axes) // size if size else 0
    out_size = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    budget = max(out_size // max_threads(), 1)  # every worker has its own scratch

    def fit(cb):
        """Most samples per chunk within the budget and the cache target (at least one), or one sample's
        largest slab within them; None when nothing fits."""
        whole = _scratch(plan, 1, cb, size)
        if whole <= budget:
            n = 1
            while n < plan.batch and _scratch(plan, n + 1, cb, size) <= min(budget, max(_CHUNK_ELEMENTS, whole)):
                n += 1
            return -(-plan.batch // -(-plan.batch // n)), size  # blocks of even size (64 = 4 x 16, not 3 x 21 + 1)
        one = _scratch(plan, 1, cb, 1)
        slab = min(budget, max(_CHUNK_ELEMENTS, one)) // one
        return (1, slab) if slab >= 1 else None

    macs = plan.batch * plan.c_in * cout_g * k * _prod(a.size_in for a in plan.axes)
    best, cb = None, max(cout_g, 1)
    while True:
        found = fit(cb)
        if found is not None:
            # the least estimated time: GEMMs at the BLAS efficiency of their (cb * K) x (n * P) sides (slabs
            # discounted: their adds into the output come slab after slab), one call per chunk and slab, the
            # chunks shared by the workers (a sample's slabs run in turn). A sample's slabs with many channels
            # can beat whole samples one channel at a time: a 3x3 stride-1 layer of 32 channels gets 144-row
            # GEMMs instead of 9-row ones.
            n, slab = found
            m_side, n_side = cb * k, n * per_slab * slab
            eff = (m_side / (m_side + M.GEMM_HALF[0]) * n_side / (n_side + M.GEMM_HALF[1])
                   * (1.0 if slab == size else M.SLAB_DISCOUNT))
            count = g * -(-plan.batch // n) * -(-cout_g // cb)
            calls = count * -(-size // slab) if size else count
            seconds = (2.0 * macs / (M.CHUNK_GEMM_RATE * eff) + calls * M.CHUNK_CALL) / min(count, max_threads())
            key = (-round(seconds, 6), -count)
            if best is None or key > best[0]:
                best = (key, n, cb, slab)
        if cb == 1:
            break
        cb = -(-cb // 2)
    return None if best is None else best[1:]


def scratch_elements(plan: geo.Plan) -> int:
    """Largest scratch (elements) one call allocates (all workers together); 0 when the variant does not fit."""
    found = chunks(plan)
    return 0 if found is None else max_threads() * _scratch(plan, *found)


def pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """The weight an operator keeps for ``scatter-gemm`` and ``gather-gemm-cols``: per group, transposed to
    (C_out_g x taps, C_in_g), C-contiguous, shape (groups, C_out_g x taps, C_in_g).

    Each chunk's GEMM then reads one contiguous block of it instead of a strided slice of the weight: 6-12%
    faster GEMMs on the chunk shapes of DCGAN's first block (OpenBLAS packs either into the same panels, so the
    bits are those of a one-off call, which reads the weight as it is).
    """
    return np.ascontiguousarray(_transposed(plan, w5))


def _transposed(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """The weight as (groups, C_out_g x taps, C_in_g): a view of the C-contiguous weight (strided rows)."""
    return w5.reshape(plan.groups, plan.c_in // plan.groups, -1).transpose(0, 2, 1)


def scatter_gemm(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Transposed convolution, scatter form with a BLAS channel contraction, into ``y5`` (overwritten).

    ``w5``: the weight (C_in, C_out_g, kd, kh, kw), or an operator's :func:`pack` of it.

    The chunks (group, sample block, channel block) are split among the workers; each runs pack, GEMM and
    col2im on its own chunks (slab by slab when a sample is cut) with single-threaded BLAS, so the threads
    meet only once, at the end. (Layers without channels never get here: the dispatcher writes their bias.)
    """
    _run("scatter", plan, x5, w5, bias, y5)


def gather_cols(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Transposed convolution, gather form on the same chunks and GEMMs as :func:`scatter_gemm`, into ``y5``.

    After each chunk's GEMM every output element of its samples and channels sums, in a register, the
    ``cols`` entries of the (pixel, tap) pairs that reach it, by output phase, and is stored once
    (``gather_phases``) instead of receiving them one tap at a time. Weight-heavy layers, whose phase weights
    leave ``gather-gemm`` only thin GEMMs under the memory rule, keep scatter-gemm's wide ones; a sample cut
    in slabs adds each slab's sums into the partial sums of the one before.
    """
    _run("gather", plan, x5, w5, bias, y5)


def _run(form: str, plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    pix = _prod(a.size_in for a in plan.axes)
    # (a plan breaking the memory rule is never chosen; called directly, it runs with the smallest scratch)
    n_chunk, c_chunk, slab = chunks(plan) or (1, 1, 1)
    in_shape, kern, stride, taps = geometry_arrays(plan)
    axis = slab_axis(plan)
    size = int(in_shape[axis])
    per_slab = pix // size if size else 0
    once = exactly_once(plan)
    gather = form == "gather"
    phases = phase_table(plan) if gather else None
    # an operator's pack (its row blocks contiguous), or the weight as it is (the same blocks, strided)
    wt = w5 if w5.ndim == 3 else _transposed(plan, w5)
    tasks = [(gi, n0, min(n_chunk, plan.batch - n0), c0, min(c_chunk, cout_g - c0))
             for gi in range(g) for n0 in range(0, plan.batch, n_chunk) for c0 in range(0, cout_g, c_chunk)]
    wide = {n: not gather and pixels_major(plan, n) for n in {task[2] for task in tasks}}
    boxes = []  # per slab: (first pixel, last pixel, box of input positions)
    for lo in range(0, max(size, 1), max(slab, 1)):
        box = np.stack([np.zeros(3, np.int64), in_shape], axis=1)
        box[axis] = (lo, min(size, lo + slab))
        boxes.append((lo * per_slab, int(box[axis, 1]) * per_slab, box))
    out_vol = _prod(a.size_out for a in plan.axes)

    def work(part):
        cols_buf = np.empty(c_chunk * k * n_chunk * per_slab * slab, plan.dtype)
        pack_buf = np.empty(cin_g * n_chunk * pix if n_chunk > 1 else 0, plan.dtype)
        plane = np.empty(n_chunk * out_vol if minor(plan, n_chunk) and not gather else 0, plan.dtype)
        acc = np.empty(int(phases[2, :, 0].max()) if gather else 0, plan.dtype)  # one phase row
        packed = None
        for gi, n0, n, c0, cb in part:
            sample_minor = minor(plan, n) and not gather
            by_pixel = wide[n]  # col2im adds pixel by pixel
            if n == 1:
                xm = x5[n0, gi * cin_g:(gi + 1) * cin_g].reshape(cin_g, pix)
            else:
                xm = pack_buf[:cin_g * n * pix].reshape(cin_g, n * pix)
                if packed != (gi, n0):
                    (pack_minor if sample_minor else pack_channels)(x5, n0, n, gi * cin_g, cin_g, xm)
                    packed = (gi, n0)
            wm_t = wt[gi][c0 * k:(c0 + cb) * k]  # (cb * k, cin_g)
            for p0, p1, box in boxes:  # one slab (the whole input unless a sample is cut)
                xs = xm if n > 1 else xm[:, p0:p1]
                if by_pixel:  # a pixel's taps contiguous in ``cols`` (``_add_wide``)
                    cols = cols_buf[:cb * k * n * (p1 - p0)].reshape(n * (p1 - p0), cb * k)
                    np.matmul(xs.T, wm_t.T, out=cols)
                else:
                    cols = cols_buf[:cb * k * n * (p1 - p0)].reshape(cb * k, n * (p1 - p0))
                    np.matmul(wm_t, xs, out=cols)
                if gather:  # output-driven
                    gather_phases(cols, y5, bias, n0, gi * cout_g + c0, n, cb, box, kern, stride, phases, p0 == 0,
                                  acc)
                elif sample_minor:  # (whole samples: no slabs)
                    col2im_minor(cols, y5, bias, n0, gi * cout_g + c0, n, cb, in_shape, kern, stride, taps, once,
                                 plane)
                else:
                    col2im(cols, y5, bias, n0, gi * cout_g + c0, n, cb, box, kern, stride, taps, once, p0 == 0,
                           by_pixel)

    run_parallel(work, tasks)


@lru_cache(maxsize=256)
def geometry_arrays(plan: geo.Plan) -> tuple[np.ndarray, ...]:
    """(input sizes, kernel, stride, taps) for ``col2im``, cached per plan.

    ``taps[axis, k] = (offset, lo, hi)``: tap ``k`` sends input ``i`` to output ``i * stride + offset``, inside
    the output exactly for ``lo <= i < hi``. The arrays stay writeable (numba compiles read-only arrays
    separately); the kernels only read them.
    """
    k_max = max(a.kernel for a in plan.axes)
    taps = np.zeros((3, k_max, 3), np.int64)
    for axis, a in enumerate(plan.axes):
        for k in range(a.kernel):
            off = k * a.dilation - a.start
            lo = max(0, -(off // a.stride))
            hi = min(a.size_in, -(-(a.size_out - off) // a.stride))
            taps[axis, k] = (off, lo, max(lo, hi))
    return (np.array([a.size_in for a in plan.axes], np.int64), np.array([a.kernel for a in plan.axes], np.int64),
            np.array([a.stride for a in plan.axes], np.int64), taps)


@lru_cache(maxsize=256)
def phase_table(plan: geo.Plan) -> np.ndarray:
    """``table[axis, r] = (outputs, taps, then (tap, base) per tap in tap order)`` of output phase ``r`` of each
    axis: ``plane.axis_table``'s rows (the ``min(stride, size_out)`` phases with outputs), the three axes in one
    array, for ``gather_phases``."""
    rows = [axis_table(a)[0] for a in plan.axes]
    table = np.zeros((3, max(t.shape[0] for t in rows), max(t.shape[1] for t in rows)), np.int64)
    for axis, t in enumerate(rows):
        table[axis, :t.shape[0], :t.shape[1]] = t
    return table


@lru_cache(maxsize=256)
def exactly_once(plan: geo.Plan) -> bool:
    """Whether every output element receives exactly one term (e.g. kernel == stride, no output padding: U-Net
    up-convolutions), so that ``col2im`` can write each element once.

    Per axis: every phase with outputs has taps, and in each phase the inputs of its taps, ``m + base`` in
    ``[0, size_in)``, tile its outputs ``m < count`` without gap or overlap (from the taps alone: no array of
    the output's length)."""
    for a in plan.axes:
        phases = a.tap_phases()
        if len(phases) != a.phase_count:  # some phase with outputs gets no term
            return False
        for _r, count, _taps, bases in phases:
            spans = sorted((max(0, -b), min(count, a.size_in - b)) for b in bases)
            spans = [(lo, hi) for lo, hi in spans if hi > lo]
            reached = 0
            for lo, hi in spans:
                if lo != reached:  # a gap (lo > reached) or an overlap (lo < reached)
                    return False
                reached = hi
            if reached != count:
                return False
    return True
