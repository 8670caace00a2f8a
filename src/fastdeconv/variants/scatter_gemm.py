"""scatter-gemm: ``cols = W^T @ X`` on BLAS (the channel contraction) per chunk of samples and output channels,
then a parallel col2im (``_kernels/scatter_gemm.py``)."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from .. import _geometry as geo
from .._kernels import scatter_gemm as _sg
from .._model import COL2IM_ELEMENT, COL2IM_PLANE_TAP, COL2IM_WIDE_ELEMENT, LAUNCH_GEMM, LAUNCH_PARALLEL
from . import Variant
from ._terms import gemm_applies, gemm_time, mem_time, same, sizes


def applies(plan: geo.Plan) -> bool:
    return gemm_applies(plan) and _sg.chunks(plan) is not None


class Chunked(NamedTuple):
    """The terms scatter-gemm shares with gather-gemm-cols (same chunks, same GEMMs)."""

    gemm: float
    pack: float
    cols: int  # elements of all the chunks' cols
    workers: int
    calls: int
    slabs: int


@lru_cache(maxsize=512)
def chunked(plan: geo.Plan, threads: int) -> Chunked:
    """GEMM (cout_g*K, n*P, cin_g) per chunk and slab, the input pack, the cols written (for a plan it applies
    to)."""
    s = sizes(plan)
    g = plan.groups
    n, cb, slab = _sg.chunks(plan)
    slabs = -(-plan.axes[_sg.slab_axis(plan)].size_in // max(1, slab))
    calls = g * -(-plan.batch // n) * -(-s.cout_g // cb)
    cols = plan.c_out * s.k * plan.batch * s.pix_in
    workers = min(threads, calls)  # workers take whole chunks, each with single-threaded BLAS
    gemm = g * gemm_time(2.0 * plan.macs / g, cb * s.k, n * s.pix_in // slabs, s.cin_g, 1, s.scale) / workers
    pack = mem_time(2 * s.x_elems * s.item, workers) if n > 1 else 0.0
    return Chunked(gemm, pack, cols, workers, calls, slabs)


def cost(plan: geo.Plan, threads: int) -> float:
    c = chunked(plan, threads)
    n = _sg.chunks(plan)[0]
    # col2im set-ups: per channel, depth, chunk and slab
    set_ups = plan.c_out * plan.axes[0].size_out * -(-plan.batch // n) * c.slabs
    element = COL2IM_WIDE_ELEMENT if _sg.pixels_major(plan, n) else COL2IM_ELEMENT
    col2im = (c.cols * element + set_ups * sizes(plan).k * COL2IM_PLANE_TAP) / c.workers
    return c.gemm + c.pack + col2im + c.calls * c.slabs * LAUNCH_GEMM / c.workers + LAUNCH_PARALLEL


VARIANT = Variant(
    name="scatter-gemm", form="scatter", applies=applies, cost=cost, scratch=_sg.scratch_elements, pack=_sg.pack,
    run=_sg.scatter_gemm, serial=lambda plan: False, reason="channel contraction on BLAS",
    kernels=lambda: ((_sg.col2im, _sg.col2im_minor),), exact=True, call_pack=same,
)
