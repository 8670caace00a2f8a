"""gather-winograd-nhwc: gather-winograd on channels-last data, x (N, D, H, W, C_in) read and y (N, oD, oH, oW, C_out)
written in place: the same layout, tiles, chunks and transformed weights (``_winograd_schedule``,
``_winograd_run``), its pack a contiguous copy of each input row and its inverse transform storing each output
pixel's channels as one contiguous run (the numba kernels: ``_kernels/winograd_nhwc.py``). Its results are
gather-winograd's bits on the transposed data. Here the record, its estimate, the weights' packing and the
driver."""

from __future__ import annotations

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._kernels.winograd import relayout, transform_weights
from .._kernels.winograd_nhwc import run_task_nhwc
from .._runtime import run_parallel
from . import Variant, _epilogue
from ._winograd_run import Weights, WeightSpec, make_weights, pack_input, run_arguments, weight_spec
from ._winograd_schedule import (
    chunk_choice,
    kept_choice,
    kept_scratch,
    layout,
    schedule_cost,
    scratch_elements,
    tiles_per_row,
)
from .gather_winograd import safe


class _Constants:
    """The model's constants (``_model``, read at call time) with this variant's pack and store in place of the
    channels-first ones, and the GEMM rate lowered on a thin C_out block: the rest of the estimate (GEMMs,
    transforms, calls) is gather-winograd's."""

    def __init__(self, cb: int):
        self.thin = min(1.0, cb / M.WINOGRAD_NHWC_THIN_BLOCK)

    def __getattr__(self, name: str):
        if name == "WINOGRAD_PACK_ELEMENT":
            return M.WINOGRAD_NHWC_PACK_ELEMENT
        if name == "WINOGRAD_STORE_ELEMENT":
            return M.WINOGRAD_NHWC_STORE_ELEMENT
        if name == "WINOGRAD_GEMM_RATE":
            return M.WINOGRAD_GEMM_RATE * self.thin
        return getattr(M, name)


def applies(plan: geo.Plan) -> bool:
    """gather-winograd's rule (a layout, and a chunking within the memory rule); the layout is the record's."""
    return kept_choice(plan) is not None


def _estimate(plan: geo.Plan, threads: int, found, kept: bool) -> float | None:
    """gather-winograd's estimate on the chunks it runs (``found``), with channels-last pack and store."""
    if found is None:
        return None
    nb, nth, cb, shared = found
    return schedule_cost(plan, layout(plan), nb, nth, cb, threads, shared, kept, _Constants(cb)) + M.LAUNCH_PARALLEL


def cost(plan: geo.Plan, threads: int) -> float | None:
    return _estimate(plan, threads, chunk_choice(plan), False)


def kept_cost(plan: geo.Plan, threads: int) -> float | None:
    return _estimate(plan, threads, kept_choice(plan), True)


# --------------------------------------------------------------------------- weights (gather-winograd's)


def pack_call(plan: geo.Plan, w5: np.ndarray) -> Weights:
    """The weight-only work of one call (gather-winograd's one-off chunks)."""
    return make_weights(weight_spec(plan, False), w5, run_task_nhwc)


def pack_kept(spec: WeightSpec, w5: np.ndarray) -> Weights:
    """The weight-only work an operator does once (the spec: ``_winograd_run.pack_input``)."""
    return make_weights(spec, w5, run_task_nhwc)


# --------------------------------------------------------------------------- the driver


def run(plan: geo.Plan, x5: np.ndarray, weights: Weights, bias: np.ndarray, y5: np.ndarray) -> None:
    """Channels-last transposed convolution into ``y5`` (N, oD, oH, oW, C_out) from ``x5`` (N, D, H, W, C_in) and
    weights packed by ``pack_call`` or ``pack_kept`` (``_winograd_run.run``'s chunks and arguments)."""
    lay = layout(plan)
    if weights.spec != weight_spec(plan, weights.spec.kept):  # (a bug, not the user's)
        raise ValueError("gather-winograd-nhwc: the packed weights were made for another plan (phases, tiles or "
                         "chunks)")
    nb_max, nth_max, cb_max, _shared = kept_choice(plan) if weights.spec.kept else chunk_choice(plan)
    tasks, tables, u_coefs, v_terms, v_counts, a_terms, r_arr = run_arguments(plan, nb_max, nth_max, cb_max)
    cin_g = plan.c_in // plan.groups
    dtype = plan.dtype
    pair = (weights.wt, weights.u_all)
    spec = (tables, u_coefs, v_terms, v_counts, a_terms, lay.msize, lay.step, lay.offset, lay.out_stride)
    depth, rows, cols = lay.padded[0], nth_max * int(lay.step[1]) + lay.halo, lay.padded[2]
    tiles_max = nb_max * nth_max * tiles_per_row(lay)
    code, params = _epilogue.args(plan) or (0, np.zeros(3, dtype))  # (applied in ``inverse_nhwc``'s store)

    def work(part):
        buffers = (np.empty((nb_max, depth, rows, cols, cin_g), dtype), np.empty(tiles_max * cin_g, dtype),
                   np.empty(cin_g * cb_max, dtype), np.empty(lay.points * cb_max * tiles_max, dtype),
                   np.empty((lay.row, cb_max), dtype), np.empty(0, dtype))
        packed = None
        for gi, n0, nb, th0, c0, cb in part:
            run_task_nhwc(x5, pair, bias, y5, (gi, cin_g, n0, nb, th0, nth_max, c0, cb), packed != (gi, n0, th0),
                          spec, buffers, code, params)
            packed = (gi, n0, th0)

    run_parallel(work, tasks)


VARIANT = Variant(
    name="gather-winograd-nhwc", form="gather", applies=applies, cost=cost, scratch=scratch_elements,
    pack=pack_kept, run=run, serial=lambda plan: False,
    reason="channels-last Winograd F(2, r) on the output phases: fewer multiplications, contiguous pack and store",
    kernels=lambda: (run_task_nhwc, (transform_weights, relayout)), exact=False, call_pack=pack_call,
    pack_input=pack_input, kept_cost=kept_cost, kept_scratch=kept_scratch, check=safe, channels_last=True,
)
