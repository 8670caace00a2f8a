"""zerofill: the textbook baseline: zero-insert and pad the input into a buffer, then a dense correlation with the
flipped kernel (``_kernels/zerofill.py``, ``_kernels/conv.py``). It multiplies the inserted zeros (so it is not
exact), and ``auto`` never picks it (``baseline``): it runs when ``method="zerofill"`` asks for it."""

from __future__ import annotations

from math import prod as _prod

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._kernels.conv import correlate_tasks
from .._kernels.zerofill import fill_planes
from .._model import DIRECT_ROW_HALF
from .._tasks import correlate, fill
from .._tiling import tile_for
from . import Variant, _epilogue
from ._terms import always, never, sizes


def _buffer_shape(plan: geo.Plan) -> tuple[int, ...]:
    spans = [a.span for a in plan.axes]
    return (plan.batch, plan.c_in) + tuple(a.size_out + s - 1 for a, s in zip(plan.axes, spans))


def scratch(plan: geo.Plan) -> int:
    """The zero-filled, padded input."""
    return _prod(_buffer_shape(plan))


def cost(plan: geo.Plan, threads: int) -> float:
    """The fill streams the input and the buffer; the correlation multiplies every tap at every output (the
    inserted zeros included) at the direct kernels' rate on rows of the output's length."""
    s = sizes(plan)
    dense_macs = plan.batch * plan.c_out * s.pix_out * s.cin_g * s.k
    run = plan.axes[2].size_out
    rate = M.DIRECT_RATE * s.scale * run / (run + DIRECT_ROW_HALF)
    fill = (s.x_elems + scratch(plan)) * s.item / M.BANDWIDTH
    return (dense_macs / rate + fill + s.y_elems * s.item / M.BANDWIDTH) / threads + 2 * M.LAUNCH_POOL


def run(plan: geo.Plan, x5: np.ndarray, wc: np.ndarray, b: np.ndarray, y5: np.ndarray) -> None:
    """Zero-fill + pad into a buffer, then a dense correlation with the flipped kernel."""
    spans = [a.span for a in plan.axes]
    z_shape = _buffer_shape(plan)
    geo.check_memory(z_shape, plan.dtype, "the zero-fill buffer")
    z = np.empty(z_shape, plan.dtype)
    fill(x5, z, plan.arrays("stride"), np.array([s - 1 - a.start for a, s in zip(plan.axes, spans)], np.int64))
    ones = np.ones(3, np.int64)
    correlate(z, wc, b, y5, plan.groups, ones, plan.arrays("dilation"), tile_for(plan), _epilogue.args(plan))


def pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """(C_in, C_out_g, k) -> (C_out, C_in_g, k), flipped: the weights of the zero-fill-then-correlate route."""
    g, c_in_g, c_out_g = plan.groups, plan.c_in // plan.groups, plan.c_out // plan.groups
    kernel = w5.shape[2:]
    wc = w5.reshape((g, c_in_g, c_out_g) + kernel).swapaxes(1, 2).reshape((plan.c_out, c_in_g) + kernel)
    return np.ascontiguousarray(wc[:, :, ::-1, ::-1, ::-1])


VARIANT = Variant(
    name="zerofill", form="zerofill", applies=always, cost=cost, scratch=scratch, pack=pack, run=run, serial=never,
    reason="the textbook baseline (zero-insert, pad, dense correlation)",
    kernels=lambda: (fill_planes, correlate_tasks), exact=False, baseline=True,
)
