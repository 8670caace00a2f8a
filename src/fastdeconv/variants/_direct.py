"""What the two direct variants (scatter-direct, gather-direct) share: their dispatch (a numba kernel over tasks,
serially on small problems) and their estimate's form."""

from __future__ import annotations

import math

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .. import _tasks
from .._caches import memo
from .._kernels import gather as _gd
from .._kernels import scatter as _sd
from .._kernels._blocks import CHANNEL_BLOCK
from .._model import DIRECT_CHANNEL_BLOCK, DIRECT_ROW_HALF
from .._tiling import tile_for
from . import _epilogue
from ._terms import sizes


def runs_serially(plan: geo.Plan) -> bool:
    """A direct kernel on a small problem: handing chunks to the worker pool costs more than it saves."""
    return plan.macs < M.SERIAL_WORK


@memo(512)
def direct_call(plan: geo.Plan, form: str) -> tuple:
    """(kernel, its arguments after x, w, bias, y) of a direct variant for ``plan``: on small problems the numba
    kernel over all the tasks in the calling thread (below ``TINY_WORK`` scatter walks the definition: the same
    bits as ``scatter_serial``), else the function that hands chunks of them to the worker pool."""
    tile = tile_for(plan) if plan.batch * plan.c_out else np.ones(3, np.int64)  # empty: never launched
    args = (plan.groups, plan.arrays("stride"), plan.arrays("dilation"), plan.arrays("start"), tile)
    if plan.activation is not None:  # the pool driver, which applies the epilogue chunk by chunk (serially too)
        return _fused(_tasks.scatter if form == "scatter" else _tasks.gather, plan), args
    if not runs_serially(plan):
        return (_tasks.scatter if form == "scatter" else _tasks.gather), args
    if form == "scatter" and plan.macs < M.TINY_WORK:
        return _sd.scatter_tiny, args
    # the task count of ``_blocks.task_count``: (sample, group x channel block, output tile)
    blocks = -(-(plan.c_out // plan.groups) // CHANNEL_BLOCK)
    n_tasks = plan.batch * plan.groups * blocks * math.prod(-(-a.size_out // int(t)) for a, t in zip(plan.axes, tile))
    return (_sd.scatter_tasks if form == "scatter" else _gd.gather_tasks), args + (0, n_tasks)


def _fused(driver, plan: geo.Plan):
    """``driver`` (``_tasks.scatter`` / ``gather``) with the plan's activation applied to each chunk's outputs."""
    def run(x5, w5, bias, y5, *args):
        driver(x5, w5, bias, y5, *args, epilogue=_epilogue.args(plan))

    return run


def direct_run(form: str):
    def run(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
        kernel, args = direct_call(plan, form)
        kernel(x5, w5, bias, y5, *args)

    return run


def direct_cost(plan: geo.Plan, threads: int, slower: float) -> float:
    """A direct kernel's estimate: its rate grows with the contiguous run along the last axis and with channel
    blocking; ``slower`` is the form's factor on that time."""
    s = sizes(plan)
    macs = plan.macs
    run = plan.axes[2].size_in
    row_eff = run / (run + DIRECT_ROW_HALF)
    block_eff = min(s.cout_g, DIRECT_CHANNEL_BLOCK) / DIRECT_CHANNEL_BLOCK
    rate = M.DIRECT_RATE * s.scale * row_eff * (0.3 + 0.7 * block_eff)
    work = (macs / rate + (s.x_elems + s.y_elems + s.w_elems) * s.item / M.BANDWIDTH) * slower
    serial = work + M.LAUNCH_SERIAL
    parallel = work / threads + M.LAUNCH_POOL  # chunks on the worker pool (``_tasks.py``)
    return min(serial, parallel) if macs < M.SERIAL_WORK else parallel
