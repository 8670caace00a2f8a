"""Both forms on BLAS, one GEMM per (sample, block of output rows), for layers with few output channels.

Pixels-major orientation (``pixels_major``: when ``C_out_g * K >= PIXELS_MAJOR_COLUMNS``):
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

from functools import lru_cache
from math import prod as _prod

import numpy as np

from .. import _geometry as geo
from .._compiled import njit
from .._runtime import run_parallel
from .._threads import max_threads
from ..config import NJIT_FLAGS
from ._index import at, source_between
from .scatter_gemm import geometry_arrays

# Target ``cols`` block (elements) per task, pixels-major: a quarter of one core's L2, so the rows the GEMM
# writes are still in cache when the scatter/gather step reads them; channel-major blocks are 4x larger: their
# rows are contiguous and read as streams, so fewer, longer GEMMs win over staying in L2.
_CHUNK_ELEMENTS = 1 << 16
_CHANNEL_MAJOR_FACTOR = 4
# Shortest (C_out_g * K) side at which the pixels-major orientation is the faster GEMM
PIXELS_MAJOR_COLUMNS = 40


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
    w_tap = np.empty((o_w, k_w), np.int64)
    w_src = np.empty((o_w, k_w), np.int64)
    for kw in range(k_w):
        for i_w in range(taps[2, kw, 1], taps[2, kw, 2]):
            ow = i_w * s_w + taps[2, kw, 0]
            w_tap[ow, w_count[ow]] = kw * tap_scale
            w_src[ow, w_count[ow]] = i_w
            w_count[ow] += 1
    return w_count, w_tap, w_src


@njit(**NJIT_FLAGS)
def scatter_rows(cols, y, bias, j, c0, cb, oh0, oh1, ih0, ih1, in_shape, kernel, stride, taps, pixels_major):
    """Write output rows ``oh0:oh1`` of ``y[j, c0:c0 + cb]``: each input pixel adds its footprint into the row.

    ``cols`` is pixels-major, ``cols[p, t * cb + c]`` (tap-major, channel-minor), or channel-major,
    ``cols[c * K + t, p]``, with ``p = (i_d * (ih1 - ih0) + i_h - ih0) * W + i_w``: only the three strides
    of the flat index differ. Per output row (bias first), for each (tap depth, tap row) reaching it and each
    channel and tap column, every input pixel of the source row adds its term at ``i_w * stride + offset``.
    For every output element the terms arrive in (tap depth, tap row, tap column) order, whatever the row
    blocks or the layout. (Adding straight into the output row beats accumulating a channels-last row
    buffer and storing it channels-first: one pass over the row instead of two.)
    """
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    size_w = in_shape[2]
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_w = stride[2]
    rows = ih1 - ih0
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
            n_pairs = source_rows(od, oh, taps, stride, kernel, rows, ih0, size_w, k_w, pair_base, pair_tap)
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
def gather_rows(cols, y, bias, j, c0, cb, oh0, oh1, ih0, ih1, in_shape, kernel, stride, taps):
    """Write output rows ``oh0:oh1`` of ``y[j, c0:c0 + cb]``, each element the sum of its (pixel, tap) terms.

    Same ``cols`` layout as :func:`scatter_rows`. Terms are summed in (tap depth, tap row, tap column) order
    in registers, then each element is stored once.
    """
    o_d, o_w = y.shape[2], y.shape[4]
    size_w = in_shape[2]
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_w = stride[2]
    rows = ih1 - ih0
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
            n_pairs = source_rows(od, oh, taps, stride, kernel, rows, ih0, size_w, kwc, pair_base, pair_tap)
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
def gather_rows_cm(cols, y, bias, j, c0, cb, oh0, oh1, ih0, ih1, in_shape, kernel, stride, taps):
    """:func:`gather_rows` for channel-major ``cols`` (see :func:`scatter_rows`): register sums, one store."""
    o_d, o_w = y.shape[2], y.shape[4]
    size_w = in_shape[2]
    k_d, k_h, k_w = kernel[0], kernel[1], kernel[2]
    s_w = stride[2]
    n_k = k_d * k_h * k_w
    rows = ih1 - ih0
    w_count, w_tap, w_src = source_columns(o_w, taps, s_w, k_w, 1)
    pair_base = np.empty(k_d * k_h, np.int64)
    pair_tap = np.empty(k_d * k_h, np.int64)
    for od in range(o_d):
        for oh in range(oh0, oh1):
            n_pairs = source_rows(od, oh, taps, stride, kernel, rows, ih0, size_w, k_w, pair_base, pair_tap)
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


def _input_rows(plan: geo.Plan, oh0: int, oh1: int) -> tuple[int, int]:
    """Input rows ``[ih0, ih1)`` whose footprint reaches output rows ``[oh0, oh1)`` (axis H)."""
    a = plan.axes[1]
    lo, hi = a.size_in, 0
    for k in range(a.kernel):
        off = k * a.dilation - a.start
        first = max(0, -(-(oh0 - off) // a.stride))
        last = min(a.size_in, -(-(oh1 - off) // a.stride))
        if first < last:
            lo, hi = min(lo, first), max(hi, last)
    return (lo, hi) if lo < hi else (0, 0)


@lru_cache(maxsize=256)
def tasks(plan: geo.Plan) -> tuple[tuple[tuple[int, int, int, int, int, int, int], ...], int]:
    """((group, first sample, samples, oh0, oh1, ih0, ih1) per task, largest input pixels of a task), by shape.

    A task is a run of whole samples when one sample's ``cols`` block fits the cache target (or the layer is
    3-D with depth, where input rows are not one contiguous block), else one sample's block of output rows.
    """
    g = plan.groups
    cout_g = plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    a_d, a_h, a_w = plan.axes
    per_row = a_d.size_in * a_w.size_in * cout_g * k  # cols elements per input row
    out_size = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    relayout = plan.c_in * cout_g * k if pixels_major(plan) else 0  # the tap-major weight, held by the call
    budget = max((out_size - relayout) // max_threads(), 1)
    target = min(budget, _CHUNK_ELEMENTS * (1 if pixels_major(plan) else _CHANNEL_MAJOR_FACTOR))
    o_h = a_h.size_out
    if per_row * a_h.size_in <= target or a_d.size_in > 1:
        blocks = [(0, o_h, 0, a_h.size_in)]
    else:
        blocks = []
        oh0 = 0
        while oh0 < o_h:
            oh1 = oh0 + 1
            while oh1 < o_h:
                ih0, ih1 = _input_rows(plan, oh0, oh1 + 1)
                if (ih1 - ih0) * per_row > target:
                    break
                oh1 += 1
            blocks.append((oh0, oh1) + _input_rows(plan, oh0, oh1))
            oh0 = oh1
    n = 1
    if len(blocks) == 1:  # whole samples: several per task (fewer, larger GEMMs), enough tasks for the workers
        n = max(1, min(target // max(1, per_row * a_h.size_in), -(-plan.batch // max_threads())))
    out = tuple((gi, j, min(n, plan.batch - j)) + blk for gi in range(g) for j in range(0, plan.batch, n)
                for blk in blocks)
    pixels = max(nj * (ih1 - ih0) * a_d.size_in * a_w.size_in for _, _, nj, _, _, ih0, ih1 in out) if out else 0
    return out, pixels


def pixels_major(plan: geo.Plan) -> bool:
    """Whether the GEMM runs pixels-major (``X^T @ W``): when the (C_out_g * K) side is long enough for BLAS.

    Pixels-major keeps BLAS's long side on the pixels once that side (an RGB 4x4 layer: 48 columns) is long
    enough to block well; below ``PIXELS_MAJOR_COLUMNS`` (an RGB 3x3 layer: 27) channel-major (``W^T @ X`` into
    ``cols[c * K + t, pixels]``, contiguous rows for the second step) is faster overall.
    """
    return (plan.c_out // plan.groups) * _prod(a.kernel for a in plan.axes) >= PIXELS_MAJOR_COLUMNS


def scratch_elements(plan: geo.Plan) -> int:
    """Largest scratch (elements) one call allocates (all workers together; pixels-major, the tap-major copy
    of the weight too)."""
    k = _prod(a.kernel for a in plan.axes)
    relayout = plan.c_in * (plan.c_out // plan.groups) * k if pixels_major(plan) else 0
    return max_threads() * tasks(plan)[1] * (plan.c_out // plan.groups) * k + relayout


def pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """The weight as the GEMMs read it, (C_in, C_out_g * K): pixels-major, tap-major with channel-minor columns
    (one tap's channels contiguous: a copy), else the weight's own layout (a view)."""
    cout_g = plan.c_out // plan.groups
    k = _prod(a.kernel for a in plan.axes)
    if pixels_major(plan):
        return np.ascontiguousarray(w5.reshape(plan.c_in, cout_g, k).transpose(0, 2, 1)).reshape(plan.c_in, k * cout_g)
    return w5.reshape(plan.c_in, cout_g * k)  # read in place


def _run(form: str, plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    task_list, max_pixels = tasks(plan)
    in_shape, kern, stride, taps = geometry_arrays(plan)
    size_d, size_w = x5.shape[2], x5.shape[4]
    major = pixels_major(plan)
    gather = gather_rows if major else gather_rows_cm

    def work(part):
        buf = np.empty(max_pixels * cout_g * k, plan.dtype)
        for gi, j0, nj, oh0, oh1, ih0, ih1 in part:
            pixels = size_d * (ih1 - ih0) * size_w
            xm = x5[j0:j0 + nj, gi * cin_g:(gi + 1) * cin_g, :, ih0:ih1].reshape(nj, cin_g, pixels)
            wg = w2[gi * cin_g:(gi + 1) * cin_g]
            if major:
                cols = buf[:nj * pixels * cout_g * k].reshape(nj, pixels, cout_g * k)
                if pixels:
                    np.matmul(xm.transpose(0, 2, 1), wg, out=cols)
            else:
                cols = buf[:nj * pixels * cout_g * k].reshape(nj, cout_g * k, pixels)
                if pixels:
                    np.matmul(wg.T, xm, out=cols)
            for q in range(nj):
                args = (cols[q], y5, bias, j0 + q, gi * cout_g, cout_g, oh0, oh1, ih0, ih1, in_shape, kern, stride,
                        taps)
                if form == "scatter":
                    scatter_rows(*args, major)
                else:
                    gather(*args)

    run_parallel(work, list(task_list))


def scatter_pixels_packed(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Scatter form, pixels-major GEMM then footprint adds, into ``y5`` (overwritten); ``w2`` is :func:`pack`'s."""
    _run("scatter", plan, x5, w2, bias, y5)


def gather_pixels_packed(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Gather form, pixels-major GEMM then per-output sums, into ``y5`` (overwritten); ``w2`` is :func:`pack`'s."""
    _run("gather", plan, x5, w2, bias, y5)
