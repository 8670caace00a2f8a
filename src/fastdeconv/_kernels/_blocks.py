"""Inner blocks shared by the direct (non-BLAS) kernels: channel blocking, phase buffers, run tables, the store.

Both direct forms accumulate a block of output rows into a small *phase-major* buffer, laid out as
``buf[c, r, p, m]`` (flat): ``c`` an output channel of the task's channel block, ``r`` an output row of the
block, ``p`` the phase of the last axis (``ow - ow_lo = p + stride * m``) and ``m`` the position inside that
phase. Along the last axis every tap then adds one dense, contiguous run (``buf[.., m0 + m] += w * x[i0 +
m]``), so no zero of the dilated input is ever touched. A kernel lists the runs of a block in a table (the
order it lists them is the order of every element's terms: scatter lists them input-first, gather
output-first) and ``apply_runs`` executes the table: vectorized loops, one load of the input for all channels
of the block, four overlapping single-channel runs fused into one pass. ``store_block`` interleaves the
phases back into the output and adds the bias, once per output element.

Performance notes: every call of a jitted function that takes arrays increments and
decrements their reference counts (atomic operations, ~20 cycles each) and so does an ``inline="always"``
helper with array arguments; array views made in a loop cost the same. The helpers here are therefore called
once per block of rows, never per run, and work on flat arrays with unsigned offsets (a signed index makes
numba emit a negative-index wraparound that blocks LLVM's vectorizer).
"""

from numba import uintp

from .._compiled import njit
from ..config import NJIT_FLAGS
from ._index import ceil_div, tile_counts

# Output channels handled together: each input element is loaded once for all of them.
CHANNEL_BLOCK = 4


@njit(inline="always", **NJIT_FLAGS)
def channel_blocks(c_out_g):
    """Number of channel blocks of at most ``CHANNEL_BLOCK`` output channels in one group."""
    return ceil_div(c_out_g, CHANNEL_BLOCK)


@njit(inline="always", **NJIT_FLAGS)
def split_channel_block(cb, n_cblocks, c_out_g):
    """Global channel-block number -> (group, first column in the group, block size)."""
    g = cb // n_cblocks
    col0 = (cb - g * n_cblocks) * CHANNEL_BLOCK
    return g, col0, min(CHANNEL_BLOCK, c_out_g - col0)


@njit(**NJIT_FLAGS)
def task_count(x, w, y, groups, tile):
    """Tasks of a direct kernel, (sample, group x channel block, output tile), with the tile counts per axis and
    the channel blocks per group."""
    tiles = tile_counts(y.shape[2:], tile)
    n_cb = channel_blocks(w.shape[1])
    return x.shape[0] * groups * n_cb * tiles[0] * tiles[1] * tiles[2], tiles, n_cb


@njit(inline="always", **NJIT_FLAGS)
def phase_count(width, phase, stride):
    """Number of positions ``m`` of phase ``phase`` in a segment of ``width`` outputs (0 if none)."""
    return ceil_div(width - phase, stride) if phase < width else 0


# Shortest common destination range for which four consecutive runs are fused into one pass, for one channel
# and for a block of channels (shorter fused loops of several channels ran slower than four plain ones).
MIN_FUSED = 16
MIN_FUSED_CHANNELS = 48
# LLVM's vector loop handles 64 elements per iteration (16 lanes x 4 interleaved); a shorter loop runs scalar,
# so a fused range just under it (edges trimmed off runs of exactly 64) is left to the plain runs.
VECTOR_MIN = 64


