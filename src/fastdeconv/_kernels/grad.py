"""Weight gradient of the transposed convolution: a correlation of x with grad_output, summed over the batch.

With ``y[.., in_index * stride + tap * dilation - start] += x[.., in_index] * w[tap]`` the gradient is
``gw[ci, col, tap] = sum_{n, in_index} x[n, ci, in_index] * gy[n, g * C_out_g + col, in_index * stride +
tap * dilation - start]`` (terms whose output index falls outside gy vanish). The same kernel gives the
weight gradient of the forward convolution with the roles of x and gy swapped (its adjoint). Channel-rich
layers take the GEMM route instead (``_conv_gemm.conv_gemm``: one more matrix product on grad_x's columns).
"""

import numpy as np
from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import input_range, tap_offset, unravel


@njit(**NJIT_FLAGS)
def weight_grad_tasks(x, gy, gw, groups, stride, dilation, start, task_lo, task_hi):
    """``_tasks.weight_grad``'s tasks ``[task_lo, task_hi)``, in the calling thread."""
    n_batch, c_in, size_d, size_h, size_w = x.shape
    c_out_g, k_d, k_h, k_w = gw.shape[1], gw.shape[2], gw.shape[3], gw.shape[4]
    c_out, out_d, out_h, out_w = gy.shape[1], gy.shape[2], gy.shape[3], gy.shape[4]
    xf = x.reshape(-1)  # both C-contiguous: rows by flat offsets, no view per row
    gf = gy.reshape(-1)
    c_in_g = c_in // groups
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    d_d, d_h, d_w = dilation[0], dilation[1], dilation[2]
    for task in range(task_lo, task_hi):
        ci, col, kd, kh = unravel(task, c_out_g, k_d, k_h)
        co = (ci // c_in_g) * c_out_g + col
        off_d = tap_offset(kd, d_d, start[0])
        off_h = tap_offset(kh, d_h, start[1])
        id_lo, id_hi = input_range(size_d, 0, out_d, s_d, off_d)
        ih_lo, ih_hi = input_range(size_h, 0, out_h, s_h, off_h)
        part = np.zeros((k_w, size_w), dtype=gw.dtype)
        pf = part.reshape(-1)
        lo = np.empty(k_w, dtype=np.int64)
        hi = np.empty(k_w, dtype=np.int64)
        for kw in range(k_w):
            lo[kw], hi[kw] = input_range(size_w, 0, out_w, s_w, tap_offset(kw, d_w, start[2]))
        for n in range(n_batch):
            for i_d in range(id_lo, id_hi):
                for i_h in range(ih_lo, ih_hi):
                    xrow = (((n * c_in + ci) * size_d + i_d) * size_h + i_h) * size_w
                    gyrow = (((n * c_out + co) * out_d + i_d * s_d + off_d) * out_h + i_h * s_h + off_h) * out_w
                    for kw in range(k_w):
                        if lo[kw] >= hi[kw]:
                            continue
                        # unsigned offsets from the first term (all >= 0): no wrap-around test in the loops
                        width = uintp(hi[kw] - lo[kw])
                        pb = uintp(kw * size_w + lo[kw])
                        xb = uintp(xrow + lo[kw])
                        gb = uintp(gyrow + lo[kw] * s_w + tap_offset(kw, d_w, start[2]))
                        if s_w == 1:  # unit stride: contiguous loads, the loop vectorises
                            for m in range(width):
                                pf[pb + m] += xf[xb + m] * gf[gb + m]
                        else:
                            step = uintp(s_w)
                            for m in range(width):
                                pf[pb + m] += xf[xb + m] * gf[gb + m * step]
        for kw in range(k_w):
            total = 0.0  # float64 accumulator for the final row sum
            for i_w in range(size_w):
                total += part[kw, i_w]
            gw[ci, col, kd, kh, kw] = total
