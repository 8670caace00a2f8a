"""scatter-direct: the numba kernel that walks the definition, each input element adding into its footprint
(``_kernels/scatter.py``); serially in the calling thread when the problem is tiny."""

from __future__ import annotations

from .. import _geometry as geo
from .._kernels import scatter as _sd
from . import Variant
from ._direct import direct_call, direct_cost, direct_run, runs_serially
from ._terms import always, none, same


def cost(plan: geo.Plan, threads: int) -> float:
    return direct_cost(plan, threads, 1.0)


VARIANT = Variant(
    name="scatter-direct", form="scatter", applies=always, cost=cost, scratch=none, pack=same,
    run=direct_run("scatter"), serial=runs_serially, reason="",
    kernels=lambda: ((_sd.scatter_tasks, _sd.scatter_tiny),), exact=True,
    direct=lambda plan: direct_call(plan, "scatter"),
)
