"""gather-gemm: per output phase, im2col of the undilated input and one GEMM per block of output channels (the
numba kernels: ``_kernels/gather_gemm.py``, which describes the phase decomposition).

GEMM columns are the phase's output rows (sample, md, mh) times its row length; chunks are (phase, group,
output-channel block, block of rows), sized so the scratch (the block's phase weights, im2col block, phase
block) of all workers stays within one output's size -- weight-heavy layers such as DCGAN's first block
split their output channels. Chunks depend on shapes and numba's pool size only.
"""

from __future__ import annotations

import dataclasses
from math import prod as _prod

import numpy as np

from .. import _geometry as geo
from .. import _model as M
from .._caches import memo
from .._kernels.epilogue import bias_activate
from .._kernels.gather_gemm import im2col, phase_store, phase_weights
from .._runtime import run_parallel
from .._scan import finite_weights
from .._threads import max_threads
from . import Variant, _epilogue
from ._terms import gemm_applies, gemm_time, same, sizes

# Target GEMM width (columns) per chunk: wide enough for BLAS, small enough to stay in cache.
_CHUNK_ELEMENTS = 1 << 21


@memo(256)
def phase_table(plan: geo.Plan) -> list[tuple[np.ndarray, ...]]:
    """Per phase with outputs and taps on every axis: (phase (3,), M (3,), tap counts (3,), taps (3, T_max),
    bases (3, T_max)), int64. At most ``kernel`` phases per axis have a tap (``Axis.tap_phases``), so the table
    never grows with the stride or dilation values; the other phases get only the bias (``bias_phases``)."""
    per_axis = [a.tap_phases() for a in plan.axes]
    t_max = max(1, max((len(e[2]) for entries in per_axis for e in entries), default=1))
    table = []
    for ed in per_axis[0]:
        for eh in per_axis[1]:
            for ew in per_axis[2]:
                es = (ed, eh, ew)
                taps = np.zeros((3, t_max), np.int64)
                bases = np.zeros((3, t_max), np.int64)
                for i, e in enumerate(es):
                    taps[i, :len(e[2])] = e[2]
                    bases[i, :len(e[3])] = e[3]
                table.append((np.array([e[0] for e in es], np.int64), np.array([e[1] for e in es], np.int64),
                              np.array([len(e[2]) for e in es], np.int64), taps, bases))
    return table


def bias_phases(plan: geo.Plan) -> bool:
    """Whether some output element lies in a phase no tap reaches on some axis (it gets only the bias)."""
    return any(len(a.tap_phases()) < a.phase_count for a in plan.axes)