# One function on purpose (hence the noqa): split into inlined helpers that receive the arrays, numba adds
# reference counting per run and gather-direct runs 1.4x slower.
@njit(**NJIT_FLAGS)
def apply_runs(buf, xf, wf, runs, n_runs, nb, cstride, wstride, fuse):  # noqa: C901, PLR0915
    """For each run ``(dst, src, count, wi)``: ``buf[dst + c * cstride + m] += wf[wi + c * wstride] * xf[src + m]``.

    ``m < count`` and ``c < nb`` (the channel block). Every ``buf`` element receives its terms in table order.
    With ``fuse`` (for tables whose consecutive runs mostly overlap: gather lists a row's runs phase by phase),
    four consecutive runs whose destinations share a long common range (``MIN_FUSED*``) are fused there:
    one load and one store of ``buf`` per element and channel for their four terms, still added one after
    the other in run order; the ends outside the common range are applied run by run. An element's terms all
    come from one of these parts, so their order never changes. One call handles many runs, because numba
    reference-counts the array arguments of every call (atomic operations). ``buf``, ``xf`` and ``wf`` are
    flat and the offsets unsigned, so numba emits no negative-index wraparound and LLVM vectorizes the runs;
    the channels of the block share each load of ``xf``.
    """
    cs, ws = uintp(cstride), uintp(wstride)
    shortest = MIN_FUSED if nb == 1 else MIN_FUSED_CHANNELS
    r = 0
    while r < n_runs:
        lo, hi = 0, 0
        if fuse and r + 4 <= n_runs and runs[r, 2] >= shortest:
            lo = max(max(runs[r, 0], runs[r + 1, 0]), max(runs[r + 2, 0], runs[r + 3, 0]))
            hi = min(min(runs[r, 0] + runs[r, 2], runs[r + 1, 0] + runs[r + 1, 2]),
                     min(runs[r + 2, 0] + runs[r + 2, 2], runs[r + 3, 0] + runs[r + 3, 2]))
        if hi - lo >= shortest and hi - lo < VECTOR_MIN:  # fuse only if the plain runs would not vectorize either
            if max(max(runs[r, 2], runs[r + 1, 2]), max(runs[r + 2, 2], runs[r + 3, 2])) >= VECTOR_MIN:
                hi = lo
        if hi - lo >= shortest:
            for q in range(r, r + 4):  # left ends, run by run
                for c in range(nb):
                    wv, base = wf[runs[q, 3] + c * wstride], uintp(runs[q, 0] + c * cstride)
                    src = uintp(runs[q, 1])
                    for m in range(uintp(lo - runs[q, 0])):
                        buf[base + m] += wv * xf[src + m]
            b0, n = uintp(lo), uintp(hi - lo)
            x0, x1 = uintp(runs[r, 1] + lo - runs[r, 0]), uintp(runs[r + 1, 1] + lo - runs[r + 1, 0])
            x2, x3 = uintp(runs[r + 2, 1] + lo - runs[r + 2, 0]), uintp(runs[r + 3, 1] + lo - runs[r + 3, 0])
            i0, i1, i2, i3 = uintp(runs[r, 3]), uintp(runs[r + 1, 3]), uintp(runs[r + 2, 3]), uintp(runs[r + 3, 3])
            a0, a1, a2, a3 = wf[i0], wf[i1], wf[i2], wf[i3]
            if nb == 1:
                for m in range(n):
                    v0, v1, v2, v3 = xf[x0 + m], xf[x1 + m], xf[x2 + m], xf[x3 + m]
                    buf[b0 + m] = (((buf[b0 + m] + a0 * v0) + a1 * v1) + a2 * v2) + a3 * v3
            else:
                e0, e1, e2, e3 = wf[i0 + ws], wf[i1 + ws], wf[i2 + ws], wf[i3 + ws]
                c1 = b0 + cs
                if nb == 2:
                    for m in range(n):
                        v0, v1, v2, v3 = xf[x0 + m], xf[x1 + m], xf[x2 + m], xf[x3 + m]
                        buf[b0 + m] = (((buf[b0 + m] + a0 * v0) + a1 * v1) + a2 * v2) + a3 * v3
                        buf[c1 + m] = (((buf[c1 + m] + e0 * v0) + e1 * v1) + e2 * v2) + e3 * v3
                else:
                    f0, f1 = wf[i0 + uintp(2) * ws], wf[i1 + uintp(2) * ws]
                    f2, f3 = wf[i2 + uintp(2) * ws], wf[i3 + uintp(2) * ws]
                    c2 = c1 + cs
                    if nb == 3:
                        for m in range(n):
                            v0, v1, v2, v3 = xf[x0 + m], xf[x1 + m], xf[x2 + m], xf[x3 + m]
                            buf[b0 + m] = (((buf[b0 + m] + a0 * v0) + a1 * v1) + a2 * v2) + a3 * v3
                            buf[c1 + m] = (((buf[c1 + m] + e0 * v0) + e1 * v1) + e2 * v2) + e3 * v3
                            buf[c2 + m] = (((buf[c2 + m] + f0 * v0) + f1 * v1) + f2 * v2) + f3 * v3
                    else:
                        g0, g1 = wf[i0 + uintp(3) * ws], wf[i1 + uintp(3) * ws]
                        g2, g3 = wf[i2 + uintp(3) * ws], wf[i3 + uintp(3) * ws]
                        c3 = c2 + cs
                        for m in range(n):
                            v0, v1, v2, v3 = xf[x0 + m], xf[x1 + m], xf[x2 + m], xf[x3 + m]
                            buf[b0 + m] = (((buf[b0 + m] + a0 * v0) + a1 * v1) + a2 * v2) + a3 * v3
                            buf[c1 + m] = (((buf[c1 + m] + e0 * v0) + e1 * v1) + e2 * v2) + e3 * v3
                            buf[c2 + m] = (((buf[c2 + m] + f0 * v0) + f1 * v1) + f2 * v2) + f3 * v3
                            buf[c3 + m] = (((buf[c3 + m] + g0 * v0) + g1 * v1) + g2 * v2) + g3 * v3
            for q in range(r, r + 4):  # right ends, run by run
                for c in range(nb):
                    wv, base = wf[runs[q, 3] + c * wstride], uintp(hi + c * cstride)
                    src = uintp(runs[q, 1] + hi - runs[q, 0])
                    for m in range(uintp(runs[q, 0] + runs[q, 2] - hi)):
                        buf[base + m] += wv * xf[src + m]
            r += 4
            continue
        d0, s0, n, wi = uintp(runs[r, 0]), uintp(runs[r, 1]), uintp(runs[r, 2]), uintp(runs[r, 3])
        if nb >= 4:
            w0, w1, w2, w3 = wf[wi], wf[wi + ws], wf[wi + uintp(2) * ws], wf[wi + uintp(3) * ws]
            d1 = d0 + cs
            d2 = d1 + cs
            d3 = d2 + cs
            for m in range(n):
                v = xf[s0 + m]
                buf[d0 + m] += w0 * v
                buf[d1 + m] += w1 * v
                buf[d2 + m] += w2 * v
                buf[d3 + m] += w3 * v
        elif nb == 3:
            w0, w1, w2 = wf[wi], wf[wi + ws], wf[wi + uintp(2) * ws]
            d1 = d0 + cs
            d2 = d1 + cs
            for m in range(n):
                v = xf[s0 + m]
                buf[d0 + m] += w0 * v
                buf[d1 + m] += w1 * v
                buf[d2 + m] += w2 * v
        elif nb == 2:
            w0, w1 = wf[wi], wf[wi + ws]
            d1 = d0 + cs
            for m in range(n):
                v = xf[s0 + m]
                buf[d0 + m] += w0 * v
                buf[d1 + m] += w1 * v
        else:
            w0 = wf[wi]
            for m in range(n):
                buf[d0 + m] += w0 * xf[s0 + m]
        r += 1


