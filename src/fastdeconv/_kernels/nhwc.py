"""Channels-last gather after a pixels-major GEMM: ``gather-gemm-nhwc``'s second step.

The GEMM ``cols = X @ W`` (X the input pixels x C_in_g of a block of input positions, channels-last so each
pixel's channels are one contiguous row; W re-laid out (C_in_g, K x C_out_g), tap-major) gives, per input pixel
and tap, the C_out_g contributions as one contiguous row. Each output pixel of the task's block then sums the rows
of the (pixel, tap) pairs that reach it, tap by tap in tap order, straight into its own contiguous C_out_g run of
the channels-last output (the inner loop runs along the channels, unit stride on both sides), adds the bias and
applies the epilogue while that run is in L1: every output element is written by one task, in a fixed order.
"""

from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from .epilogue import activate_run


@njit(**NJIT_FLAGS)
def nhwc_gather(cols, y, bias, block, slab, kern, tabs, counts, wtab, tap_major, code, params):
    """Outputs of samples ``n0 : n0 + nn``, channels ``co0 : co0 + cout_g``, positions ``o_lo : o_hi`` along axis
    ``cut`` (all positions along the others) of the channels-last ``y`` (N, oD, oH, oW, C_out), ``block = (n0, nn,
    co0, cout_g, cut, o_lo, o_hi, i_lo)`` (int64: the task's block, one tuple so that a call is one signature).

    ``cols`` (flat) holds, per sample of the block, per pixel of the input block ``slab`` (3,) (starting at input
    position ``i_lo`` along ``cut``, 0 along the others), per tap, C_out_g values (``tap_major``; else per output
    channel the K taps: the GEMM read the weight as it is, where its tap-major copy would break the memory rule).
    ``tabs[axis, o]`` lists ``counts[axis, o]`` (tap, input position) pairs reaching output position ``o`` along
    the D and H axes, in tap order; along W, ``wtab`` has one row per output phase ``r``: (outputs, taps, then
    (tap, base) per tap), output ``r + stride * m`` reading input ``base + m``. Per output row: the row's
    outputs are zeroed, every (kd, kh) pair's W taps add their runs (phase by phase, tap by tap: a fixed order
    per element), then each output gets the bias and the epilogue ``code, params`` (``_kernels.epilogue``; 0:
    none) while the row is in cache.
    """
    n0, nn, co0, cout_g, cut, o_lo, o_hi, i_lo = block
    o_d, o_h, o_w, c_out = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    yf = y.reshape(-1)
    k_h, k_w = kern[1], kern[2]
    k_all = kern[0] * k_h * k_w
    s_d, s_h, s_w = slab[0], slab[1], slab[2]
    pix = s_d * s_h * s_w
    off_d = i_lo if cut == 0 else 0
    off_h = i_lo if cut == 1 else 0
    off_w = i_lo if cut == 2 else 0
    lo_d, hi_d = (o_lo, o_hi) if cut == 0 else (0, o_d)
    lo_h, hi_h = (o_lo, o_hi) if cut == 1 else (0, o_h)
    lo_w, hi_w = (o_lo, o_hi) if cut == 2 else (0, o_w)
    stride_w = wtab.shape[0]  # output phases along W (the stride, or o_w when it is smaller)
    a, b, one = params[0], params[1], params[2]
    zero = one - one
    cw = uintp(cout_g)
    kk = uintp(k_all)
    pitch = uintp(c_out)
    for q in range(nn):
        n = n0 + q
        for od in range(lo_d, hi_d):
            for oh in range(lo_h, hi_h):
                row = uintp((((n * o_d + od) * o_h + oh) * o_w) * c_out + co0)
                for ow in range(lo_w, hi_w):
                    dst = row + uintp(ow) * pitch
                    for c in range(cw):
                        yf[dst + c] = zero
                for ud in range(counts[0, od]):
                    kd, i_d = tabs[0, od, 2 * ud], tabs[0, od, 2 * ud + 1] - off_d
                    for uh in range(counts[1, oh]):
                        kh, i_h = tabs[1, oh, 2 * uh], tabs[1, oh, 2 * uh + 1] - off_h
                        t_dh = (kd * k_h + kh) * k_w
                        p_dh = ((q * s_d + i_d) * s_h + i_h) * s_w
                        for r in range(stride_w):
                            count = wtab[r, 0]
                            for u in range(wtab[r, 1]):
                                kw, base = wtab[r, 2 + 2 * u], wtab[r, 3 + 2 * u] - off_w
                                # m: inside the slab (0 <= base + m < s_w) and the block (lo_w <= r + stride * m)
                                m_lo = max(max(0, -base), -((r - lo_w) // stride_w))
                                m_hi = min(min(count, s_w - base), -((r - hi_w) // stride_w))
                                if m_lo >= m_hi:
                                    continue
                                t = t_dh + kw
                                dst = row + uintp(r + stride_w * m_lo) * pitch
                                step = uintp(stride_w) * pitch
                                if tap_major:
                                    src = uintp(((p_dh + base + m_lo) * k_all + t) * cout_g)
                                    jump = kk * cw
                                    for _ in range(uintp(m_hi - m_lo)):
                                        for c in range(cw):
                                            yf[dst + c] += cols[src + c]
                                        dst += step
                                        src += jump
                                else:
                                    src = uintp((p_dh + base + m_lo) * k_all * cout_g + t)
                                    jump = kk * cw
                                    for _ in range(uintp(m_hi - m_lo)):
                                        for c in range(cw):
                                            yf[dst + c] += cols[src + c * kk]
                                        dst += step
                                        src += jump
                for ow in range(lo_w, hi_w):
                    dst = row + uintp(ow) * pitch
                    for c in range(cw):
                        yf[dst + c] += bias[co0 + c]
                    if code != 0:
                        activate_run(yf, dst, cout_g, code, a, b, one)
    return pix


@njit(**NJIT_FLAGS)
def nhwc_direct(x, wt, bias, y, layer, kern, tabs, counts, wtab, code, params, task_lo, task_hi):
    """``gather-direct-nhwc``'s tasks ``[task_lo, task_hi)``: (sample, output position along axis ``cut``), each
    every output pixel of that slice, every channel; ``layer = (groups, cut, tap_major)`` (int64, ``tap_major``
    0 or 1: the layer's fixed integers, one tuple).

    x (N, D, H, W, C_in) and y (N, oD, oH, oW, C_out) channels-last; with ``tap_major`` ``wt`` is (K, C_in,
    C_out_g): the weight tap-major, each (tap, input channel)'s C_out_g weights contiguous; else the weight itself
    (C_in, C_out_g, K), read in place with stride K along the output channels (where a re-laid-out copy would break
    the memory rule). An output pixel's run of C_out_g channels of a
    group sums ``x[pixel, ci] * wt[tap, g * C_in_g + ci, :]`` over its (tap, input pixel) pairs in tap order and
    the group's input channels in order (one vectorized loop along the output channels each), then gets the bias
    and the epilogue while in L1. No scratch. Depthwise layers (one channel per group) run by output rows instead:
    each W tap (``wtab``: per output phase, as in ``nhwc_gather``) adds a run of pixels, vectorized along the
    groups.
    """
    groups, cut, tap_major = layer
    size_d, size_h, size_w, c_in = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    o_d, o_h, o_w, c_out = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    cin_g, cout_g = c_in // groups, c_out // groups
    k_h, k_w = kern[1], kern[2]
    xf, yf, wf = x.reshape(-1), y.reshape(-1), wt.reshape(-1)
    a, b, one = params[0], params[1], params[2]
    zero = one - one
    cw = uintp(cout_g)
    k_all = kern[0] * k_h * k_w
    depthwise = tap_major != 0 and cin_g == 1 and cout_g == 1 and groups > 1
    sizes = (o_d, o_h, o_w)
    along = sizes[cut]
    for task in range(task_lo, task_hi):
        n = task // along
        pos = task - n * along
        lo_d, hi_d = (pos, pos + 1) if cut == 0 else (0, o_d)
        lo_h, hi_h = (pos, pos + 1) if cut == 1 else (0, o_h)
        lo_w, hi_w = (pos, pos + 1) if cut == 2 else (0, o_w)
        if depthwise:
            _depthwise_rows(xf, wf, bias, yf, (n, lo_d, hi_d, lo_h, hi_h, lo_w, hi_w), x.shape, y.shape, kern, tabs,
                            counts, wtab, code, params)
            continue
        for od in range(lo_d, hi_d):
            for oh in range(lo_h, hi_h):
                for ow in range(lo_w, hi_w):
                    pix_out = uintp((((n * o_d + od) * o_h + oh) * o_w + ow) * c_out)
                    for c in range(uintp(c_out)):
                        yf[pix_out + c] = zero
                    for ud in range(counts[0, od]):
                        kd, i_d = tabs[0, od, 2 * ud], tabs[0, od, 2 * ud + 1]
                        for uh in range(counts[1, oh]):
                            kh, i_h = tabs[1, oh, 2 * uh], tabs[1, oh, 2 * uh + 1]
                            for uw in range(counts[2, ow]):
                                kw, i_w = tabs[2, ow, 2 * uw], tabs[2, ow, 2 * uw + 1]
                                tap = (kd * k_h + kh) * k_w + kw
                                pix_in = uintp((((n * size_d + i_d) * size_h + i_h) * size_w + i_w) * c_in)
                                if depthwise:  # one channel per group: vectorized along the groups
                                    src = uintp(tap * c_in)
                                    for c in range(uintp(c_in)):
                                        yf[pix_out + c] += xf[pix_in + c] * wf[src + c]
                                    continue
                                for g in range(groups):
                                    dst = pix_out + uintp(g * cout_g)
                                    for ci in range(g * cin_g, (g + 1) * cin_g):
                                        v = xf[pix_in + ci]
                                        if tap_major:
                                            src = uintp((tap * c_in + ci) * cout_g)
                                            for c in range(cw):
                                                yf[dst + c] += v * wf[src + c]
                                        else:
                                            src = uintp(ci * cout_g * k_all + tap)
                                            for c in range(cw):
                                                yf[dst + c] += v * wf[src + c * uintp(k_all)]
                    for c in range(uintp(c_out)):
                        yf[pix_out + c] += bias[c]
                    if code != 0:
                        activate_run(yf, pix_out, c_out, code, a, b, one)


@njit(inline="always", **NJIT_FLAGS)
def _depthwise_rows(xf, wf, bias, yf, box, x_shape, y_shape, kern, tabs, counts, wtab, code, params):
    """``nhwc_direct``'s depthwise task ``box = (n, lo_d, hi_d, lo_h, hi_h, lo_w, hi_w)`` (sample n, the output
    block): per output row, zeroed, then per (kd, kh) pair and W tap (phase by phase, tap by tap) a run of output
    pixels adds ``x[pixel] * w[tap]`` along the channels, then the bias and the epilogue per pixel."""
    n, lo_d, hi_d, lo_h, hi_h, lo_w, hi_w = box
    k_h, k_w = kern[1], kern[2]
    size_d, size_h, size_w, c = x_shape[1], x_shape[2], x_shape[3], x_shape[4]
    o_d, o_h, o_w = y_shape[1], y_shape[2], y_shape[3]
    stride_w = wtab.shape[0]
    a, b, one = params[0], params[1], params[2]
    zero = one - one
    cc = uintp(c)
    for od in range(lo_d, hi_d):
        for oh in range(lo_h, hi_h):
            row = uintp(((n * o_d + od) * o_h + oh) * o_w) * cc
            for i in range(uintp(lo_w) * cc, uintp(hi_w) * cc):
                yf[row + i] = zero
            for ud in range(counts[0, od]):
                kd, i_d = tabs[0, od, 2 * ud], tabs[0, od, 2 * ud + 1]
                for uh in range(counts[1, oh]):
                    kh, i_h = tabs[1, oh, 2 * uh], tabs[1, oh, 2 * uh + 1]
                    x_row = ((n * size_d + i_d) * size_h + i_h) * size_w
                    for r in range(stride_w):
                        count = wtab[r, 0]
                        for u in range(wtab[r, 1]):
                            kw, base = wtab[r, 2 + 2 * u], wtab[r, 3 + 2 * u]
                            m_lo = max(max(0, -base), -((r - lo_w) // stride_w))
                            m_hi = min(min(count, size_w - base), -((r - hi_w) // stride_w))
                            if m_lo >= m_hi:
                                continue
                            w0 = uintp(((kd * k_h + kh) * k_w + kw) * c)
                            dst = row + uintp(r + stride_w * m_lo) * cc
                            src = uintp(x_row + base + m_lo) * cc
                            step = uintp(stride_w) * cc
                            for _ in range(uintp(m_hi - m_lo)):
                                for ch in range(cc):
                                    yf[dst + ch] += xf[src + ch] * wf[w0 + ch]
                                dst += step
                                src += cc
            for ow in range(lo_w, hi_w):
                dst = row + uintp(ow) * cc
                for ch in range(cc):
                    yf[dst + ch] += bias[ch]
                if code != 0:
                    activate_run(yf, dst, c, code, a, b, one)
