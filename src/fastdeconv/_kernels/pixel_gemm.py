"""Both forms on BLAS, one GEMM per (sample, block of output rows), for layers with few output channels.

Pixels-major orientation (``variants.gemm_rows.pixels_major``: when ``C_out_g * K >= PIXELS_MAJOR_COLUMNS``):
``cols (pixels, C_out_g * K) = X^T (pixels, C_in_g) @ W (C_in_g, C_out_g * K)``, one row per input pixel
holding its products with every (tap, output channel) pair, the input read as a transposed view (no copy)
and the weight re-laid out tap-major. With a short ``C_out_g * K`` side (RGB output layers: 3 x 16 = 48) this
keeps BLAS's long side on the pixels, where the channel-major orientation (``W^T @ X``) gives it a 48-row
output, too short a side for its blocking. Below the threshold (an RGB 3x3 layer: 3 x 9 = 27 columns) the
channel-major ``cols[c * K + t, pixels] = W^T @ X`` (weight read in place) is faster overall: the pixels-major
GEMM gains little there, and channel-major rows are contiguous for the second step. Every product is a term
of the definition: no zero of the stride-dilated input is multiplied.

The second step is where the forms differ:

``scatter_rows`` (scatter form, either layout)
    input-driven: each input pixel of a source row adds its terms into its output footprint.
``gather_rows`` / ``gather_rows_cm`` (gather form)
    output-driven: each output element sums, in a register, the entries of ``cols`` of the (pixel, tap)
    pairs that reach it, then is stored once.

Work is cut into tasks (group, sample, block of output rows); a task computes the GEMM for the input rows
its output rows need (a halo row is recomputed, never shared) and writes only its own output rows, in an
order fixed by the shapes and numba's pool size: the result is bitwise identical for any current thread count
(``set_num_threads``). The per-worker ``cols`` block stays within one output's size divided among the workers
(``NUMBA_NUM_THREADS`` of them), so the samples per GEMM, and with them OpenBLAS's kernels and the last bits,
may differ under another pool size.
"""

from __future__ import annotations

import numpy as np

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import at, source_between


@njit(inline="always", **NJIT_FLAGS)
def source_rows(od, oh, taps, stride, kernel, rows, ih0, size_w, tap_step, pair_base, pair_tap):
    """The (tap depth, tap row) pairs reaching output row ``(od, oh)``, in tap order: for each, the ``cols``
    pixel offset of its source row (``pair_base``) and its first tap index times ``tap_step`` (``pair_tap``).
    Returns how many pairs were written."""
    k_h = kernel[1]
    n_pairs = 0
    for kd in range(kernel[0]):
        i_d = source_between(od, stride[0], taps[0, kd, 0], taps[0, kd, 1], taps[0, kd, 2])
        if i_d < 0:
            continue
        for kh in range(k_h):
            i_h = source_between(oh, stride[1], taps[1, kh, 0], taps[1, kh, 1], taps[1, kh, 2])
            if i_h < 0:
                continue
            pair_base[n_pairs] = (i_d * rows + i_h - ih0) * size_w
            pair_tap[n_pairs] = (kd * k_h + kh) * tap_step
            n_pairs += 1
    return n_pairs


@njit(**NJIT_FLAGS)
def source_columns(o_w, taps, s_w, k_w, tap_scale):
    """Per output column: how many (tap column, input column) pairs reach it, and each pair's tap index
    (times ``tap_scale``) and input column, in tap order."""
    w_count = np.zeros(o_w, np.int64)
    for kw in range(k_w):  # (counted first: a column's pairs are about k_w / s_w, and o_w * k_w can be gigabytes)
        for i_w in range(taps[2, kw, 1], taps[2, kw, 2]):
            w_count[i_w * s_w + taps[2, kw, 0]] += 1
    most = max(1, w_count.max()) if o_w > 0 else 1
    w_count[:] = 0
    w_tap = np.empty((o_w, most), np.int64)
    w_src = np.empty((o_w, most), np.int64)
    for kw in range(k_w):
        for i_w in range(taps[2, kw, 1], taps[2, kw, 2]):
            ow = i_w * s_w + taps[2, kw, 0]
            w_tap[ow, w_count[ow]] = kw * tap_scale
            w_src[ow, w_count[ow]] = i_w
            w_count[ow] += 1
    return w_count, w_tap, w_src


