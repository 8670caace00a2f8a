"""scatter-gemm-rows / gather-gemm-rows: per task (sample, block of output rows; halo rows recomputed) one GEMM
over the input rows it needs into ``cols``, pixels-major ``(pixels, C_out_g * K) = X^T @ W`` when ``C_out_g * K``
is long enough for BLAS, else channel-major, then a footprint add (scatter) or per-output register sums (gather)
(``_kernels/pixel_gemm.py``); wins when ``C_out_g * K`` is short (RGB output layers). The two share everything
but the step after the GEMM: one module, two records."""

from __future__ import annotations

from .. import _geometry as geo
from .._kernels import pixel_gemm as _pg
from .._model import (
    LAUNCH_GEMM,
    LAUNCH_PARALLEL,
    PHASE_RELAYOUT_ELEMENT,
    PIXEL_GEMM_COLUMNS,
    PIXEL_GEMM_GAIN_MAX,
    PIXEL_GEMM_GAIN_MIN,
    ROWS_STEP_CHANNEL_MAJOR,
    ROWS_STEP_PIXELS_MAJOR,
)
from . import Variant
from ._terms import gemm_applies, gemm_time, sizes


def _shared(plan: geo.Plan, threads: int) -> tuple:
    """(GEMM seconds, cols elements, fixed seconds, workers, pixels-major) of a plan."""
    s = sizes(plan)
    task_list, max_pixels = _pg.tasks(plan)
    plane = plan.axes[0].size_in * plan.axes[2].size_in
    pixels = sum(t[2] * (t[6] - t[5]) * plane for t in task_list)  # per group, incl. halo rows
    workers = max(1, min(threads, len(task_list)))
    width = s.cout_g * s.k
    major = _pg.pixels_major(plan)
    gain = min(PIXEL_GEMM_GAIN_MAX, max(PIXEL_GEMM_GAIN_MIN, width / PIXEL_GEMM_COLUMNS)) if major else 1.0
    gemm_macs = pixels * s.cin_g * width  # all groups (tasks run per group)
    gemm = gemm_time(2.0 * gemm_macs, width, max(1, max_pixels), s.cin_g, 1, s.scale) / gain
    fixed = (s.w_elems * PHASE_RELAYOUT_ELEMENT if major else 0.0) + len(task_list) * LAUNCH_GEMM
    return gemm, pixels * width, fixed, workers, major


def _cost(form: str):
    def cost(plan: geo.Plan, threads: int) -> float:
        gemm, cols_elems, fixed, workers, major = _shared(plan, threads)
        element, store = (ROWS_STEP_PIXELS_MAJOR if major else ROWS_STEP_CHANNEL_MAJOR)[form]
        step = cols_elems * element + sizes(plan).y_elems * store
        return (gemm + step + fixed) / workers + LAUNCH_PARALLEL

    return cost


_REASON = "BLAS GEMM per block of output rows: few output channels x taps"

SCATTER = Variant(
    name="scatter-gemm-rows", form="scatter", applies=gemm_applies, cost=_cost("scatter"),
    scratch=_pg.scratch_elements, pack=_pg.pack, run=_pg.scatter_pixels_packed, serial=lambda plan: False,
    reason=_REASON, kernels=lambda: (_pg.scatter_rows,), exact=True,
)

GATHER = Variant(
    name="gather-gemm-rows", form="gather", applies=gemm_applies, cost=_cost("gather"),
    scratch=_pg.scratch_elements, pack=_pg.pack, run=_pg.gather_pixels_packed, serial=lambda plan: False,
    reason=_REASON, kernels=lambda: ((_pg.gather_rows, _pg.gather_rows_cm),), exact=True,
)
