"""gather-gemm-cols: scatter-gemm's chunks and GEMMs, then each output element sums its ``cols`` entries in a
register and is stored once (``_kernels/scatter_gemm.py``): the gather form of weight-heavy layers."""

from __future__ import annotations

from .. import _geometry as geo
from .. import _model as M
from .._kernels.scatter_gemm import gather_phases
from . import Variant
from ._terms import same, sizes
from .scatter_gemm import applies, chunked, gather_cols, pack, scratch_elements


def cost(plan: geo.Plan, threads: int) -> float:
    # the same chunks and GEMMs as scatter-gemm, then per-output sums by phase (a later slab re-reads the partial
    # sums it adds to)
    c = chunked(plan, threads)
    element, store = M.ROWS_STEP_CHANNEL_MAJOR["gather"]
    gather = (c.cols * element + sizes(plan).y_elems * store * min(c.slabs, 2)) / c.workers
    return c.gemm + c.pack + gather + c.calls * c.slabs * M.LAUNCH_GEMM / c.workers + M.LAUNCH_PARALLEL


VARIANT = Variant(
    name="gather-gemm-cols", form="gather", applies=applies, cost=cost, scratch=scratch_elements,
    pack=pack, run=gather_cols, serial=lambda plan: False,
    reason="channel contraction on BLAS, then per-output sums of the terms: the gather twin of scatter-gemm",
    kernels=lambda: (gather_phases,), exact=True, call_pack=same,
)
