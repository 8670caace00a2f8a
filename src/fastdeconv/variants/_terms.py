"""What several variants share: the terms of their estimates (a GEMM's time, streaming memory, the plan's sizes)
and the trivial record functions."""

from __future__ import annotations

from dataclasses import replace
from math import prod as _prod
from typing import NamedTuple

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo


def same(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """The pack of the variants that read the weight as it is (in the plan's dtype, C-contiguous)."""
    return w5


@memo(256)
def weight_plan(plan: geo.Plan) -> geo.Plan:
    """The plan reduced to the weight's geometry (channels, groups, kernel, dtype): the ``pack_input`` of the
    variants whose pack depends on nothing else (no size, stride, dilation or crop)."""
    axes = tuple(geo.Axis(1, a.kernel, 1, 1, 0, 1) for a in plan.axes)
    return replace(plan, batch=1, batched=True, axes=axes, activation=None)


def none(plan: geo.Plan) -> int:
    return 0


def never(plan: geo.Plan) -> bool:
    return False


def always(plan: geo.Plan) -> bool:
    return True


def kernels_of(*functions):
    """A record's ``kernels``: the numba entry points given."""
    return lambda: functions


def gemm_applies(plan: geo.Plan) -> bool:
    """The BLAS-backed variants need a channel on both sides of each group and a sample."""
    return bool(plan.c_in // plan.groups and plan.c_out // plan.groups and plan.batch)


class Sizes(NamedTuple):
    """The plan's sizes the estimates read."""

    item: int  # bytes per element
    scale: float  # arithmetic rate relative to fp32
    cin_g: int
    cout_g: int
    k: int  # taps
    pix_in: int
    pix_out: int
    x_elems: int
    y_elems: int
    w_elems: int


def sizes(plan: geo.Plan) -> Sizes:
    item = plan.dtype.itemsize
    scale = 1.0 if item == 4 else 0.5  # fp64 arithmetic runs at half the rate
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    k = _prod(a.kernel for a in plan.axes)
    pix_in = _prod(a.size_in for a in plan.axes)
    pix_out = _prod(a.size_out for a in plan.axes)
    return Sizes(item, scale, cin_g, cout_g, k, pix_in, pix_out, plan.batch * plan.c_in * pix_in,
                 plan.batch * plan.c_out * pix_out, plan.c_in * cout_g * k)


def gemm_time(flops: float, m: int, n: int, k: int, threads: int, scale: float) -> float:
    """Seconds of one GEMM of ``flops`` with sides (M, N, K) on ``threads`` cores."""
    if flops <= 0:
        return 0.0
    eff = 1.0
    for side, half in zip((m, n, k), M.GEMM_HALF):
        eff *= side / (side + half)
    # BLAS splits over M and N: small sides leave the second core without work; the cores it uses run at the
    # profile's parallel efficiency
    usable = max(1.0, min(threads, (m * n) / 4096))
    cores = 1.0 + (usable - 1.0) * M.GEMM_THREADS
    peak = M.GEMM_PEAK if scale == 1.0 else M.GEMM_PEAK64 * scale / 0.5  # (fp64: the measured dgemm rate)
    return flops / (peak * eff * cores)


def mem_time(nbytes: float, threads: int) -> float:
    """Seconds to stream ``nbytes`` on ``threads`` cores."""
    return nbytes / (M.BANDWIDTH * threads)
