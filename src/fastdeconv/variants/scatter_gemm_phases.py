"""scatter-gemm-phases: a 1-D layer with a wide stride (a learned overlap-add: an iSTFT-like synthesis, ~1000
channels to one, kernel 1024, stride 256) split by output phase, each task one GEMM per tap block then
contiguous adds into its own outputs (the numba kernels: ``_kernels/phase_runs.py``).

Output ``o`` receives the terms of the taps ``k`` with ``k = (o + start) mod stride`` (plus multiples of the
stride) only, so the taps split by their residue ``k mod stride`` into groups of ``width`` consecutive residues
whose outputs are disjoint: a task (sample, output channel, residue group) owns the outputs of its residues.
For each tap block ``q * stride + [r0, r1)`` (``q`` = 0, 1, ...) it runs the GEMM ``cols = X^T @ W[:, block]``
(pixels x ``width``: the weight's block read in place, no copy) and adds each pixel's ``width`` terms to the
``width`` consecutive outputs they reach (one vector loop). An output element receives at most one term per
block, block after block: its terms in tap order, after its bias, whoever runs the task and however many
workers there are.

scatter-gemm runs such a layer as one chunk (one sample, one output channel) on one worker, cut by the memory
rule into slabs of a few pixels, each of which re-packs the whole weight in its GEMM; here the tasks share the
workers, each packs only its blocks of the weight, and the GEMMs keep all the pixels (``cols`` of one task within
the memory rule: ``width`` residues times the pixels).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._kernels.phase_runs import block_add, owned_fill
from .._kernels.scatter_gemm import WIDE_STRIDE
from .._runtime import run_parallel
from .._threads import max_threads
from . import Variant
from ._epilogue import args as epilogue_args
from ._terms import gemm_applies, gemm_time, same, sizes

# Narrowest residue group worth a GEMM: below it the GEMM's N side leaves BLAS far from its rate
MIN_WIDTH = 16


def _one_d(plan: geo.Plan) -> bool:
    a_d, a_h, a_w = plan.axes
    return all(a.size_in == 1 and a.kernel == 1 and a.size_out == 1 for a in (a_d, a_h)) and a_w.dilation == 1


@lru_cache(maxsize=256)
def width(plan: geo.Plan) -> int:
    """Residues per task (0: the variant does not apply): the most whose ``cols`` (pixels x width) stays
    within a worker's share of one output's size, at most the stride, groups of even width."""
    a = plan.axes[2]
    out_size = plan.batch * plan.c_out * a.size_out
    budget = max(out_size // max_threads(), 1)  # every worker has its own cols
    w = min(a.stride, budget // max(1, a.size_in))
    if w < MIN_WIDTH:
        return 0
    groups = -(-a.stride // w)
    return -(-a.stride // groups)


def applies(plan: geo.Plan) -> bool:
    a = plan.axes[2]
    return (gemm_applies(plan) and plan.groups == 1 and _one_d(plan) and a.stride >= WIDE_STRIDE
            and a.kernel > a.stride and width(plan) > 0)


def _tasks(plan: geo.Plan) -> list[tuple[int, int, int, int]]:
    s = plan.axes[2].stride
    w = width(plan)
    return [(n, c, r0, min(s, r0 + w)) for n in range(plan.batch) for c in range(plan.c_out)
            for r0 in range(0, s, w)]


def scratch_elements(plan: geo.Plan) -> int:
    """Largest scratch (elements) one call allocates (all workers together): one ``cols`` per worker."""
    return max_threads() * plan.axes[2].size_in * width(plan) if applies(plan) else 0


def cost(plan: geo.Plan, threads: int) -> float:
    s = sizes(plan)
    a = plan.axes[2]
    w = width(plan)
    tasks = plan.batch * plan.c_out * -(-a.stride // w)
    workers = max(1, min(threads, tasks))
    blocks = -(-a.kernel // a.stride)
    gemm = gemm_time(2.0 * plan.macs, a.size_in, w, s.cin_g, 1, s.scale)
    adds = plan.c_out * a.kernel * plan.batch * a.size_in * M.COL2IM_WIDE_ELEMENT
    fill = s.y_elems * M.PHASE_STORE_ELEMENT * (2 if plan.activation is not None else 1)
    return (gemm + adds + fill + tasks * blocks * M.LAUNCH_GEMM) / workers + M.LAUNCH_PARALLEL


def run(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Transposed convolution of a wide-stride 1-D layer by output phase into ``y5`` (overwritten); ``w5`` is
    the weight itself (read in place by blocks of columns)."""
    a = plan.axes[2]
    s, k, start, pix = a.stride, a.kernel, a.start, a.size_in
    w2 = w5.reshape(plan.c_in, plan.c_out * k)
    ep = epilogue_args(plan)
    code, params = (-1, np.ones(3, plan.dtype)) if ep is None else ep
    w = width(plan)

    def work(part):
        buf = np.empty(pix * w, plan.dtype)
        for n, c, r0, r1 in part:
            owned_fill(y5, n, c, bias[c], r0, r1, s, start, code, params, False)
            xt = x5[n, :, 0, 0].T  # (pixels, C_in), a view
            for q0 in range(0, k, s):
                lo, hi = q0 + r0, min(q0 + r1, k)
                if lo >= hi:
                    break
                cols = buf[:pix * (hi - lo)].reshape(pix, hi - lo)
                np.matmul(xt, w2[:, c * k + lo:c * k + hi], out=cols)
                block_add(cols, y5, n, c, lo - start, s)
            if ep is not None:  # the task's outputs are final
                owned_fill(y5, n, c, bias[c], r0, r1, s, start, code, params, True)

    run_parallel(work, _tasks(plan))


VARIANT = Variant(
    name="scatter-gemm-phases", form="scatter", applies=applies, cost=cost, scratch=scratch_elements, pack=same,
    run=run, serial=lambda plan: False,
    reason="wide-stride 1-D layer split by output phase: one GEMM per tap block, tasks on every worker",
    kernels=lambda: (owned_fill, block_add), exact=True, call_pack=same,
)
