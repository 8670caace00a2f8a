"""gather-direct: the numba kernel that walks the definition, each output element summing its sources in a
register (``_kernels/gather.py``); serially in the calling thread when the problem is tiny."""

from __future__ import annotations

from .. import _geometry as geo
from .._kernels import gather as _gd
from .._model import GATHER_DIRECT_LONG, GATHER_DIRECT_SHORT, GATHER_LONG_ROW
from . import Variant
from ._direct import direct_call, direct_cost, direct_run, runs_serially
from ._terms import always, none, same


def cost(plan: geo.Plan, threads: int) -> float:
    last = plan.axes[2]
    long_rows = last.stride > 1 and last.size_in >= GATHER_LONG_ROW
    return direct_cost(plan, threads, GATHER_DIRECT_LONG if long_rows else GATHER_DIRECT_SHORT)


VARIANT = Variant(
    name="gather-direct", form="gather", applies=always, cost=cost, scratch=none, pack=same,
    run=direct_run("gather"), serial=runs_serially, reason="", kernels=lambda: (_gd.gather_tasks,), exact=True,
    direct=lambda plan: direct_call(plan, "gather"),
)
