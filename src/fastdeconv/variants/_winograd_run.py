"""gather-winograd's weights (transformed once and shared, or re-laid out per tap; kept by an operator or made per
call), the cold-compile helper and the driver that hands the chunks to the workers."""

from __future__ import annotations

from math import prod as _prod
from typing import NamedTuple

import numpy as np
from numba import from_dtype, typeof, types

from .. import _compiled
from .. import _geometry as geo
from .._caches import memo
from .._kernels.winograd import (
    PACK_CHANNELS,
    TRANSFORM_ROWS,
    input_point,
    inverse,
    pack,
    relayout,
    run_task,
    transform_weights,
    weight_point,
)
from .._runtime import run_parallel
from .._threads import max_threads
from . import _epilogue
from ._winograd_math import weight_transform
from ._winograd_schedule import chunk_choice, kept_choice, layout, tiles_per_row


@memo(256)
def run_arguments(plan: geo.Plan, nb_max: int, nth_max: int, cb_max: int) -> tuple:
    """What ``gather_winograd`` hands its kernels that depends on the plan and its chunk sizes alone, built
    once: the chunk list, the per-sub-phase table, the transform coefficients in the plan's dtype, the tap
    counts. (The arrays stay writeable: numba compiles read-only arrays separately. The kernels only read
    them.)"""
    lay = layout(plan)
    cout_g = plan.c_out // plan.groups
    tasks = [(gi, n0, min(nb_max, plan.batch - n0), th0, c0, min(cb_max, cout_g - c0))
             for gi in range(plan.groups) for n0 in range(0, plan.batch, nb_max)
             for th0 in range(0, lay.tile_rows, nth_max) for c0 in range(0, cout_g, cb_max)]
    tables = np.stack([np.stack([ph.phase, ph.mcount, ph.ntiles, np.array([ph.wphase, 0, 0], np.int64)])
                       for ph in lay.phases])
    most = max(len(t) for ph in lay.phases for t in ph.v_terms)
    v_terms = np.zeros((len(lay.phases), lay.points, most, 4), plan.dtype)
    v_counts = np.zeros((len(lay.phases), lay.points), np.int64)
    for p, ph in enumerate(lay.phases):
        for xi, t in enumerate(ph.v_terms):
            v_terms[p, xi, :len(t)] = t
            v_counts[p, xi] = len(t)
    return (tasks, tables, lay.u_coefs.astype(plan.dtype), v_terms, v_counts, lay.a_terms.astype(plan.dtype),
            np.array(lay.r, np.int64))


class WeightSpec(NamedTuple):
    """Everything the weights ``run`` reads are made from, besides the weight itself (``_weights``): a kept
    pack's key (``pack_input``) and the one argument of the function that makes it, so that the two cannot
    drift apart. Plans of one operator with equal specs share their kept weights."""

    dtype: np.dtype
    groups: int
    wtaps: tuple        # ``Layout.wtaps`` as nested tuples: the weight phases (the output phases that have
    #                     outputs: fewer where an output axis is shorter than the stride) and their taps
    r: tuple[int, int, int]
    msize: tuple[int, int, int]  # the tile sizes, which pick the transform (they depend on the output's size)
    shared: bool
    cb: int             # the channel block of shared weights (0: not shared)
    kept: bool          # made once for an operator (its chunks: ``kept_choice``) or for one call (``chunk_choice``)


class Weights(NamedTuple):
    """The weight as ``run`` reads it: every (weight phase, point)'s transformed weights in blocks of ``spec.cb``
    output channels (``spec.shared``), or the tap-major relayout ``wt`` the chunks transform from."""

    spec: WeightSpec  # what they were made from (``run`` checks it against its plan's)
    u_all: np.ndarray
    wt: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.u_all.nbytes + self.wt.nbytes


def weight_spec(plan: geo.Plan, kept: bool) -> WeightSpec:
    """The spec of the weights a call of ``plan`` reads (from ``chunk_choice``'s chunks as they are now: not cached
    apart from them)."""
    found = kept_choice(plan) if kept else chunk_choice(plan)
    if found is None:  # (the cost model never picks the variant then: a caller's bug)
        raise ValueError("gather-winograd: no chunk of this plan fits the memory rule")
    wtaps, r, msize = _layout_key(plan)
    shared = bool(found[3])
    # (the re-laid-out weight does not depend on the chunks' channel block: only shared weights are blocked)
    return WeightSpec(plan.dtype, plan.groups, wtaps, r, msize, shared, int(found[2]) if shared else 0, kept)


