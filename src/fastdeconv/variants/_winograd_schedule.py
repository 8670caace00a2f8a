"""gather-winograd's schedule: the per-plan layout (sub-phases, tiles, transform coefficients), the chunk search
under the memory rule, the cost model it ranks chunks by, and the scratch of a call (one-off or with the weight
packed once)."""

from __future__ import annotations

from math import prod as _prod
from typing import NamedTuple

import numpy as np

from .. import _geometry as geo
from .. import _model
from .._caches import memo
from .._kernels.winograd import PACK_CHANNELS
from .._threads import max_threads
from ._winograd_math import TILES, matrices, tile_size, weight_transform

# --------------------------------------------------------------------------- geometry


class Phase(NamedTuple):
    phase: np.ndarray   # (3,) output offset of the (sub-)phase
    mcount: np.ndarray  # (3,) outputs of the sub-phase per axis
    ntiles: np.ndarray  # (3,) tiles per axis (ceil(mcount / M))
    wphase: int         # index of its output phase's re-laid-out weights (sub-phases share them)
    v_terms: tuple      # per point: (terms, 4) nonzero (B^T product, depth, row, column) in the padded buffer


class Layout(NamedTuple):
    phases: tuple[Phase, ...]
    wtaps: np.ndarray     # (output phases, 3, r_max) kernel index of tap u per axis (-1 unused)
    msize: np.ndarray     # (3,) M per axis
    step: np.ndarray      # (3,) input distance between neighbouring tiles (M x sub-kernel dilation)
    out_stride: np.ndarray  # (3,) output distance between neighbouring sub-phase outputs (stride x dilation)
    points: int           # alpha_d * alpha_h * alpha_w
    r: tuple[int, int, int]
    u_coefs: np.ndarray   # (points, taps) coefficients of the weight transform
    a_terms: np.ndarray   # (M_d * M_h * M_w, max terms, 2) nonzero (A^T product, point) per output, zero-padded
    tiles: int            # max tiles per sample over the phases
    row: int              # max outputs per phase row (tiles along the last axis x M)
    offset: np.ndarray    # (3,) padding before the input in the packed buffer
    padded: tuple[int, int, int]  # (depth, rows, columns) of the packed buffer per sample
    halo: int             # packed rows a block of n tile rows needs beyond n * step_h
    tile_rows: int        # max tile rows over the phases


def _axis_phases(a: geo.Axis):
    """Per output phase of an axis that has outputs: (phase, outputs, first source, taps in source order), and
    the spacing of the sources (the sub-kernel's dilation), or None when the phases differ in tap count or
    spacing (a phase with outputs but no tap among them: it has 0)."""
    phases = a.tap_phases()
    if len(phases) != a.phase_count:  # some phase with outputs has no tap (at most ``kernel`` have one)
        return None
    entries, counts, spacings = [], set(), set()
    for ph, mcount, ks, bases in phases:
        order = sorted(range(len(ks)), key=lambda i: bases[i])
        srcs = [bases[i] for i in order]
        spacing = srcs[1] - srcs[0] if len(srcs) > 1 else 1
        if any(q - p != spacing for p, q in zip(srcs, srcs[1:])):
            return None
        counts.add(len(ks))
        if len(ks) > 1:
            spacings.add(spacing)
        entries.append((ph, mcount, srcs[0], [ks[i] for i in order]))
    if len(counts) != 1 or len(spacings) > 1:
        return None
    return entries, (spacings.pop() if spacings else 1)


# The packed input of an axis may exceed its input by this many elements beyond twice (input + kernel): a
# sub-kernel whose sources lie farther apart (huge dilations) reads mostly zeros, and its buffers would grow with
# the dilation value rather than with the sizes.
PADDED_SLACK = 64


def _weight_taps(entries: list, r_max: int) -> np.ndarray:
    """``wtaps[weight phase, axis]``: the taps of each (D, H, W) weight phase (``entries[axis]``: the axis's
    phases, ``_axis_phases``' entries) per axis, padded with -1 to ``r_max``."""
    n_wph = [len(e) for e in entries]
    wtaps = np.full((n_wph[0] * n_wph[1] * n_wph[2], 3, r_max), -1, np.int64)
    for i, ed in enumerate(entries[0]):
        for j, eh in enumerate(entries[1]):
            for k, ew in enumerate(entries[2]):
                for axis, e in enumerate((ed, eh, ew)):
                    wtaps[(i * n_wph[1] + j) * n_wph[2] + k, axis, :len(e[3])] = e[3]
    return wtaps