@njit(**NJIT_FLAGS)
def scatter_rows(cols, y, bias, block, rows, in_shape, kernel, stride, taps, pixels_major):
    """Write output rows ``oh0:oh1`` of ``y[j, c0:c0 + cb]``: each input pixel adds its footprint into the row.

    ``block = (j, c0, cb)`` (int64) is the output block (sample, first channel, channels), ``rows = (oh0, oh1,
    ih0, ih1)`` (int64) its output rows and the input rows ``cols`` holds.

    ``cols`` is pixels-major, ``cols[p, t * cb + c]`` (tap-major, channel-minor), or channel-major,
    ``cols[c * K + t, p]``, with ``p = (i_d * (ih1 - ih0) + i_h - ih0) * W + i_w``: only the three strides
    of the flat index differ. Per output row (bias first), for each (tap depth, tap row) reaching it and each
    channel and tap column, every input pixel of the source row adds its term at ``i_w * stride + offset``.
    For every output element the terms arrive in (tap depth, tap row, tap column) order, whatever the row
    blocks or the layout. (Adding straight into the output row beats accumulating a channels-last row
    buffer and storing it channels-first: one pass over the row instead of two.)
    """
    j, c0, cb = block
    oh0, oh1, ih0, ih1 = rows
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    size_w = in_shape[2]
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_w = stride[2]
    n_rows = ih1 - ih0
    if pixels_major:
        p_step, t_step, c_step = cols.shape[1], cb, 1
    else:
        p_step, t_step, c_step = 1, cols.shape[1], k_d * k_h * k_w * cols.shape[1]
    yf, cf = y.reshape(-1), cols.reshape(-1)
    pair_base = np.empty(k_d * k_h, np.int64)
    pair_tap = np.empty(k_d * k_h, np.int64)
    for od in range(o_d):
        for oh in range(oh0, oh1):
            for c in range(cb):
                y[j, c0 + c, od, oh, :] = bias[c0 + c]
            n_pairs = source_rows(od, oh, taps, stride, kernel, n_rows, ih0, size_w, k_w, pair_base, pair_tap)
            for q in range(n_pairs):
                base, t0 = pair_base[q], pair_tap[q]
                for c in range(cb):
                    row = (((j * y.shape[1] + c0 + c) * o_d + od) * o_h + oh) * o_w
                    for kw in range(k_w):
                        off = row + taps[2, kw, 0]
                        col = base * p_step + (t0 + kw) * t_step + c * c_step
                        for i_w in range(taps[2, kw, 1], taps[2, kw, 2]):
                            yf[at(off + i_w * s_w)] += cf[at(col + i_w * p_step)]


@njit(**NJIT_FLAGS)
def gather_rows(cols, y, bias, block, rows, in_shape, kernel, stride, taps):
    """Write output rows ``oh0:oh1`` of ``y[j, c0:c0 + cb]``, each element the sum of its (pixel, tap) terms.

    Same ``cols`` layout and groups (``block = (j, c0, cb)``, ``rows = (oh0, oh1, ih0, ih1)``) as
    :func:`scatter_rows`. Terms are summed in (tap depth, tap row, tap column) order in registers, then each
    element is stored once.
    """
    j, c0, cb = block
    oh0, oh1, ih0, ih1 = rows
    o_d, o_w = y.shape[2], y.shape[4]
    size_w = in_shape[2]
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_w = stride[2]
    n_rows = ih1 - ih0
    kwc = k_w * cb
    w_count, w_tap, w_src = source_columns(o_w, taps, s_w, k_w, cb)
    pair_base = np.empty(k_d * k_h, np.int64)
    pair_tap = np.empty(k_d * k_h, np.int64)
    acc = np.empty(cb, y.dtype)
    out = np.empty(o_w * cb, y.dtype)
    n_cols = cols.shape[1]
    yf, cf = y.reshape(-1), cols.reshape(-1)
    for od in range(o_d):
        for oh in range(oh0, oh1):
            n_pairs = source_rows(od, oh, taps, stride, kernel, n_rows, ih0, size_w, kwc, pair_base, pair_tap)
            for ow in range(o_w):
                for c in range(cb):
                    acc[c] = bias[c0 + c]
                for q in range(n_pairs):
                    base, t0 = pair_base[q], pair_tap[q]
                    for r in range(w_count[ow]):
                        src = (base + w_src[ow, r]) * n_cols + t0 + w_tap[ow, r]
                        for c in range(cb):
                            acc[c] += cf[at(src + c)]
                for c in range(cb):
                    out[ow * cb + c] = acc[c]
            for c in range(cb):
                row = (((j * y.shape[1] + c0 + c) * o_d + od) * y.shape[3] + oh) * o_w
                for ow in range(o_w):
                    yf[at(row + ow)] = out[at(ow * cb + c)]


@njit(**NJIT_FLAGS)
def gather_rows_cm(cols, y, bias, block, rows, in_shape, kernel, stride, taps):
    """:func:`gather_rows` for channel-major ``cols`` (see :func:`scatter_rows`): register sums, one store."""
    j, c0, cb = block
    oh0, oh1, ih0, ih1 = rows
    o_d, o_w = y.shape[2], y.shape[4]
    size_w = in_shape[2]
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_w = stride[2]
    n_k = k_d * k_h * k_w
    n_rows = ih1 - ih0
    w_count, w_tap, w_src = source_columns(o_w, taps, s_w, k_w, 1)
    pair_base = np.empty(k_d * k_h, np.int64)
    pair_tap = np.empty(k_d * k_h, np.int64)
    for od in range(o_d):
        for oh in range(oh0, oh1):
            n_pairs = source_rows(od, oh, taps, stride, kernel, n_rows, ih0, size_w, k_w, pair_base, pair_tap)
            for c in range(cb):
                yrow = y[j, c0 + c, od, oh]
                bv = bias[c0 + c]
                for ow in range(o_w):
                    acc = bv
                    for q in range(n_pairs):
                        base, t0 = pair_base[q], pair_tap[q]
                        for r in range(w_count[ow]):
                            acc += cols[c * n_k + t0 + w_tap[ow, r], base + w_src[ow, r]]
                    yrow[ow] = acc
