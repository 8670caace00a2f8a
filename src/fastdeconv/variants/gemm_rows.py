"""scatter-gemm-rows / gather-gemm-rows: per task (sample, block of output rows; halo rows recomputed) one GEMM
over the input rows it needs into ``cols``, pixels-major ``(pixels, C_out_g * K) = X^T @ W`` when ``C_out_g * K``
is long enough for BLAS, else channel-major, then a footprint add (scatter) or per-output register sums (gather)
(``_kernels/pixel_gemm.py``); wins when ``C_out_g * K`` is short (RGB output layers). The two share everything
but the step after the GEMM: one module, two records."""

from __future__ import annotations

from math import prod as _prod

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo
from .._kernels.pixel_gemm import gather_rows, gather_rows_cm, scatter_rows
from .._model import PIXEL_GEMM_COLUMNS, PIXEL_GEMM_GAIN_MAX, PIXEL_GEMM_GAIN_MIN
from .._runtime import run_parallel
from .._threads import max_threads
from . import Variant, _epilogue
from ._terms import gemm_applies, gemm_time, sizes
from .scatter_gemm import geometry_arrays

# Target ``cols`` block (elements) per task, pixels-major: a quarter of one core's L2, so the rows the GEMM
# writes are still in cache when the scatter/gather step reads them; channel-major blocks are 4x larger: their
# rows are contiguous and read as streams, so fewer, longer GEMMs win over staying in L2.
_CHUNK_ELEMENTS = 1 << 16
_CHANNEL_MAJOR_FACTOR = 4
# Shortest (C_out_g * K) side at which the pixels-major orientation is the faster GEMM
PIXELS_MAJOR_COLUMNS = 40


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


@memo(256)
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
    ep = _epilogue.args(plan)

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
                # (Python ints: int64 in the kernels)
                args = (cols[q], y5, bias, (j0 + q, gi * cout_g, cout_g), (oh0, oh1, ih0, ih1), in_shape, kern,
                        stride, taps)
                if form == "scatter":
                    scatter_rows(*args, major)
                else:
                    gather(*args)
            if ep is not None:  # the task's output rows are final: the epilogue while they are in cache
                _epilogue.box(y5, ep, (j0, j0 + nj), (gi * cout_g, (gi + 1) * cout_g), (0, y5.shape[2]), (oh0, oh1))

    run_parallel(work, list(task_list))


def scatter_pixels_packed(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Scatter form, pixels-major GEMM then footprint adds, into ``y5`` (overwritten); ``w2`` is :func:`pack`'s."""
    _run("scatter", plan, x5, w2, bias, y5)


def gather_pixels_packed(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Gather form, pixels-major GEMM then per-output sums, into ``y5`` (overwritten); ``w2`` is :func:`pack`'s."""
    _run("gather", plan, x5, w2, bias, y5)


def _shared(plan: geo.Plan, threads: int) -> tuple:
    """(GEMM seconds, cols elements, fixed seconds, workers, pixels-major) of a plan."""
    s = sizes(plan)
    task_list, max_pixels = tasks(plan)
    plane = plan.axes[0].size_in * plan.axes[2].size_in
    pixels = sum(t[2] * (t[6] - t[5]) * plane for t in task_list)  # per group, incl. halo rows
    workers = max(1, min(threads, len(task_list)))
    width = s.cout_g * s.k
    major = pixels_major(plan)
    gain = min(PIXEL_GEMM_GAIN_MAX, max(PIXEL_GEMM_GAIN_MIN, width / PIXEL_GEMM_COLUMNS)) if major else 1.0
    gemm_macs = pixels * s.cin_g * width  # all groups (tasks run per group)
    gemm = gemm_time(2.0 * gemm_macs, width, max(1, max_pixels), s.cin_g, 1, s.scale) / gain
    fixed = (s.w_elems * M.PHASE_RELAYOUT_ELEMENT if major else 0.0) + len(task_list) * M.LAUNCH_GEMM
    return gemm, pixels * width, fixed, workers, major


def _cost(form: str):
    def cost(plan: geo.Plan, threads: int) -> float:
        gemm, cols_elems, fixed, workers, major = _shared(plan, threads)
        element, store = (M.ROWS_STEP_PIXELS_MAJOR if major else M.ROWS_STEP_CHANNEL_MAJOR)[form]
        step = cols_elems * element + sizes(plan).y_elems * store
        return (gemm + step + fixed) / workers + M.LAUNCH_PARALLEL

    return cost


_REASON = "BLAS GEMM per block of output rows: few output channels x taps"

SCATTER = Variant(
    name="scatter-gemm-rows", form="scatter", applies=gemm_applies, cost=_cost("scatter"),
    scratch=scratch_elements, pack=pack, run=scatter_pixels_packed, serial=lambda plan: False,
    reason=_REASON, kernels=lambda: (scatter_rows,), exact=True,
)

GATHER = Variant(
    name="gather-gemm-rows", form="gather", applies=gemm_applies, cost=_cost("gather"),
    scratch=scratch_elements, pack=pack, run=gather_pixels_packed, serial=lambda plan: False,
    reason=_REASON, kernels=lambda: ((gather_rows, gather_rows_cm),), exact=True,
)
