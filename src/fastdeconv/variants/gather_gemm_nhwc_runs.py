"""gather-gemm-nhwc-runs: gather-gemm-nhwc's GEMM and tasks on channels-last data with few output channels, each
output row made of its input pixels' whole K_w x C_out runs of the GEMM's result (one group, no dilation along W;
the numba kernel: ``_kernels/nhwc_runs.py``): an RGB output layer's inner loops are K_w x 3 long instead of 3.
Here the record, its estimate and the driver (the tasks, tables and weight layout: ``channels_last``)."""

from __future__ import annotations

from math import prod as _prod

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._kernels.nhwc_runs import nhwc_runs
from .._runtime import run_parallel
from .._threads import max_threads
from . import Variant, _epilogue
from .channels_last import applies as native_applies
from .channels_last import cut_axis, gemm_cost, pack, tables, tap_major, tasks


def applies(plan: geo.Plan) -> bool:
    """gather-gemm-nhwc's rule, one group, no dilation along W, few output channels."""
    return plan.groups == 1 and plan.axes[2].dilation == 1 and plan.c_out <= M.NHWC_RUNS_CHANNELS and \
        native_applies(plan)


def cost(plan: geo.Plan, threads: int) -> float | None:
    """A one-off call's: None where its tap-major copy of the weight breaks the memory rule (``tap_major``)."""
    return kept_cost(plan, threads) if tap_major(plan) else None


def kept_cost(plan: geo.Plan, threads: int) -> float | None:
    """gather-gemm-nhwc's GEMM and fixed terms; the second step per ``cols`` element at the run rate."""
    return gemm_cost(plan, threads, M.NHWC_RUN_ELEMENT, M.NHWC_RUN_STORE)


def scratch_elements(plan: geo.Plan) -> int:
    """The workers' ``cols`` blocks and the tap-major weight (gather-gemm-nhwc's)."""
    found = tasks(plan)
    width = plan.c_out * _prod(a.kernel for a in plan.axes)
    return 0 if found is None else found[1] * width * max_threads() + plan.c_in * width


def run(plan: geo.Plan, x5: np.ndarray, w2: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Channels-last transposed convolution into ``y5`` (N, oD, oH, oW, C_out) from ``x5`` (N, D, H, W, C_in) and
    ``channels_last.pack``'s tap-major weight (C_in, K x C_out)."""
    k = _prod(a.kernel for a in plan.axes)
    task_list, max_pixels = tasks(plan)
    tabs, counts = tables(plan)
    cut = cut_axis(plan)
    kern = plan.arrays("kernel")
    in_shape = [a.size_in for a in plan.axes]
    code, params = _epilogue.args(plan) or (0, np.zeros(3, plan.dtype))
    aw = plan.axes[2]
    brow = np.tile(bias, aw.size_out)  # (the bias of every pixel of an output row: one contiguous add)
    width = plan.c_out * k

    def work(part):
        buf = np.empty(max_pixels * width, plan.dtype)
        slab = np.array(in_shape, np.int64)
        for _gi, j0, nj, o0, o1, i0, i1 in part:
            slab[cut] = i1 - i0
            index = [slice(j0, j0 + nj), slice(None), slice(None), slice(None)]
            index[1 + cut] = slice(i0, i1)
            pixels = nj * int(slab[0] * slab[1] * slab[2])
            if pixels:
                np.matmul(x5[tuple(index)].reshape(pixels, plan.c_in), w2, out=buf[:pixels * width].reshape(pixels,
                                                                                                           width))
            nhwc_runs(buf, y5, brow, (j0, nj, cut, o0, o1, i0), slab, kern, tabs, counts, (aw.stride, aw.start), code,
                      params)

    run_parallel(work, list(task_list))


VARIANT = Variant(
    name="gather-gemm-nhwc-runs", form="gather", applies=applies, cost=cost, kept_cost=kept_cost,
    scratch=scratch_elements,
    kept_scratch=lambda plan: scratch_elements(plan) - plan.c_in * plan.c_out * _prod(a.kernel for a in plan.axes),
    pack=lambda plan, w5: pack(plan, w5), run=run, serial=lambda plan: False,
    reason="channels-last, few output channels: BLAS GEMM over pixels x channels, each pixel's K_w x C_out run "
           "added whole",
    kernels=lambda: (nhwc_runs,), exact=True, channels_last=True,
)