@memo(256)
def chunks(plan: geo.Plan) -> tuple[int, int]:
    """(phase output rows, output channels) per GEMM chunk: all workers' scratch within one output's size.

    The phase weights of one output-channel block take at most half of a worker's share (weight-heavy layers
    such as DCGAN's first block split their output channels); the rows fill the rest, up to a cache target.
    """
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    table = phase_table(plan)
    out_size = max(1, plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes))
    t_max = max((int(np.prod(e[2])) for e in table), default=1)
    m_w = max(1, max((int(e[1][2]) for e in table), default=1))
    budget = out_size // max_threads()  # every worker has its own scratch
    cb = max(cout_g, 1)
    while cb > 1 and cin_g * cb * t_max > budget // 2:
        cb = -(-cb // 2)
    per_row = (cin_g * t_max + cb) * m_w
    target = min(max(_CHUNK_ELEMENTS, per_row), max(budget - cin_g * cb * t_max, per_row))
    total_rows = max((int(plan.batch * e[1][0] * e[1][1]) for e in table), default=1)
    return int(max(1, min(total_rows, target // per_row))), cb


def scratch_elements(plan: geo.Plan) -> int:
    """Largest scratch (elements) one call allocates (all workers together)."""
    cin_g = plan.c_in // plan.groups
    table = phase_table(plan)
    t_max = max((int(np.prod(e[2])) for e in table), default=1)
    m_w = max((int(e[1][2]) for e in table), default=1)
    rows, cb = chunks(plan)
    return max_threads() * (cin_g * cb * t_max + (cin_g * t_max + cb) * rows * m_w)


class PhaseWeights(tuple):
    """Every phase's weights, ``(g, C_out_g, C_in_g * T)`` per phase (empty where no tap reaches the phase):
    what ``phase_weights`` makes chunk by chunk, made once (an operator keeps it). ``source`` is the plan they
    were made from (``pack_input``)."""

    source: geo.Plan

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self)


@memo(256)
def pack_input(plan: geo.Plan) -> geo.Plan:
    """The plan reduced to what :func:`pack` reads, so that plans with equal reductions share one pack (an
    operator's key) and no plan gets another's.

    ``pack`` reads the tap lists of ``phase_table``: per axis, which output phases have outputs *and* taps and
    which taps reach each. The phases with outputs are the ``min(stride, size_out)`` first (an output axis
    shorter than the stride has fewer), and a tap's phase depends on ``start`` only modulo the stride (the
    Dask twin's blocks, whose starts differ by multiples of it, share one pack). Sizes, batch and bases are
    not read."""
    axes = tuple(geo.Axis(1, a.kernel, a.stride, a.dilation, a.start % a.stride, min(a.stride, a.size_out))
                 for a in plan.axes)
    return dataclasses.replace(plan, batch=1, batched=True, axes=axes, activation=None)


def pack(plan: geo.Plan, w5: np.ndarray) -> PhaseWeights:
    """The phase weights of every (phase, group) of ``plan`` (an operator's: ``pack_input`` of its call's
    plan): the weight's own size in all."""
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    mats = []
    for _phase, _m_shape, counts, taps, _bases in phase_table(plan):
        n_t = int(counts[0] * counts[1] * counts[2])
        m = np.empty((g, cout_g, cin_g * n_t), plan.dtype)
        if n_t:
            for gi in range(g):
                phase_weights(w5, gi * cin_g, cin_g, 0, cout_g, taps, counts, m[gi])
        mats.append(m)
    packed = PhaseWeights(mats)
    packed.source = pack_input(plan)  # (the plan itself when it is one: the reduction keeps a reduced plan)
    return packed


def gather_gemm(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray | PhaseWeights, bias: np.ndarray,
                y5: np.ndarray) -> None:
    """Transposed convolution, gather form by output phases with BLAS, into ``y5`` (overwritten).

    ``w5`` is the weight itself (a one-off call: each chunk re-lays out its phase weights, within the memory
    rule) or its ``pack`` (an operator: each chunk reads its block of the kept phase weights). The GEMMs get the
    same matrices either way."""
    kept = isinstance(w5, PhaseWeights)
    if kept and w5.source != pack_input(plan):  # (a bug, not the user's)
        raise ValueError("gather-gemm: the phase weights were made for another plan's phases")
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    table = phase_table(plan)
    rows_per_chunk, cb_max = chunks(plan)
    stride = np.array([a.stride for a in plan.axes], np.int64)
    t_max = max((int(np.prod(e[2])) for e in table), default=1)
    m_w_max = max((int(e[1][2]) for e in table), default=1)
    ep = _epilogue.args(plan)
    # with an epilogue each GEMM result gets the bias and the activation in the worker (``bias_activate``, still
    # in cache) and the store adds a zero bias; elements no tap reaches hold the activated bias
    store_bias = bias if ep is None else np.zeros_like(bias)
    bias_out = _epilogue.bias_vector(plan, bias)
    if bias_phases(plan):  # phases no tap reaches: the bias, then the phases with taps overwrite theirs
        y5[...] = bias_out.reshape((1, -1, 1, 1, 1))
    x_pix = x5.shape[2] * x5.shape[3] * x5.shape[4]
    tasks = []
    for index, (phase, m_shape, counts, _taps, bases) in enumerate(table):
        if not m_shape.all():
            continue
        n_t = int(counts[0] * counts[1] * counts[2])
        if cin_g == 0:  # no input channel in a group: bias only
            sl = tuple(slice(int(r), None, int(s)) for r, s in zip(phase, stride))
            y5[(slice(None), slice(None)) + sl] = bias_out.reshape((1, -1, 1, 1, 1))
            continue
        total = plan.batch * int(m_shape[0] * m_shape[1])
        # the undilated input itself is the im2col block (one tap, no shift, covering the input)
        identity = (n_t == 1 and not bases.any() and plan.batch == 1 and tuple(m_shape) == x5.shape[2:]
                    and rows_per_chunk >= total)
        tasks += [(index, gi, c0, min(cb_max, cout_g - c0), row0, min(rows_per_chunk, total - row0), identity)
                  for gi in range(g) for c0 in range(0, cout_g, cb_max) for row0 in range(0, total, rows_per_chunk)]

    def work(part):
        wp_buf = np.empty(0 if kept else cin_g * cb_max * t_max, plan.dtype)
        col_buf = np.empty(cin_g * t_max * rows_per_chunk * m_w_max, plan.dtype)
        tmp_buf = np.empty(cb_max * rows_per_chunk * m_w_max, plan.dtype)
        ready = None
        for index, gi, c0, cb, row0, n_rows, identity in part:
            phase, m_shape, counts, taps, bases = table[index]
            n_t = int(counts[0] * counts[1] * counts[2])
            if kept:
                wp = w5[index][gi, c0:c0 + cb]
            elif ready != (index, gi, c0):
                wp = wp_buf[:cb * cin_g * n_t].reshape(cb, cin_g * n_t)
                phase_weights(w5, gi * cin_g, cin_g, c0, cb, taps, counts, wp)
                ready = (index, gi, c0)
            width = n_rows * int(m_shape[2])
            if identity:
                cols = x5[0, gi * cin_g:(gi + 1) * cin_g].reshape(cin_g, x_pix)
            else:
                cols = col_buf[:cin_g * n_t * width].reshape(cin_g * n_t, width)
                im2col(x5, gi * cin_g, cin_g, bases, counts, m_shape, row0, n_rows, cols)
            tmp = tmp_buf[:cb * width].reshape(cb, width)
            np.matmul(wp, cols, out=tmp)
            if ep is not None:
                bias_activate(tmp, bias, gi * cout_g + c0, ep[0], ep[1])
            phase_store(tmp, y5, store_bias, gi * cout_g + c0, cb, phase, m_shape, stride, row0, n_rows)

    run_parallel(work, tasks)


def cost(plan: geo.Plan, threads: int) -> float:
    """Weight relayout; per phase and output-channel block, im2col (C_in_g*T, cols), GEMM (cb, cols, cin_g*T),
    store."""
    s = sizes(plan)
    g = plan.groups
    table = phase_table(plan)
    rows, cb = chunks(plan)
    c_blocks = -(-s.cout_g // cb)
    steps = s.w_elems * M.PHASE_RELAYOUT_ELEMENT  # (weighted by GATHER_GEMM_STEPS below)
    total = 0.0
    n_chunks = 0
    for _phase, m_shape, counts, _taps, _bases in table:
        n_t = int(counts[0] * counts[1] * counts[2])
        m_rows = plan.batch * int(m_shape[0] * m_shape[1])
        m_w = int(m_shape[2])
        if n_t == 0 or m_rows * m_w == 0:
            continue
        width = m_rows * m_w
        phase_macs = s.cin_g * n_t * s.cout_g * width * g
        phase_chunks = g * c_blocks * -(-m_rows // rows)
        total += g * gemm_time(2.0 * phase_macs / g, cb, min(rows, m_rows) * m_w, s.cin_g * n_t, 1, s.scale)
        steps += c_blocks * plan.c_in * n_t * (width * M.IM2COL_ELEMENT + m_rows * M.IM2COL_ROW)
        steps += plan.c_out * width * M.PHASE_STORE_ELEMENT
        total += phase_chunks * M.LAUNCH_GEMM
        n_chunks += phase_chunks
    if bias_phases(plan):  # the bias stored first into every output (some phases have no tap)
        steps += s.y_elems * M.PHASE_STORE_ELEMENT
    total += steps * M.GATHER_GEMM_STEPS
    return total / max(1, min(threads, n_chunks)) + M.LAUNCH_PARALLEL


VARIANT = Variant(
    name="gather-gemm", form="gather", applies=gemm_applies, cost=cost, scratch=scratch_elements, pack=pack,
    run=gather_gemm, serial=lambda plan: False, reason="channel contraction on BLAS",
    kernels=lambda: (phase_weights, im2col, phase_store), exact=False, call_pack=same,
    pack_input=pack_input, check=finite_weights,
)