@njit(**NJIT_FLAGS)
def zero(buf, size):
    """Clear ``buf[:size]``."""
    for m in range(uintp(size)):
        buf[m] = 0


@njit(**NJIT_FLAGS)
def store_block(buf, source, yf, dest, bias, co0):
    """Interleave a block of phase-major rows into the output and add the bias, once per output element.

    ``yf[y0 + c * c_pitch + r * row_pitch + p + stride * m] = buf[c * cstride + r * row_len + p * count + m]
    + bias[co0 + c]`` for the ``width`` outputs of each of ``rows`` rows and ``nb`` channels (one call per
    block: numba reference-counts array arguments on every call). The groups (int64): ``source = (nb, cstride,
    rows, row_len, count)``, the block's layout in ``buf``; ``dest = (y0, row_pitch, c_pitch, width, stride)``,
    where its rows go in ``yf``.
    """
    nb, cstride, rows, row_len, count = source
    y0, row_pitch, c_pitch, width, stride = dest
    wd, cnt = uintp(width), uintp(count)
    for c in range(nb):
        b = bias[co0 + c]
        for r in range(rows):
            s0 = uintp(c * cstride + r * row_len)
            d0 = uintp(y0 + c * c_pitch + r * row_pitch)
            if stride == 1:
                for m in range(wd):
                    yf[d0 + m] = buf[s0 + m] + b
            elif stride == 2:
                half = wd // uintp(2)
                s1 = s0 + cnt
                for m in range(half):  # one interleaved group: LLVM vectorizes it with shuffles
                    yf[d0 + uintp(2) * m] = buf[s0 + m] + b
                    yf[d0 + uintp(2) * m + uintp(1)] = buf[s1 + m] + b
                if wd > uintp(2) * half:
                    yf[d0 + uintp(2) * half] = buf[s0 + half] + b
            elif stride == 4 or stride == 8:  # interleaved groups of 4 or 8: shuffles + contiguous stores
                st = uintp(stride)
                full = wd // st
                p1, p2, p3 = s0 + cnt, s0 + uintp(2) * cnt, s0 + uintp(3) * cnt
                if stride == 4:
                    for m in range(full):
                        o = d0 + uintp(4) * m
                        yf[o] = buf[s0 + m] + b
                        yf[o + uintp(1)] = buf[p1 + m] + b
                        yf[o + uintp(2)] = buf[p2 + m] + b
                        yf[o + uintp(3)] = buf[p3 + m] + b
                else:
                    p4, p5, p6, p7 = s0 + uintp(4) * cnt, s0 + uintp(5) * cnt, s0 + uintp(6) * cnt, s0 + uintp(7) * cnt
                    for m in range(full):
                        o = d0 + uintp(8) * m
                        yf[o] = buf[s0 + m] + b
                        yf[o + uintp(1)] = buf[p1 + m] + b
                        yf[o + uintp(2)] = buf[p2 + m] + b
                        yf[o + uintp(3)] = buf[p3 + m] + b
                        yf[o + uintp(4)] = buf[p4 + m] + b
                        yf[o + uintp(5)] = buf[p5 + m] + b
                        yf[o + uintp(6)] = buf[p6 + m] + b
                        yf[o + uintp(7)] = buf[p7 + m] + b
                for p in range(wd - full * st):
                    yf[d0 + full * st + p] = buf[s0 + p * cnt + full] + b
            else:
                st = uintp(stride)
                full = wd // st  # complete groups of ``stride`` consecutive outputs
                for m in range(full):
                    for p in range(st):
                        yf[d0 + m * st + p] = buf[s0 + p * cnt + m] + b
                for p in range(wd - full * st):
                    yf[d0 + full * st + p] = buf[s0 + p * cnt + full] + b
