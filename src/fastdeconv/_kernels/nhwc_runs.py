"""Channels-last rows from a pixels-major GEMM by whole runs: ``gather-gemm-nhwc-runs``' second step.

The GEMM is ``gather-gemm-nhwc``'s (``cols = X @ W``, W re-laid out tap-major: per input pixel, the taps in
(kd, kh, kw) order, each tap's C_out values contiguous). Without dilation along W, the K_w taps of one (kd, kh)
pair of an input pixel land on K_w neighbouring output pixels, so their K_w x C_out values are one contiguous run
of ``cols`` that adds onto one contiguous run of the output row (a layer has one group). Few output channels make
``nhwc_gather``'s per-(pixel, tap) loops C_out long (3 for an RGB output); here every loop is K_w x C_out long.
"""

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import at
from .epilogue import activate_run


@njit(**NJIT_FLAGS)
def nhwc_runs(cols, y, brow, block, slab, kern, tabs, counts, axis_w, code, params):
    """Outputs of samples ``n0 : n0 + nn``, positions ``o_lo : o_hi`` along axis ``cut`` (all along the others)
    of the channels-last ``y`` (N, oD, oH, oW, C_out), one group, no dilation along W; ``block = (n0, nn, cut,
    o_lo, o_hi, i_lo)`` (the task's block) and ``axis_w = (stride_w, start_w)`` (the W axis's stride and crop
    start), int64 tuples.

    ``cols`` (flat): per sample of the block, per pixel of the input block ``slab`` (3,) (from input position
    ``i_lo`` along ``cut``), per tap, C_out values. ``tabs``/``counts``: the (tap, input position) pairs reaching
    each output position along D and H, in tap order (``nhwc_gather``'s). Per output row: zeroed; per (kd, kh)
    pair in tap order, the row's input pixels add their K_w x C_out runs (input ``i`` reaches outputs
    ``i * stride_w - start_w + kw``; clipped to the block) in ``ceil(K_w / stride_w)`` passes, pass ``r`` the pixels
    ``r, r + passes, ...`` in order; then ``brow`` (the bias repeated for every output
    pixel of a row) and the epilogue ``code, params`` over the row (``_kernels.epilogue``; 0: none). Each output
    element sums its terms in that fixed order.
    """
    n0, nn, cut, o_lo, o_hi, i_lo = block
    stride_w, start_w = axis_w
    o_d, o_h, o_w, c = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    yf = y.reshape(-1)
    k_h, k_w = kern[1], kern[2]
    k_all = kern[0] * k_h * k_w
    s_d, s_h, s_w = slab[0], slab[1], slab[2]
    off_d = i_lo if cut == 0 else 0
    off_h = i_lo if cut == 1 else 0
    off_w = i_lo if cut == 2 else 0
    lo_d, hi_d = (o_lo, o_hi) if cut == 0 else (0, o_d)
    lo_h, hi_h = (o_lo, o_hi) if cut == 1 else (0, o_h)
    lo_w, hi_w = (o_lo, o_hi) if cut == 2 else (0, o_w)
    a, b, one = params[0], params[1], params[2]
    zero = one - one
    span = (hi_w - lo_w) * c
    # the input pixels of a pass are this many apart, so that its runs never overlap: a run's loads never wait
    # for the previous run's stores to the same elements
    apart = -(-k_w // stride_w)
    run, step_src, step_dst = k_w * c, apart * k_all * c, apart * stride_w * c
    # input pixels ``iw`` of the slab whose whole K_w-tap run lands in ``[lo_w, hi_w)``
    inner_lo = max(0, -(-(lo_w + start_w) // stride_w) - off_w)
    inner_hi = min(s_w - 1, (hi_w - k_w + start_w) // stride_w - off_w)
    for q in range(nn):
        n = n0 + q
        for od in range(lo_d, hi_d):
            for oh in range(lo_h, hi_h):
                row = (((n * o_d + od) * o_h + oh) * o_w) * c
                first = row + lo_w * c
                for e in range(span):
                    yf[at(first + e)] = zero
                for ud in range(counts[0, od]):
                    kd, i_d = tabs[0, od, 2 * ud], tabs[0, od, 2 * ud + 1] - off_d
                    for uh in range(counts[1, oh]):
                        kh, i_h = tabs[1, oh, 2 * uh], tabs[1, oh, 2 * uh + 1] - off_h
                        t0 = (kd * k_h + kh) * k_w
                        p_dh = ((q * s_d + i_d) * s_h + i_h) * s_w
                        src0 = (p_dh * k_all + t0) * c  # (input pixel 0's run)
                        for r in range(apart):
                            # the pass's pixels whose runs lie inside the block, one fixed-length run each at a
                            # fixed step; the clipped ones at either end; in pixel order
                            head = inner_lo + (r - inner_lo) % apart
                            for iw in range(r, min(head, s_w), apart):
                                _clipped_run(cols, yf, src0, row, iw, (off_w, stride_w, start_w, lo_w, hi_w),
                                             k_w, k_all, c)
                            after = head  # (head >= r: the first inner pixel of the pass, or past the slab)
                            if head <= inner_hi:
                                n_in = (inner_hi - head) // apart + 1
                                src = src0 + head * k_all * c
                                dst = row + ((off_w + head) * stride_w - start_w) * c
                                for _ in range(n_in):
                                    for e in range(run):
                                        yf[at(dst + e)] += cols[at(src + e)]
                                    src += step_src
                                    dst += step_dst
                                after = head + n_in * apart
                            for iw in range(after, s_w, apart):
                                _clipped_run(cols, yf, src0, row, iw, (off_w, stride_w, start_w, lo_w, hi_w),
                                             k_w, k_all, c)
                for e in range(span):
                    yf[at(first + e)] += brow[at(lo_w * c + e)]
                if code != 0:
                    activate_run(yf, first, span, code, a, b, one)


@njit(**NJIT_FLAGS)
def _clipped_run(cols, yf, src0, row, iw, axis, k_w, k_all, c):
    """Input pixel ``iw``'s run clipped to the block ``[lo_w, hi_w)`` of the output row at ``row``; ``axis`` =
    (off_w, stride_w, start_w, lo_w, hi_w)."""
    off_w, stride_w, start_w, lo_w, hi_w = axis
    o = (off_w + iw) * stride_w - start_w  # the output of tap kw = 0
    k_lo = max(0, lo_w - o)
    k_hi = min(k_w, hi_w - o)
    src = src0 + (iw * k_all + k_lo) * c
    dst = row + (o + k_lo) * c
    for e in range(max(0, k_hi - k_lo) * c):
        yf[at(dst + e)] += cols[at(src + e)]