@memo(256)
def _layout_key(plan: geo.Plan) -> tuple[tuple, tuple[int, int, int], tuple[int, int, int]]:
    """(wtaps, r, msize) of the plan's layout as tuples (what the weights are made from)."""
    lay = layout(plan)
    return (tuple(tuple(tuple(row) for row in phase) for phase in lay.wtaps.tolist()), lay.r,
            tuple(int(m) for m in lay.msize))


def pack_input(plan: geo.Plan) -> WeightSpec:
    """The key of an operator's kept weights for ``plan`` (what ``pack_kept`` makes them from)."""
    return weight_spec(plan, True)


def make_weights(spec: WeightSpec, w5: np.ndarray, runner=None) -> Weights:
    """The weights ``run`` reads, made from ``spec`` and the weight (C_in, C_out_g, kd, kh, kw) alone. ``runner``:
    the task kernel that will read them (``run_task``, or the channels-last variant's), compiled beside the weight
    step on a cold first call (``_compile_cold``)."""
    runner = run_task if runner is None else runner
    dtype = spec.dtype
    taps = np.array(spec.wtaps, np.int64)
    r_arr = np.array(spec.r, np.int64)
    u_coefs = weight_transform(spec.msize, spec.r).astype(dtype)
    c_in, cout_g = w5.shape[0], w5.shape[1]
    if spec.shared:
        u_all = np.empty(len(taps) * u_coefs.shape[0] * c_in * cout_g, dtype)
        args = (w5, taps, r_arr, u_coefs, spec.groups, spec.cb, 0, c_in,
                np.empty(_prod(spec.r) * TRANSFORM_ROWS * cout_g, dtype), u_all)
        _compile_cold(transform_weights, args, runner)
        # in the calling thread: it is a single pass over the weight, shorter than one more launch of the
        # workers costs
        transform_weights(*args)
        return Weights(spec, u_all, np.empty((1, 1, 0, 0), dtype))  # run_task reads u_all
    wt = np.empty((len(taps), _prod(spec.r), c_in, cout_g), dtype)
    _compile_cold(relayout, (w5, taps, r_arr, 0, 0, wt), runner)
    step = -(-c_in // max_threads())
    run_parallel(lambda part: [relayout(w5, taps, r_arr, lo, min(lo + step, c_in), wt) for lo in part],
                 list(range(0, c_in, step)))
    return Weights(spec, np.empty(0, dtype), wt)


@memo(64)
def run_task_signature(dtype: np.dtype) -> tuple:
    """The numba types ``run`` calls ``run_task`` with (``tests/test_winograd.py`` checks them against a call)."""
    a = [types.Array(from_dtype(np.dtype(dtype)), ndim, "C") for ndim in range(6)]  # a[n]: n-D float array
    ints = [types.Array(types.int64, ndim, "C") for ndim in range(4)]
    spec = types.Tuple((ints[3], a[2], a[4], ints[2], a[3]) + (ints[1],) * 4)
    buffers = types.Tuple((a[5], a[1], a[1], a[1], a[2], a[1]))
    return (a[5], types.Tuple((a[4], a[1])), a[1], a[5], types.UniTuple(types.int64, 8), types.boolean, spec,
            buffers, types.int64, a[1])


@memo(64)
def run_task_callees(dtype: np.dtype) -> tuple[tuple, tuple]:
    """``run_task``'s large callees with the numba types its calls give them, split in two halves of about equal
    compile time: (compiled in this process, compiled beside it). ``tests/test_winograd.py`` compiles
    ``run_task`` without a cache and checks them against what it called."""
    f = [types.Array(from_dtype(np.dtype(dtype)), ndim, "C") for ndim in range(6)]
    i1, i64 = types.Array(types.int64, 1, "C"), types.int64
    here = ((pack, (f[5], i64, i64, i64, i1, i64, f[5], f[1])),
            (weight_point, (f[4], i64, f[1], i64, i64, f[2])),
            (input_point, (f[5], i64, f[2], i1, i1, f[2])))
    beside = ((inverse, (f[3], f[3], f[2], f[5], f[1], types.UniTuple(i64, 4), types.UniTuple(i1, 3), i1, i1, i64,
                         f[1])),)
    return here, beside


def _compile_cold(first, args: tuple, runner) -> None:
    """On a cold first call (neither ``run_task`` nor ``first``, the weight step, compiled or cached for these
    types), compile on two cores: a child compiles ``run_task``'s inverse transform while this process compiles
    ``first`` and the other callees, then ``run_task`` itself (``_compiled.compile_split``); for another runner
    (channels-last), the child compiles ``first`` while this process compiles the runner. The kernels and their
    results are the ones the call would compile; the call itself runs them as always."""
    dtype = args[0].dtype
    ready = _READY.setdefault(runner, set())
    if dtype in ready:  # (the hot path: one set lookup; compiled once, a kernel stays compiled)
        return
    signature = run_task_signature(dtype)  # (the channels-last runner takes run_task's argument types)
    first_pair = (first, tuple(typeof(a) for a in args))
    if runner is run_task:
        here, beside = run_task_callees(np.dtype(dtype))
        _compiled.compile_split(runner, signature, (first_pair, *here), beside)
    else:
        _compiled.compile_split(runner, signature, (), (first_pair,))
    ready.add(dtype)


_READY: dict = {}  # runner -> the dtypes for which it is compiled or cached in this process


def pack_call(plan: geo.Plan, w5: np.ndarray) -> Weights:
    """The weight-only work of one call (its chunks: ``chunks(plan)``)."""
    return make_weights(weight_spec(plan, False), w5)


def pack_kept(spec: WeightSpec, w5: np.ndarray) -> Weights:
    """The weight-only work an operator does once, for the plans whose ``pack_input`` is ``spec`` (their chunks:
    ``kept_choice``)."""
    return make_weights(spec, w5)


def gather_winograd(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Transposed convolution, gather form with Winograd F(2, r) on the output phases, into ``y5``."""
    run(plan, x5, pack_call(plan, w5), bias, y5)


def run(plan: geo.Plan, x5: np.ndarray, weights: Weights, bias: np.ndarray, y5: np.ndarray) -> None:
    """``gather_winograd`` on weights packed by ``pack_call`` or ``pack_kept`` (whose chunks it runs)."""
    lay = layout(plan)
    if weights.spec != weight_spec(plan, weights.spec.kept):  # (a bug, not the user's)
        raise ValueError("gather-winograd: the packed weights were made for another plan (phases, tiles or chunks)")
    found = kept_choice(plan) if weights.spec.kept else chunk_choice(plan)
    nb_max, nth_max, cb_max, shared = found
    tasks, tables, u_coefs, v_terms, v_counts, a_terms, r_arr = run_arguments(plan, nb_max, nth_max, cb_max)
    cin_g = plan.c_in // plan.groups
    dtype = plan.dtype
    pair = (weights.wt, weights.u_all)  # run_task's ``weights``
    spec = (tables, u_coefs, v_terms, v_counts, a_terms, lay.msize, lay.step, lay.offset, lay.out_stride)
    depth, rows, cols = lay.padded[0], nth_max * int(lay.step[1]) + lay.halo, lay.padded[2]
    tiles_max = nb_max * nth_max * tiles_per_row(lay)
    # the epilogue runs in the kernel's store (``inverse``), once per output row of a phase
    code, params = _epilogue.args(plan) or (0, np.zeros(3, dtype))

    def work(part):
        xp_buf = np.empty((nb_max, depth, rows, cols, cin_g), dtype)
        v_buf = np.empty(tiles_max * cin_g, dtype)
        u_buf = np.empty(cin_g * cb_max, dtype)
        m_buf = np.empty(lay.points * cb_max * tiles_max, dtype)
        buf = np.empty((lay.row, cb_max), dtype)
        tile = np.empty(PACK_CHANNELS * plan.axes[2].size_in, dtype)
        buffers = (xp_buf, v_buf, u_buf, m_buf, buf, tile)
        packed = None
        for gi, n0, nb, th0, c0, cb in part:  # (Python ints: the ``chunk`` tuple is int64 in the kernel)
            run_task(x5, pair, bias, y5, (gi, cin_g, n0, nb, th0, nth_max, c0, cb), packed != (gi, n0, th0), spec,
                     buffers, code, params)
            packed = (gi, n0, th0)

    run_parallel(work, tasks)
