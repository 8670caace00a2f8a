"""The fused epilogue on the variants' side: the arguments of ``_kernels.epilogue`` for a plan, and the regions
(boxes of the 5-D output) each variant's tasks make final, on which it applies the activation in the worker
that wrote them (see ``_kernels/epilogue.py``)."""

from __future__ import annotations

import numpy as np

from .. import _geometry as geo
from .._caches import memo
from .._kernels import epilogue as _ep

CODES = {"relu": _ep.RELU, "leaky_relu": _ep.LEAKY_RELU, "tanh": _ep.TANH, "sigmoid": _ep.SIGMOID,
         "clamp": _ep.CLAMP}


@memo(256)
def _cached(activation: tuple, dtype: np.dtype) -> tuple[int, np.ndarray]:
    name, a, b = activation
    params = np.array([a, b, 1.0], dtype)
    params.flags.writeable = False
    return CODES[name], params


def args(plan: geo.Plan) -> tuple[int, np.ndarray] | None:
    """``(code, params)`` of the plan's activation in its dtype, or None without one."""
    if plan.activation is None:
        return None
    code, params = _cached(plan.activation, plan.dtype)
    return code, params.copy()  # numba compiles read-only arrays separately: each call gets a writeable copy


def box(y5: np.ndarray, ep: tuple[int, np.ndarray], *ranges: tuple[int, int]) -> None:
    """Activate ``y5[r0[0]:r0[1], r1[0]:r1[1], ...]`` (missing trailing ranges: whole axes)."""
    bounds = np.zeros((5, 2), np.int64)
    bounds[:, 1] = y5.shape
    for axis, (lo, hi) in enumerate(ranges):
        bounds[axis] = (lo, hi)
    _ep.activate_box(y5, bounds, ep[0], ep[1])


def bias_vector(plan: geo.Plan, bias: np.ndarray) -> np.ndarray:
    """The activated bias: what an output element no term reaches holds."""
    ep = args(plan)
    if ep is None:
        return bias
    out = np.array(bias, copy=True)
    _ep.activate_flat(out, 0, out.size, ep[0], ep[1])
    return out


def kernels() -> tuple:
    return (_ep.activate_box, _ep.activate_tasks, _ep.activate_flat, _ep.bias_activate, _ep.activate_plane_tasks)