@memo(256)
def layout(plan: geo.Plan) -> Layout | None:
    """Sub-phases, tile sizes and transform coefficients, or None when Winograd does not apply (or cannot help).

    It applies to layers whose output phases all have the same number ``r`` in {1, 2, 3} of taps per axis
    with evenly spaced sources (``kernel % stride == 0`` gives this; dilation spaces them), with ``r >= 2`` on
    some axis. Sources ``delta`` apart split a phase into ``delta`` sub-phases (outputs ``m = rho + delta *
    m'``), each a dense correlation of every ``delta``-th input.
    """
    if plan.c_in // plan.groups == 0 or plan.c_out // plan.groups == 0:
        return None
    per_axis, rs, deltas = [], [], []
    for a in plan.axes:
        found = _axis_phases(a)
        if found is None or len(found[0][0][3]) not in TILES:
            return None
        entries, delta = found
        # sub-phases: (output offset, outputs, first source, output phase)
        subs = []
        for ph, mcount, base, _ks in entries:
            for rho in range(min(delta, mcount)):  # the sub-phases with outputs
                subs.append((ph + a.stride * rho, -(-(mcount - rho) // delta), base + rho, ph))
        per_axis.append((entries, subs))
        rs.append(len(entries[0][3]))
        deltas.append(delta)
    if max(rs) < 2:
        return None
    mats = [matrices(tile_size(r, [e[1] for e in subs]), r) for r, (_, subs) in zip(rs, per_axis)]
    msize = np.array([m[2].shape[0] for m in mats], np.int64)
    step = msize * np.array(deltas, np.int64)
    alpha = [m[0].shape[0] for m in mats]
    # the packed buffer covers the input and every tile's alpha-wide (delta-spaced) patch
    offset, padded = np.zeros(3, np.int64), [1, 1, 1]
    for axis in range(3):
        lo, hi = 0, plan.axes[axis].size_in
        for _o, mcount, base, _ph in per_axis[axis][1]:
            if mcount:
                lo = min(lo, base)
                hi = max(hi, (-(-mcount // msize[axis]) - 1) * step[axis] + base + deltas[axis] * (alpha[axis] - 1) + 1)
        offset[axis], padded[axis] = -lo, hi - lo
        a = plan.axes[axis]
        if padded[axis] > 2 * (a.size_in + a.kernel) + PADDED_SLACK:
            return None
    grid = [(a, b, c) for a in range(alpha[0]) for b in range(alpha[1]) for c in range(alpha[2])]
    n_wph = [len(per_axis[axis][0]) for axis in range(3)]
    wtaps = _weight_taps([entries for entries, _ in per_axis], max(rs))

    def product(which, index, values):
        """prod over axes of mats[axis][which][index[axis], values[axis]]"""
        return mats[0][which][index[0], values[0]] * mats[1][which][index[1], values[1]] * \
            mats[2][which][index[2], values[2]]

    phases = []
    for sd in per_axis[0][1]:
        for sh in per_axis[1][1]:
            for sw in per_axis[2][1]:
                subs = (sd, sh, sw)
                mcount = np.array([e[1] for e in subs], np.int64)
                v_terms = []
                for point in grid:
                    terms = [(product(0, point, v), *(deltas[ax] * v[ax] + subs[ax][2] + offset[ax] for ax in range(3)))
                             for v in grid if product(0, point, v) != 0]
                    v_terms.append(np.array(terms, np.float64).reshape(-1, 4))
                wphase = (sd[3] * n_wph[1] + sh[3]) * n_wph[2] + sw[3]
                phases.append(Phase(np.array([e[0] for e in subs], np.int64), mcount, -(-mcount // msize), wphase,
                                    tuple(v_terms)))
    u_coefs = weight_transform(tuple(int(m) for m in msize), tuple(rs))
    outs = [(a, b, c) for a in range(msize[0]) for b in range(msize[1]) for c in range(msize[2])]
    a_lists = [[(product(2, o, point), k) for k, point in enumerate(grid) if product(2, o, point) != 0] for o in outs]
    a_terms = np.zeros((len(outs), max(len(t) for t in a_lists), 2))
    for i, t in enumerate(a_lists):
        a_terms[i, :len(t)] = t
    tiles = max(int(np.prod(ph.ntiles)) for ph in phases)
    row = max(int(ph.ntiles[2] * msize[2]) for ph in phases)
    last_row = max(int(t[:, 2].max()) for ph in phases for t in ph.v_terms)  # deepest packed row of tile row 0
    tile_rows = max(int(ph.ntiles[1]) for ph in phases)
    out_stride = np.array([a.stride * d for a, d in zip(plan.axes, deltas)], np.int64)
    return Layout(tuple(phases), wtaps, msize, step, out_stride, len(grid), tuple(rs), u_coefs, a_terms, tiles,
                  row, offset, tuple(padded), last_row + 1 - int(step[1]), tile_rows)


def weight_elements(plan: geo.Plan) -> int:
    """Elements of the re-laid-out weight (the weight's own size)."""
    return plan.c_in * (plan.c_out // plan.groups) * _prod(a.kernel for a in plan.axes)


def tiles_per_row(lay: Layout) -> int:
    """Tiles per tile row, all depth tiles included."""
    return max(int(ph.ntiles[0] * ph.ntiles[2]) for ph in lay.phases)


# Share of the output's size the shared transformed weights may take; the rest of the one-output memory rule is
# left to the workers' chunks.
SHARED_FRACTION = 0.75
# Most elements an operator's kept transformed weights may take, relative to the weight (``chunk_choice(kept=True)``)
KEPT_FACTOR = 3


def _shared_elements(plan: geo.Plan, lay: Layout) -> int:
    """Elements of every (weight phase, point)'s transformed weights: ``phases * alpha^rank * C_in * C_out_g``."""
    return len(lay.wtaps) * lay.points * plan.c_in * (plan.c_out // plan.groups)


def shares_weights(plan: geo.Plan) -> bool:
    """Whether the transformed weights of every (weight phase, point) are computed once per call and shared by
    the workers, instead of by every chunk for every sub-phase and point. They are made straight from the weight
    (``transform_weights``, one pass, no relayout, in the calling thread) and may take ``SHARED_FRACTION`` of the
    output's size; the cost model weighs making them against the per-chunk transforms they save (``chunk_choice``).
    Chunks can be
    small enough for their M blocks and packed rows to stay in the core's L2 cache without transforming the
    weights again per chunk (DCGAN's 16x16 -> 32x32 block, dilated 3x3 layers).
    Weight-heavy layers (DCGAN's first block: ``36 * C_in * C_out`` is 4.5x its output) transform per chunk."""
    found = chunk_choice(plan)
    return found is not None and found[3]


def _held(plan: geo.Plan, shared: bool) -> int:
    """Elements the call holds beside the workers' scratch: the shared transformed weights (made straight from
    the weight, so nothing else comes first) or the re-laid-out weight."""
    return _shared_elements(plan, layout(plan)) if shared else weight_elements(plan)


def _worker_scratch(lay: Layout, cin_g: int, nb: int, nth: int, cb: int) -> int:
    """Elements one worker allocates: packed rows, V^T, U, the M blocks of a phase, one output row per channel,
    the transpose tile of ``pack``."""
    tiles = nb * nth * tiles_per_row(lay)
    packed = nb * lay.padded[0] * (nth * int(lay.step[1]) + lay.halo) * lay.padded[2] * cin_g
    return packed + tiles * cin_g + cin_g * cb + lay.points * cb * tiles + cb * lay.row + PACK_CHANNELS * lay.padded[2]


# The estimate's constants are ``_model.WINOGRAD_*`` (rates from the profile times fixed ratios).


def schedule_cost(plan: geo.Plan, lay: Layout, nb: int, nth: int, cb: int, workers: int, shared: bool,
          kept: bool = False, m=None) -> float:
    """Estimated seconds of one call with chunks of ``nb`` samples x ``nth`` tile rows x ``cb`` channels, the
    transformed weights ``shared`` or made per chunk; ``kept``: the weight-only work (the shared transform or
    the relayout) was done once, by an operator. ``m``: the constants (default: ``_model``'s, the profile's);
    the chunk choice passes ``_model.CHUNK``, the fixed reference ones."""
    M = _model if m is None else m
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    n_phase = len(lay.phases)
    scale = 1.0 if plan.dtype.itemsize == 4 else 0.5
    tiles = nb * nth * tiles_per_row(lay)
    total_tiles = plan.batch * lay.tiles * g
    h_blocks = -(-lay.tile_rows // nth)
    tasks = g * -(-plan.batch // nb) * h_blocks * -(-cout_g // cb)
    c_blocks = -(-cout_g // cb)
    eff = M.WINOGRAD_SMALL_GEMM_GAIN
    if tiles * cb * cin_g > M.WINOGRAD_SMALL_GEMM:
        eff = 1.0
        for side, half in zip((tiles, cb, cin_g), M.WINOGRAD_GEMM_HALF):
            eff *= side / (side + half)
    gemm = 2.0 * lay.points * n_phase * cin_g * cout_g * total_tiles / (M.WINOGRAD_GEMM_RATE * scale * eff)
    u_work = 0.0 if shared else tasks * n_phase * lay.points * cin_g * cb * M.WINOGRAD_U_ELEMENT
    big = _worker_scratch(lay, cin_g, nb, nth, cb) * plan.dtype.itemsize > M.WINOGRAD_L2_BYTES
    spill = M.WINOGRAD_SPILL if big else 1.0
    v_work = c_blocks * n_phase * lay.points * cin_g * total_tiles * M.WINOGRAD_V_ELEMENT * spill
    halo = 1 + lay.halo * (h_blocks - 1) / max(1, plan.axes[1].size_in)
    pack = (c_blocks * plan.batch * plan.c_in * _prod(a.size_in for a in plan.axes) * halo
            * M.WINOGRAD_PACK_ELEMENT * spill)
    store = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes) * M.WINOGRAD_STORE_ELEMENT * spill
    calls = (tasks * (n_phase * lay.points * M.WINOGRAD_POINT_CALL + M.WINOGRAD_TASK_CALL)
             + total_tiles * n_phase * lay.points * M.WINOGRAD_TILE_POINT)
    balance = -(-tasks // workers) * workers / tasks
    if shared and _shared_elements(plan, lay) * plan.dtype.itemsize > M.WINOGRAD_L2_BYTES:
        # shared transformed weights larger than the core's cache (a one-off call's up to 3/4 of the output, an
        # operator's up to KEPT_FACTOR x the weight): every chunk streams its channel block of them from memory
        # (DCGAN's first block: 19 MB of them; a 256 -> 128 block: 4.7 MB, read by each of 64 small chunks),
        # which favours chunks of many samples
        u_work = tasks * n_phase * lay.points * cin_g * cb * plan.dtype.itemsize / M.BANDWIDTH
    parallel = (gemm + u_work + v_work + pack + store + calls) * balance / min(workers, tasks)
    if kept:
        return parallel
    if shared:  # made before the workers start, in the calling thread
        return parallel + _shared_elements(plan, lay) * M.WINOGRAD_SHARED_ELEMENT
    return parallel + weight_elements(plan) * M.WINOGRAD_RELAYOUT_ELEMENT / min(workers, tasks)


def chunks(plan: geo.Plan) -> tuple[int, int, int] | None:
    """(samples, tile rows, output channels) per chunk, or None when no chunk fits the memory rule."""
    found = chunk_choice(plan)
    return None if found is None else found[:3]


@memo(256)
def chunk_choice(plan: geo.Plan, kept: bool = False) -> tuple[int, int, int, bool] | None:
    """(samples, tile rows, output channels) per chunk and whether the transformed weights are shared, or None
    when no chunk fits the memory rule.

    All workers' scratch plus what the call holds (the re-laid-out weight, or the shared transformed weights)
    stays within one output's size; among the chunks that fit, the one with the least estimated time. A chunk
    of one sample may take part of its tile rows (large single images). Depends on the shapes, numba's pool
    size and the machine's L2 size (its chunkings compared with ``_model.CHUNK``'s fixed rates, never the
    profile's: the chunks, hence the bits, do not move with it), never on the current thread count.

    ``kept``: the weight-only work is done once and kept by an operator (``pack_kept``), so it holds nothing
    per call: the workers' scratch alone keeps the rule, and the shared transformed weights may take up to
    ``KEPT_FACTOR`` times the weight's size.
    """
    lay = layout(plan)
    if lay is None or plan.batch == 0:
        return None
    cin_g, cout_g = plan.c_in // plan.groups, plan.c_out // plan.groups
    workers = max_threads()
    out_size = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    best = None
    if kept:
        fits = _shared_elements(plan, lay) <= KEPT_FACTOR * weight_elements(plan)
    else:
        fits = _shared_elements(plan, lay) <= SHARED_FRACTION * out_size
    for shared in (False, True) if fits else (False,):
        held = 0 if kept else _held(plan, shared)
        if held > out_size:
            continue
        budget = out_size - held
        for nb, nth in _sample_and_row_blocks(plan.batch, lay.tile_rows):
            cb = cout_g
            while True:
                tasks = plan.groups * -(-plan.batch // nb) * -(-lay.tile_rows // nth) * -(-cout_g // cb)
                if min(workers, tasks) * _worker_scratch(lay, cin_g, nb, nth, cb) <= budget:
                    cost = schedule_cost(plan, lay, nb, nth, cb, workers, shared, kept, _model.CHUNK)
                    if best is None or cost < best[0]:
                        best = (cost, nb, nth, cb, shared)
                if cb == 1:
                    break
                cb = -(-cb // 2)
    return None if best is None else best[1:]


def _sample_and_row_blocks(batch: int, tile_rows: int):
    """Candidate (samples, tile rows) per chunk: whole samples in up to 64 block sizes, then row blocks of one
    sample in up to 63 sizes (down to one tile row)."""
    for nb in sorted({-(-batch // n_blocks) for n_blocks in range(1, min(batch, 64) + 1)}, reverse=True):
        yield nb, tile_rows
    for nth in sorted({-(-tile_rows // h_blocks) for h_blocks in range(2, min(tile_rows, 64) + 1)}, reverse=True):
        yield 1, nth


def estimate(plan: geo.Plan, threads: int) -> float | None:
    """Estimated seconds of this variant on ``threads`` threads, or None when it does not apply."""
    found = chunk_choice(plan)
    if found is None:
        return None
    nb, nth, cb, shared = found
    return schedule_cost(plan, layout(plan), nb, nth, cb, threads, shared)


def scratch_elements(plan: geo.Plan) -> int:
    """Largest scratch (elements) one call allocates (all workers together, weight relayout included)."""
    found = chunks(plan)
    if found is None:
        return 0
    workers = max_threads() * _worker_scratch(layout(plan), plan.c_in // plan.groups, *found)
    return _held(plan, shares_weights(plan)) + workers


def kept_choice(plan: geo.Plan) -> tuple[int, int, int, bool] | None:
    """The chunks of a call with the weight packed once (an operator): a one-off call's whenever one fits the
    memory rule (so that both give the same bits), else those with kept weights (``chunk_choice(kept=True)``)."""
    return chunk_choice(plan) or chunk_choice(plan, kept=True)


def kept_estimate(plan: geo.Plan, threads: int) -> float | None:
    """Estimated seconds of a call whose weight-only work was done once (an operator)."""
    found = kept_choice(plan)
    if found is None:
        return None
    nb, nth, cb, shared = found
    return schedule_cost(plan, layout(plan), nb, nth, cb, threads, shared, kept=True)


def kept_scratch(plan: geo.Plan) -> int:
    """Scratch (elements, all workers) of a call whose weight-only work was done once."""
    found = kept_choice(plan)
    if found is None:
        return 0
    return max_threads() * _worker_scratch(layout(plan), plan.c_in // plan.groups, *found[:3])
