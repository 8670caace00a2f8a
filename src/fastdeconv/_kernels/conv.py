"""Dense cross-correlation (PyTorch ``conv`` semantics) on an already padded input.

``y[n, co, o] = bias[co] + sum_{ci, k} xp[n, g * C_in_g + ci, o * stride + k * dilation] * w[co, ci, k]``
with weight (C_out, C_in // groups, kD, kH, kW). Used by the zero-fill form (stride 1, flipped kernel) and by
the forward convolution (``fastdeconv.conv``, on an input padded by ``_tasks.fill``). ``matrix_entries``
writes the same operator as a sparse CSR matrix (``fastdeconv.conv_matrix``).
"""

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import input_range, split_task, tap_offset, tile_bounds, tile_counts, unravel


@njit(**NJIT_FLAGS)
def correlate_tasks(xp, w, bias, y, groups, stride, dilation, tile, task_lo, task_hi):
    """``_tasks.correlate``'s tasks ``[task_lo, task_hi)``, in the calling thread."""
    n_batch, c_all, size_d, size_h, size_w = xp.shape
    c_out, c_in_g, k_d, k_h, k_w = w.shape
    out_d, out_h, out_w = y.shape[2], y.shape[3], y.shape[4]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    c_out_g = c_out // groups
    xf = xp.reshape(-1)
    yf = y.reshape(-1)
    tiles = tile_counts(y.shape[2:], tile)
    for task in range(task_lo, task_hi):
        n, co, td, th, tw = split_task(task, c_out, tiles)
        ci0 = (co // c_out_g) * c_in_g
        od_lo, od_hi = tile_bounds(td, tile[0], out_d)
        oh_lo, oh_hi = tile_bounds(th, tile[1], out_h)
        ow_lo, ow_hi = tile_bounds(tw, tile[2], out_w)
        width = uintp(ow_hi - ow_lo)
        b = bias[co]
        for od in range(od_lo, od_hi):
            for oh in range(oh_lo, oh_hi):
                yrow = uintp((((n * c_out + co) * out_d + od) * out_h + oh) * out_w + ow_lo)
                for m in range(width):
                    yf[yrow + m] = b
                for ci in range(c_in_g):
                    for kd in range(k_d):
                        for kh in range(k_h):
                            xrow = ((((n * c_all + ci0 + ci) * size_d + od * s_d + kd * d_d) * size_h
                                     + oh * s_h + kh * d_h) * size_w + ow_lo * s_w)
                            for kw in range(k_w):
                                wv = w[co, ci, kd, kh, kw]
                                src = uintp(xrow + kw * d_w)
                                if s_w == 1:  # unit stride: contiguous loads, the loop vectorises
                                    for m in range(width):
                                        yf[yrow + m] += xf[src + m] * wv
                                else:
                                    step = uintp(s_w)
                                    for m in range(width):
                                        yf[yrow + m] += xf[src + m * step] * wv


@njit(**NJIT_FLAGS)
def correlate_small(x, w, bias, y, groups, stride, dilation, start):
    """``correlate_tasks`` on the unpadded ``x`` for a small call, in the calling thread: the same terms in the
    same order (a tap outside x multiplies a zero, as on the padded copy), so the same bits, without the copy."""
    n_batch, c_all, size_d, size_h, size_w = x.shape
    c_out, c_in_g, k_d, k_h, k_w = w.shape
    out_d, out_h, out_w = y.shape[2], y.shape[3], y.shape[4]
    c_out_g = c_out // groups
    zero = np.zeros(1, y.dtype)[0]  # (a zero of the arrays' type: the products stay in their precision)
    for n in range(n_batch):
        for co in range(c_out):
            ci0 = (co // c_out_g) * c_in_g
            for od in range(out_d):
                for oh in range(out_h):
                    for ow in range(out_w):
                        acc = bias[co]
                        for ci in range(c_in_g):
                            for kd in range(k_d):
                                i_d = od * stride[0] + tap_offset(kd, dilation[0], start[0])
                                for kh in range(k_h):
                                    i_h = oh * stride[1] + tap_offset(kh, dilation[1], start[1])
                                    for kw in range(k_w):
                                        i_w = ow * stride[2] + tap_offset(kw, dilation[2], start[2])
                                        inside = (0 <= i_d < size_d and 0 <= i_h < size_h and 0 <= i_w < size_w)
                                        v = x[n, ci0 + ci, i_d, i_h, i_w] if inside else zero
                                        acc += v * w[co, ci, kd, kh, kw]
                        y[n, co, od, oh, ow] = acc


@njit(**NJIT_FLAGS)
def matrix_entries(w, in_shape, out_shape, groups, stride, dilation, start, indptr, indices, data):
    """Fill the CSR arrays of the forward convolution's matrix (``indptr`` already holds the row offsets).

    Row ``((co * oD + od) * oH + oh) * oW + ow`` holds, for every in-bounds tap, the column
    ``((ci * D + i_d) * H + i_h) * W + i_w`` with ``i = o * stride + tap * dilation - start`` and the value
    ``w[co, ci - g * C_in_g, tap]``. Columns come out strictly increasing along each row (sorted CSR).
    """
    c_out, c_in_g, k_d, k_h, k_w = w.shape
    size_d, size_h, size_w = in_shape[0], in_shape[1], in_shape[2]
    out_d, out_h, out_w = out_shape[0], out_shape[1], out_shape[2]
    c_out_g = c_out // groups
    for co in range(c_out):
        ci0 = (co // c_out_g) * c_in_g
        for od in range(out_d):
            for oh in range(out_h):
                for ow in range(out_w):
                    pos = indptr[((co * out_d + od) * out_h + oh) * out_w + ow]
                    for ci in range(c_in_g):
                        for kd in range(k_d):
                            i_d = od * stride[0] + tap_offset(kd, dilation[0], start[0])
                            if i_d < 0 or i_d >= size_d:
                                continue
                            for kh in range(k_h):
                                i_h = oh * stride[1] + tap_offset(kh, dilation[1], start[1])
                                if i_h < 0 or i_h >= size_h:
                                    continue
                                base = (((ci0 + ci) * size_d + i_d) * size_h + i_h) * size_w
                                for kw in range(k_w):
                                    i_w = ow * stride[2] + tap_offset(kw, dilation[2], start[2])
                                    if i_w < 0 or i_w >= size_w:
                                        continue
                                    indices[pos] = base + i_w
                                    data[pos] = w[co, ci, kd, kh, kw]
                                    pos += 1


@njit(**NJIT_FLAGS)
def im2col(x, col, samples, kernel, stride, dilation, start, rows):
    """Columns of one group of samples ``[n_lo, n_hi)`` for the output rows ``[row_lo, row_hi)`` (flattened (od, oh)).

    ``col[((ci * kD + kd) * kH + kh) * kW + kw, (n - n_lo) * P + (r - row_lo) * oW + ow] = x[n, ci0 + ci,
    od * s_d + kd * d_d - start_d, oh * s_h + kh * d_h - start_h, ow * s_w + kw * d_w - start_w]`` (zero where
    that falls outside x: the padding is never materialised) with ``r = od * oH + oh`` and
    ``P = (row_hi - row_lo) * oW``: the forward convolution of these rows is then one matrix product
    ``w.reshape(C_out_g, -1) @ col`` (BLAS), whose columns are those samples' outputs one after the other.
    ``x`` is C-contiguous: the reads use flat offsets (no per-row views, the rows are often a few elements).
    Serial: a copy, bound by memory; the caller runs blocks of it in parallel. The groups (int64): ``samples =
    (n_lo, n_hi, ci0)``, the samples and the group's first input channel; ``rows = (row_lo, row_hi, out_h,
    out_w)``, the output rows and the output's row count and row length.
    """
    n_lo, n_hi, ci0 = samples
    row_lo, row_hi, out_h, out_w = rows
    c_all, size_d, size_h, size_w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    xf = x.reshape(-1)
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    plane_d = size_h * size_w
    per_sample = (row_hi - row_lo) * out_w
    zero = col.dtype.type(0)
    n_taps = col.shape[0]
    for t in range(n_taps):
        ci, kd, kh, kw = unravel(t, k_d, k_h, k_w)
        crow = col[t]
        off_d = tap_offset(kd, d_d, start[0])
        off_h = tap_offset(kh, d_h, start[1])
        off_w = tap_offset(kw, d_w, start[2])
        ow_lo, ow_hi = input_range(out_w, 0, size_w, s_w, off_w)  # ow with 0 <= ow * s_w + off_w < size_w
        ow_hi = max(ow_lo, ow_hi)
        for n in range(n_lo, n_hi):
            chan = (n * c_all + ci0 + ci) * size_d * plane_d + ow_lo * s_w + off_w
            dst = (n - n_lo) * per_sample - row_lo * out_w
            for r in range(row_lo, row_hi):
                od = r // out_h
                oh = r - od * out_h
                i_d = od * s_d + off_d
                i_h = oh * s_h + off_h
                base = dst + r * out_w
                if i_d < 0 or i_d >= size_d or i_h < 0 or i_h >= size_h:
                    for ow in range(out_w):
                        crow[base + ow] = zero
                    continue
                for ow in range(ow_lo):
                    crow[base + ow] = zero
                for ow in range(ow_hi, out_w):
                    crow[base + ow] = zero
                # unsigned offsets (all are >= 0 here): no negative-index wrap-around test in the inner loops
                src = uintp(chan + i_d * plane_d + i_h * size_w)
                b0 = uintp(base + ow_lo)
                if s_w == 1:
                    for m in range(uintp(ow_hi - ow_lo)):
                        crow[b0 + m] = xf[src + m]
                else:
                    for m in range(uintp(ow_hi - ow_lo)):
                        crow[b0 + m] = xf[src + m * uintp(s_w)]
