"""gather-winograd: Winograd F(2, r) on the output phases when each phase is an r-tap correlation with evenly
spaced sources (``kernel % stride == 0``; dilation allowed; 1-D to 3-D): one GEMM per transform point with 1.78x
(r = 2, 2-D) to 2.25x (r = 3, 2-D) fewer multiplications than the definition (the numba kernels:
``_kernels/winograd.py``, which describes the scheme; the schedule and the driver: ``_winograd_schedule.py``,
``_winograd_run.py``). Here the record, its estimate and its value check."""

from __future__ import annotations

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo
from .._kernels.winograd import relayout, run_task, transform_weights
from .._scan import max_abs
from . import Variant
from ._winograd_math import matrices
from ._winograd_run import pack_call, pack_input, pack_kept, run
from ._winograd_schedule import estimate, kept_choice, kept_estimate, kept_scratch, layout, scratch_elements


def applies(plan: geo.Plan) -> bool:
    """A Winograd layout exists and some chunking keeps the memory rule (a one-off call's, else an operator's)."""
    return kept_choice(plan) is not None


def cost(plan: geo.Plan, threads: int) -> float | None:
    seconds = estimate(plan, threads)  # None: no one-off chunking keeps the memory rule
    return None if seconds is None else seconds + M.LAUNCH_PARALLEL


def kept_cost(plan: geo.Plan, threads: int) -> float | None:
    seconds = kept_estimate(plan, threads)
    return None if seconds is None else seconds + M.LAUNCH_PARALLEL



@memo(256)
def _gains(plan: geo.Plan) -> tuple[float, float, float]:
    """Largest factor by which the input transform (B^T), the weight transform (G) and the inverse (A^T) can
    grow a magnitude: per axis the largest absolute row sum of the matrix, multiplied over the axes."""
    lay = layout(plan)
    gains = [1.0, 1.0, 1.0]
    for m, r in zip(lay.msize, lay.r):
        for i, mat in enumerate(matrices(int(m), int(r))):
            gains[i] *= float(np.abs(mat).sum(axis=1).max())
    return gains[0], gains[1], gains[2]


def safe(plan: geo.Plan, x5: np.ndarray, w_max: float) -> bool:
    """Whether Winograd's transforms give the definition's finite result on these values: every value finite,
    and no transformed value, product or sum able to exceed half the dtype's largest (the bound multiplies the
    largest magnitudes by the transforms' gains and the input channels summed per product). Otherwise (an
    infinity would meet its own negation in ``B^T d``, a NaN weight would reach taps outside the input through
    the transformed weights, or 3e38 + 3e38 would overflow where the definition stays finite) the call runs an
    exact variant of the gather form instead (``_api.exact_request``). One pass over x (``scan.max_abs``); ``w_max``
    is the weight's, which an operator finds once."""
    limit = float(np.finfo(plan.dtype).max) / 2
    g_x, g_w, g_y = _gains(plan)
    v = g_x * max_abs(x5)
    u = g_w * w_max
    return v <= limit and u <= limit and g_y * (plan.c_in // plan.groups) * v * u <= limit


VARIANT = Variant(
    name="gather-winograd", form="gather", applies=applies, cost=cost, scratch=scratch_elements,
    pack=pack_kept, run=run, serial=lambda plan: False,
    reason="Winograd F(2, r) on the output phases: fewer multiplications, channel contraction on BLAS",
    kernels=lambda: (run_task, (transform_weights, relayout)), exact=False, call_pack=pack_call,
    pack_input=pack_input, kept_cost=kept_cost, kept_scratch=kept_scratch, check=safe,
)
