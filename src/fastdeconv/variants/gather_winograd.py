"""gather-winograd: Winograd F(2, r) on the output phases when each phase is an r-tap correlation with evenly
spaced sources (``kernel % stride == 0``; dilation allowed; 1-D to 3-D): one GEMM per transform point with 1.78x
(r = 2, 2-D) to 2.25x (r = 3, 2-D) fewer multiplications than the definition (``_kernels/winograd.py``: its
chunk search and model)."""

from __future__ import annotations

from .. import _geometry as geo
from .._kernels import winograd as _wg
from .._model import LAUNCH_PARALLEL
from . import Variant


def applies(plan: geo.Plan) -> bool:
    """A Winograd layout exists and some chunking keeps the memory rule (a one-off call's, else an operator's)."""
    return _wg.kept_choice(plan) is not None


def cost(plan: geo.Plan, threads: int) -> float | None:
    seconds = _wg.estimate(plan, threads)  # None: no one-off chunking keeps the memory rule
    return None if seconds is None else seconds + LAUNCH_PARALLEL


def kept_cost(plan: geo.Plan, threads: int) -> float | None:
    seconds = _wg.kept_estimate(plan, threads)
    return None if seconds is None else seconds + LAUNCH_PARALLEL


VARIANT = Variant(
    name="gather-winograd", form="gather", applies=applies, cost=cost, scratch=_wg.scratch_elements,
    pack=_wg.pack_kept, run=_wg.run, serial=lambda plan: False,
    reason="Winograd F(2, r) on the output phases: fewer multiplications, channel contraction on BLAS",
    kernels=lambda: (_wg.run_task, (_wg.transform_weights, _wg.relayout)), exact=False, call_pack=_wg.pack_call,
    pack_input=_wg.pack_input, kept_cost=kept_cost, kept_scratch=_wg.kept_scratch, check=_wg.safe,
)
