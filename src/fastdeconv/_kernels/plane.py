"""Gather form for one-input-channel groups (depthwise layers, single-channel images): phase correlations over a
zero-padded copy of the input plane.

When every output channel reads a single input channel (``C_in / groups == 1``: depthwise and FCN bilinear
upsampling, single-channel images) there is no channel contraction to hand to BLAS, and the direct kernels'
rows are only as long as an input row (32 elements in a depthwise 32x32 layer: too short for LLVM's vector
loop). Here each task copies the input rows one block of output rows needs into a zero-bordered scratch
plane of row pitch ``pitch``. Along an axis with stride ``s`` the outputs ``o = phase + s * m`` are a dense
correlation of the input with the taps reaching that phase (``_geometry.Axis.phases``: tap ``k`` reads input
``m + base``), so in the scratch plane one (phase, tap) pair is a single contiguous run over the whole block,
``buf[m_h * pitch + m_w] += w[k] * xpad[(m_h + base_h - lo_h) * pitch + m_w + base_w - lo_w]``: no bounds
check, no zero of the dilated input, runs of thousands of elements. Each phase's taps are summed four at a
time (one store per element per four taps); ``store_block`` then interleaves the phases into the output and
adds the bias. The columns of a run beyond a phase's outputs (``pitch`` exceeds them by the taps' spread) are
computed and never stored.

Each output element is computed by one task from its taps in a fixed order (depth tap, row tap, column tap):
bitwise-identical results across thread counts. Scratch per worker: the padded rows plus one block of phase
rows, sized to stay in L2.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit, prange, uintp

from .. import _geometry as geo
from .._threads import max_threads
from ..config import NJIT_FLAGS, PARALLEL_FLAGS
from ._blocks import MAX_CHUNKS, store_block
from ._index import unravel

# Elements of scratch per worker (the padded input rows plus one block of phase rows): 128 KiB in float32.
BUFFER_ELEMENTS = 32768


class Layout(NamedTuple):
    """Per-plan constants of the kernel (built once per plan)."""

    tables: tuple[np.ndarray, np.ndarray, np.ndarray]  # per axis (stride, 2 + 2 * kernel): count, taps, (k, base)
    geometry: np.ndarray  # int64: lo_h, span_h, lo_w, pitch, block (phase rows per task), blocks per plane
    scratch: int          # elements of scratch per worker


def applies(plan: geo.Plan) -> bool:
    """Whether this variant runs the plan: every output channel reads exactly one input channel."""
    return plan.c_in == plan.groups and plan.c_out >= plan.groups > 0


def _table(axis: geo.Axis) -> tuple[np.ndarray, int, int]:
    """One axis's phases as an int64 table (row per phase: count, number of taps, then (tap, base) pairs), with
    the lowest base and the spread of the bases (0 when no phase has a tap)."""
    phases = axis.phases()
    table = np.zeros((axis.stride, 2 + 2 * axis.kernel), dtype=np.int64)
    bases = [b for _, count, _, bs in phases if count for b in bs]
    lo = min(bases, default=0)
    for r, count, taps, bs in phases:
        table[r, 0], table[r, 1] = count, len(taps)
        for u, (k, b) in enumerate(zip(taps, bs)):
            table[r, 2 + 2 * u], table[r, 3 + 2 * u] = k, b
    return table, lo, max(bases, default=0) - lo


@lru_cache(maxsize=256)
def layout(plan: geo.Plan) -> Layout:
    """Phase tables, padded-plane pitch and row block of a plan (see the module docstring)."""
    (t_d, _, _), (t_h, lo_h, span_h), (t_w, lo_w, span_w) = (_table(a) for a in plan.axes)
    depth_taps = int(t_d[:, 1].max())
    rows = int(t_h[0, 0])  # phase 0 has the most outputs
    pitch = int(t_w[0, 0]) + span_w
    s_w = plan.axes[2].stride
    # block of phase rows per task: its padded input rows (one extra: a run's tail reads up to span_w past the
    # last row) plus one phase row of each column phase fit the buffer
    per_row = (s_w + depth_taps) * pitch
    block = max(1, min(rows, (BUFFER_ELEMENTS - depth_taps * (span_h + 1) * pitch) // per_row))
    blocks = -(-rows // block) if rows else 0
    scratch = s_w * block * pitch + depth_taps * (block + span_h + 1) * pitch
    geometry = np.array([lo_h, span_h, lo_w, pitch, block, blocks], dtype=np.int64)
    return Layout((t_d, t_h, t_w), geometry, scratch)


def scratch_elements(plan: geo.Plan) -> int:
    """Scratch elements one call holds at most (each of numba's threads runs one chunk of tasks at a time)."""
    return layout(plan).scratch * min(max_threads(), task_count(plan))


def task_count(plan: geo.Plan) -> int:
    """Tasks of one call: (sample, group, output depth, block of phase rows)."""
    return plan.batch * plan.groups * plan.axes[0].size_out * int(layout(plan).geometry[5])


@njit(**NJIT_FLAGS)
def _fill_rows(xpad, dst, xf, src_row, first_row, n_rows, size_h, size_w, lo_w, pitch):
    """``xpad[dst + r * pitch + c] = x[first_row + r, lo_w + c]`` (zero outside the input) for ``n_rows`` rows;
    ``src_row`` is the flat offset of input row 0 of the plane."""
    c_lo = min(pitch, max(0, -lo_w))
    c_hi = max(c_lo, min(pitch, size_w - lo_w))
    for r in range(n_rows):
        row = uintp(dst + r * pitch)
        ih = first_row + r
        if ih < 0 or ih >= size_h:
            for c in range(uintp(pitch)):
                xpad[row + c] = 0
            continue
        src = uintp(src_row + ih * size_w + lo_w + c_lo)
        for c in range(uintp(c_lo)):
            xpad[row + c] = 0
        for c in range(uintp(c_hi - c_lo)):
            xpad[row + uintp(c_lo) + c] = xf[src + c]
        for c in range(uintp(c_hi), uintp(pitch)):
            xpad[row + c] = 0


@njit(**NJIT_FLAGS)
def _correlate(buf, dst, xpad, taps, weights, n_taps, n):
    """``buf[dst + q] = sum_t weights[t] * xpad[taps[t] + q]`` for ``q < n``, the taps in table order (four per
    pass over ``buf``)."""
    d, cnt = uintp(dst), uintp(n)
    if n_taps == 0:
        for q in range(cnt):
            buf[d + q] = 0
        return
    t = 0
    while t < n_taps:
        left = n_taps - t
        o0, a0 = uintp(taps[t]), weights[t]
        if left >= 4:
            o1, o2, o3 = uintp(taps[t + 1]), uintp(taps[t + 2]), uintp(taps[t + 3])
            a1, a2, a3 = weights[t + 1], weights[t + 2], weights[t + 3]
            if t == 0:
                for q in range(cnt):
                    buf[d + q] = ((a0 * xpad[o0 + q] + a1 * xpad[o1 + q]) + a2 * xpad[o2 + q]) + a3 * xpad[o3 + q]
            else:
                for q in range(cnt):
                    buf[d + q] = (((buf[d + q] + a0 * xpad[o0 + q]) + a1 * xpad[o1 + q]) + a2 * xpad[o2 + q]
                                  ) + a3 * xpad[o3 + q]
            t += 4
        elif left >= 2:
            o1, a1 = uintp(taps[t + 1]), weights[t + 1]
            if t == 0:
                for q in range(cnt):
                    buf[d + q] = a0 * xpad[o0 + q] + a1 * xpad[o1 + q]
            else:
                for q in range(cnt):
                    buf[d + q] = (buf[d + q] + a0 * xpad[o0 + q]) + a1 * xpad[o1 + q]
            t += 2
        else:
            if t == 0:
                for q in range(cnt):
                    buf[d + q] = a0 * xpad[o0 + q]
            else:
                for q in range(cnt):
                    buf[d + q] += a0 * xpad[o0 + q]
            t += 1


@njit(**NJIT_FLAGS)
def _plane_tasks(task_lo, task_hi, x, w, bias, y, groups, t_d, t_h, t_w, geometry):
    """Tasks ``[task_lo, task_hi)`` (sample, group, output depth, block of phase rows), scratch allocated once."""
    size_d, size_h, size_w = x.shape[2], x.shape[3], x.shape[4]
    c_out_g, k_d, k_h, k_w = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    o_d, o_h, o_w = y.shape[2], y.shape[3], y.shape[4]
    s_d, s_h, s_w = t_d.shape[0], t_h.shape[0], t_w.shape[0]
    lo_h, span_h, lo_w, pitch, block, blocks = (geometry[0], geometry[1], geometry[2], geometry[3], geometry[4],
                                                geometry[5])
    xf, yf, wf = x.reshape(-1), y.reshape(-1), w.reshape(-1)
    max_dt = 0
    for p in range(s_d):
        max_dt = max(max_dt, t_d[p, 1])
    x_rows = block + span_h + 1  # padded rows of one depth tap (the last one: a run's tail reads into it)
    xpad = np.empty(max(1, max_dt) * x_rows * pitch, dtype=x.dtype)
    buf = np.empty(s_w * block * pitch, dtype=y.dtype)
    n_max = max(1, max_dt * t_h.shape[1] * t_w.shape[1])
    taps = np.empty(n_max, dtype=np.int64)  # flat xpad offset of each tap of one phase
    weights = np.empty(n_max, dtype=w.dtype)
    depth = np.empty((max(1, max_dt), 2), dtype=np.int64)  # (kd, input depth) of the depth taps reaching od
    phase_len = block * pitch  # one column phase in ``buf``
    for task in range(task_lo, task_hi):
        n, g, od, blk = unravel(task, groups, o_d, blocks)
        pd, md = od % s_d, od // s_d
        n_dt = 0
        for u in range(t_d[pd, 1]):
            i_d = md + t_d[pd, 3 + 2 * u]
            if 0 <= i_d < size_d:
                depth[n_dt, 0], depth[n_dt, 1] = t_d[pd, 2 + 2 * u], i_d
                n_dt += 1
        m0 = blk * block
        m1 = min(m0 + block, t_h[0, 0])
        for t in range(n_dt):  # the input rows [m0 + lo_h, m1 + lo_h + span_h] of each depth tap's slice
            plane = ((n * groups + g) * size_d + depth[t, 1]) * size_h * size_w
            _fill_rows(xpad, t * x_rows * pitch, xf, plane, m0 + lo_h, m1 - m0 + span_h + 1, size_h, size_w, lo_w,
                       pitch)
        for cog in range(c_out_g):
            co = g * c_out_g + cog
            w0 = (g * c_out_g + cog) * k_d * k_h * k_w  # w[g, cog] (one input channel per group)
            for ph in range(s_h):
                rows = min(m1, t_h[ph, 0]) - m0
                if rows <= 0:
                    continue
                for pw in range(s_w):
                    if t_w[pw, 0] == 0:  # no output in this column phase (its bases may lie outside the pad)
                        continue
                    n_taps = 0
                    for t in range(n_dt):
                        for uh in range(t_h[ph, 1]):
                            row = t * x_rows + t_h[ph, 3 + 2 * uh] - lo_h
                            wrow = w0 + (depth[t, 0] * k_h + t_h[ph, 2 + 2 * uh]) * k_w
                            for uw in range(t_w[pw, 1]):
                                taps[n_taps] = row * pitch + t_w[pw, 3 + 2 * uw] - lo_w
                                weights[n_taps] = wf[wrow + t_w[pw, 2 + 2 * uw]]
                                n_taps += 1
                    _correlate(buf, pw * phase_len, xpad, taps, weights, n_taps, rows * pitch)
                y0 = (((n * y.shape[1] + co) * o_d + od) * o_h + ph + s_h * m0) * o_w
                store_block(buf, 1, 0, rows, pitch, phase_len, yf, y0, s_h * o_w, 0, o_w, s_w, bias, co)


@njit(**PARALLEL_FLAGS)
def plane(x, w, bias, y, groups, t_d, t_h, t_w, geometry):
    """Transposed convolution for one-input-channel groups, gather form, into ``y``, on numba's thread pool.

    Parameters
    ----------
    x, w, bias, y : numpy.ndarray
        Canonical C-contiguous x (N, C_in, D, H, W), weight (C_in, C_out // groups, kD, kH, kW), bias (C_out,)
        and output y (N, C_out, oD, oH, oW), one float dtype, ``C_in == groups``.
    groups : int
        Channel groups (= C_in).
    t_d, t_h, t_w, geometry : numpy.ndarray
        ``layout(plan)``: the per-axis phase tables and (lo_h, span_h, lo_w, pitch, block, blocks).
    """
    n_tasks = x.shape[0] * groups * y.shape[2] * geometry[5]
    n_chunks = min(n_tasks, MAX_CHUNKS)  # scratch is allocated once per chunk
    for chunk in prange(n_chunks):
        lo, hi = chunk * n_tasks // n_chunks, (chunk + 1) * n_tasks // n_chunks
        _plane_tasks(lo, hi, x, w, bias, y, groups, t_d, t_h, t_w, geometry)


@njit(**NJIT_FLAGS)
def plane_serial(x, w, bias, y, groups, t_d, t_h, t_w, geometry):
    """``plane`` in the calling thread (same tasks, same bits): wins on tiny problems."""
    n_tasks = x.shape[0] * groups * y.shape[2] * geometry[5]
    _plane_tasks(0, n_tasks, x, w, bias, y, groups, t_d, t_h, t_w, geometry)


def gather_plane(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray,
                 serial: bool = False) -> None:
    """Run the plan (``applies(plan)``) into ``y5``; ``serial`` keeps it in the calling thread."""
    lay = layout(plan)
    kernel = plane_serial if serial else plane
    kernel(x5, w5, bias, y5, plan.groups, *lay.tables, lay.geometry)
