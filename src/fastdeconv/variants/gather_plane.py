"""gather-plane: one input channel per group (depthwise, single-channel), or few output channels per group (RGB
output layers, class maps): per output phase and (input channel, tap) one contiguous run over a zero-bordered
copy of a block of input rows, four terms per pass, three output channels at once (``_kernels/plane.py``)."""

from __future__ import annotations

from math import prod as _prod

from .. import _geometry as geo
from .. import _model
from .._kernels import plane as _pl
from .._kernels import scan as _scan
from .._model import (
    LAUNCH_POOL,
    LAUNCH_SERIAL,
    PLANE_FILL,
    PLANE_PASS,
    PLANE_PHASE,
    PLANE_SERIAL_WORK,
    PLANE_STORE,
    PLANE_TAP,
    PLANE_TAP_BLOCK,
    PLANE_WEIGHT,
)
from . import Variant
from ._terms import same, sizes


def runs_serially(plan: geo.Plan) -> bool:
    """A small problem: handing chunks to the worker pool costs more than it saves."""
    return plan.macs < _model.PLANE_SERIAL_WORK


def cost(plan: geo.Plan, threads: int) -> float:
    """Per phase, runs over a padded block of rows (``pitch`` columns per phase row, some of them beyond the
    phase's outputs), four terms per pass, for one output channel or a block of them; the store; the padded copy
    of the input rows; each task's weight table."""
    s = sizes(plan)
    macs = plan.macs
    lay = _pl.layout(plan)
    pitch, block, cb = int(lay.geometry[3]), int(lay.geometry[4]), int(lay.geometry[6])
    computed = s.y_elems * pitch / max(1, int(lay.tables[2][0, 0]))
    taps = macs / max(1, s.y_elems)  # per output element, on average
    halo = (block + int(lay.geometry[1]) + 1) / block
    tasks = _pl.task_count(plan)
    passes = -(-s.cout_g // cb)  # per task and phase
    phases = tasks * passes * _prod(t.shape[0] for t in lay.tables[1:])  # phases with outputs
    if cb == 1:
        terms = computed * (taps * PLANE_TAP + -(-taps // 4) * PLANE_PASS)
    else:  # the last block of channels may compute zero-weight extras
        terms = computed * passes * cb / s.cout_g * taps * PLANE_TAP_BLOCK
    work = (terms + s.y_elems * PLANE_STORE + s.x_elems * halo * PLANE_FILL) * (1.0 if s.item == 4 else 1.5) \
        + phases * PLANE_PHASE + tasks * passes * cb * s.cin_g * s.k * PLANE_WEIGHT
    if macs < PLANE_SERIAL_WORK:  # in the calling thread (``runs_serially``: the same rule)
        return work + LAUNCH_SERIAL
    return work / max(1, min(threads, tasks)) + LAUNCH_POOL  # chunks on the worker pool


def run(plan, x5, w5, bias, y5) -> None:
    _pl.gather_plane(plan, x5, w5, bias, y5, runs_serially(plan))


VARIANT = Variant(
    name="gather-plane", form="gather", applies=_pl.applies, cost=cost, scratch=_pl.scratch_elements, pack=same,
    run=run, serial=runs_serially,
    reason="one input channel or few output channels per group: long vectorized runs over a padded copy of the "
           "input rows",
    kernels=lambda: (_pl.plane_tasks,), exact=False, check=_scan.finite_weights,
)
