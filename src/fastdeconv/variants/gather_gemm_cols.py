"""gather-gemm-cols: scatter-gemm's chunks and GEMMs, then each output element sums its ``cols`` entries in a
register and is stored once (``_kernels/scatter_gemm.py``): the gather form of weight-heavy layers."""

from __future__ import annotations

from .. import _geometry as geo
from .._kernels import scatter_gemm as _sg
from .._model import LAUNCH_GEMM, LAUNCH_PARALLEL, ROWS_STEP_CHANNEL_MAJOR
from . import Variant
from ._terms import same, sizes
from .scatter_gemm import applies, chunked


def cost(plan: geo.Plan, threads: int) -> float:
    # the same chunks and GEMMs as scatter-gemm, then per-output sums by phase (a later slab re-reads the partial
    # sums it adds to)
    c = chunked(plan, threads)
    element, store = ROWS_STEP_CHANNEL_MAJOR["gather"]
    gather = (c.cols * element + sizes(plan).y_elems * store * min(c.slabs, 2)) / c.workers
    return c.gemm + c.pack + gather + c.calls * c.slabs * LAUNCH_GEMM / c.workers + LAUNCH_PARALLEL


VARIANT = Variant(
    name="gather-gemm-cols", form="gather", applies=applies, cost=cost, scratch=_sg.scratch_elements,
    pack=_sg.pack, run=_sg.gather_cols, serial=lambda plan: False,
    reason="channel contraction on BLAS, then per-output sums of the terms: the gather twin of scatter-gemm",
    kernels=lambda: (_sg.gather_phases,), exact=True, call_pack=same,
)
