"""conv's two forms built on BLAS: im2col + one matrix product per block of columns (the GEMM form, also the
weight gradient's), and the gathered-columns form for layers whose padded input would be mostly padding. The
dispatch between them and the direct and Winograd forms is ``_forward.run_conv``'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _geometry as geo
from ._kernels.conv import im2col
from ._runtime import run_parallel

if TYPE_CHECKING:
    from ._forward import ConvPlan


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


# A padded input more than this many times larger than x and the gathered columns together is mostly zeros that
# no product needs: the call gathers the columns from x instead (``conv_sparse``).
SPARSE_RATIO = 8


def mostly_padding(plan: ConvPlan, needed: tuple[int, ...]) -> bool:
    """Whether the padded input (``needed`` per axis) would be mostly padding: a stride, dilation or padding
    large against the sizes (the adjoint of a transposed convolution with a huge dilation and crop)."""
    taps_outputs = _prod(a.kernel * a.size_out for a in plan.axes)
    return _prod(needed) > SPARSE_RATIO * (_prod(a.size_in for a in plan.axes) + taps_outputs)


def _reads(axis: geo.Axis) -> np.ndarray:
    """(kernel, size_out) indices into the axis of x, ``o * stride + k * dilation - start``, with ``size_in`` (a
    zero appended to x) where that falls outside x. Python ints per tap: no product can overflow."""
    idx = np.full((axis.kernel, axis.size_out), axis.size_in, np.int64)
    s, d, start, n = axis.stride, axis.dilation, axis.start, axis.size_in
    for k in range(axis.kernel):
        offset = k * d - start  # reads o * s + offset, inside x for o in [lo, hi]
        lo = max(0, -(offset // s))
        hi = min(axis.size_out - 1, (n - 1 - offset) // s)
        if lo <= hi:
            idx[k, lo:hi + 1] = np.arange(hi - lo + 1, dtype=np.int64) * s + (lo * s + offset)
    return idx


def conv_sparse(plan: ConvPlan, x5: np.ndarray, w5: np.ndarray, b: np.ndarray | None, y5: np.ndarray) -> None:
    """Forward convolution without the padded input: the columns (C_in * taps, outputs) are gathered straight from
    x (one appended zero standing for every read outside it), then one matrix product per group. Time and
    memory are bounded by the sizes of x, the kernel and the output, whatever the stride, dilation and padding."""
    g, c_in_g, c_out_g = plan.groups, plan.c_in // plan.groups, plan.c_out // plan.groups
    dtype = plan.dtype
    reads = [_reads(a) for a in plan.axes]
    taps = _prod(a.kernel for a in plan.axes)
    outputs = _prod(a.size_out for a in plan.axes)
    geo.check_memory((plan.batch, plan.c_in, taps, outputs), dtype, "the gathered columns")
    xz = np.zeros((plan.batch, plan.c_in) + tuple(a.size_in + 1 for a in plan.axes), dtype)
    xz[:, :, :-1, :-1, :-1] = x5
    rd, rh, rw = reads
    cols = xz[:, :, rd[:, None, None, :, None, None], rh[None, :, None, None, :, None],
              rw[None, None, :, None, None, :]].reshape(plan.batch, plan.c_in * taps, outputs)
    wm = w5.reshape(plan.c_out, c_in_g * taps)
    ym = y5.reshape(plan.batch, plan.c_out, outputs)

    def work(tasks):
        for n, gi in tasks:
            chans = slice(gi * c_out_g, (gi + 1) * c_out_g)
            np.matmul(wm[chans], cols[n, gi * c_in_g * taps:(gi + 1) * c_in_g * taps], out=ym[n, chans])

    run_parallel(work, [(n, gi) for n in range(plan.batch) for gi in range(g)])
    if b is not None:
        y5 += b.reshape((1, -1, 1, 1, 1))


# Column buffer of the GEMM form: at most this many elements per worker (the output rows are taken in blocks).
COL_ELEMENTS = 1 << 22
# The GEMM form cuts a call into at least this many tasks where the layer allows (row blocks, channel blocks), so
# that every thread has work; a property of the layer, never of the thread count, so that the bits stay.
MIN_TASKS = 8
# Columns (output pixels) of one matrix product at least, where the layer has them: samples with fewer output
# pixels are put side by side in one block.
GEMM_COLUMNS = 256
# The weight gradient's partial products (one per run of blocks): at most this many elements in all.
PARTIAL_ELEMENTS = 1 << 23


# Fewest rows of the output and of the weight gradient per task of ``_by_rows`` (BLAS's packing of a thinner
# block costs more than it computes).
ROW_BLOCK = 64


def by_rows(plan: ConvPlan, pixels: int) -> bool:
    """Whether ``conv_gemm`` computes the weight gradient by row blocks (``_by_rows``): it is larger than the
    columns it is made from (more output channels per group than output pixels in the call), so that partial
    products per run of blocks would outweigh the work or fit only once, and has rows for two blocks."""
    c_out_g = plan.c_out // plan.groups
    return c_out_g > plan.batch * pixels and c_out_g >= 2 * ROW_BLOCK


def _by_rows(plan: ConvPlan, x5: np.ndarray, wm: np.ndarray, ym: np.ndarray | None, dm: np.ndarray,
             gwm: np.ndarray, taps: int) -> None:
    """``conv_gemm`` with the weight gradient of a weight-heavy layer (partial products per run of blocks would
    outweigh the columns, or fit only once and leave a single task): the columns of whole samples, in chunks of
    at most ``COL_ELEMENTS``, and per chunk the rows of the output and of the weight gradient cut into blocks that
    the workers take, each block's rows written in place (the weight gradient's summed over the chunks in their
    order). The blocks and chunks follow the layer alone: the bits do not depend on the thread count."""
    g, c_in_g, c_out_g = plan.groups, plan.c_in // plan.groups, plan.c_out // plan.groups
    kernel, stride, dilation = plan.arrays("kernel"), plan.arrays("stride"), plan.arrays("dilation")
    start = plan.arrays("start")
    out_d, out_h, out_w = (a.size_out for a in plan.axes)
    rows, pixels = out_d * out_h, out_d * out_h * out_w
    per = max(1, min(plan.batch, COL_ELEMENTS // max(1, taps * pixels)))
    n_blocks = max(1, min(MIN_TASKS, c_out_g // ROW_BLOCK))
    size = -(-c_out_g // n_blocks)
    blocks = [(r0, min(c_out_g, r0 + size)) for r0 in range(0, c_out_g, size)]
    buf = np.empty(taps * per * pixels, plan.dtype)
    for gi in range(g):
        for n_lo in range(0, plan.batch, per):
            n_hi = min(plan.batch, n_lo + per)
            width = (n_hi - n_lo) * pixels
            cols = buf[:taps * width].reshape(taps, width)
            im2col(x5, cols, (n_lo, n_hi, gi * c_in_g), kernel, stride, dilation, start, (0, rows, out_h, out_w))

            def work(claimed, gi=gi, n_lo=n_lo, n_hi=n_hi, cols=cols):
                part = np.empty((size, taps), plan.dtype)
                res = np.empty(size * cols.shape[1], plan.dtype)
                for r0, r1 in claimed:
                    chans = slice(gi * c_out_g + r0, gi * c_out_g + r1)
                    out = res[:(r1 - r0) * cols.shape[1]].reshape(r1 - r0, n_hi - n_lo, pixels)
                    flat = out.reshape(r1 - r0, cols.shape[1])
                    if ym is not None:  # the samples' outputs side by side, then each into its place
                        np.matmul(wm[chans], cols, out=flat)
                        ym[n_lo:n_hi, chans] = out.transpose(1, 0, 2)
                    out[...] = dm[n_lo:n_hi, chans].transpose(1, 0, 2)  # the dual's columns in the cols' order
                    if n_lo == 0:
                        np.matmul(flat, cols.T, out=gwm[chans])
                    else:
                        np.matmul(flat, cols.T, out=part[:r1 - r0])
                        gwm[chans] += part[:r1 - r0]

            run_parallel(work, blocks)


def conv_gemm(plan: ConvPlan, x5: np.ndarray, w5: np.ndarray, b: np.ndarray | None, y5: np.ndarray | None,
               dual5: np.ndarray | None = None, grad_weight: np.ndarray | None = None) -> None:
    """Forward convolution as im2col (numba) + one matrix product per block of columns (BLAS).

    A block is a run of output rows of one sample or, when a sample has fewer than ``GEMM_COLUMNS`` output
    pixels, a run of whole samples side by side: a matrix product with a few columns (a DCGAN layer's 4x4
    output) runs BLAS at a fraction of its speed. The blocks run on the worker pool (``run_parallel``), each
    worker with its own column buffer. With ``dual5``, also ``grad_weight = sum over blocks of dual_block @
    cols.T`` (see :func:`run_conv`): the blocks are cut into a fixed number of runs of consecutive blocks, each
    run summed into its own partial product in block order, and the partials added in run order, so the bits
    depend on the layer only. ``y5=None`` (with ``dual5``): the weight gradient alone.
    """
    g, c_in_g, c_out_g = plan.groups, plan.c_in // plan.groups, plan.c_out // plan.groups
    kernel, stride, dilation = plan.arrays("kernel"), plan.arrays("stride"), plan.arrays("dilation")
    start = plan.arrays("start")
    taps = c_in_g * int(np.prod(kernel))
    out_d, out_h, out_w = (a.size_out for a in plan.axes)
    rows = out_d * out_h
    pixels = rows * out_w
    tasks_per_group = -(-MIN_TASKS // g)
    per = min(GEMM_COLUMNS // pixels, COL_ELEMENTS // (taps * pixels),
              -(-plan.batch // min(plan.batch, tasks_per_group)))
    if per > 1:  # whole samples per block
        block = rows
        items = [(n, min(plan.batch, n + per), gi, 0, rows) for gi in range(g) for n in range(0, plan.batch, per)]
    else:
        per = 1
        block = max(1, min(rows, COL_ELEMENTS // max(1, taps * out_w)))
        block = min(block, -(-rows // min(rows, -(-tasks_per_group // plan.batch))))
        items = [(n, n + 1, gi, lo, min(rows, lo + block)) for gi in range(g) for n in range(plan.batch)
                 for lo in range(0, rows, block)]
    wm = w5.reshape(plan.c_out, taps)
    ym = None if y5 is None else y5.reshape(plan.batch, plan.c_out, pixels)
    if dual5 is None:
        tasks = [(0, [item]) for item in items]
    else:  # runs of consecutive blocks of one group, each with its partial product of the weight gradient
        dm = dual5.reshape(plan.batch, plan.c_out, pixels)
        if by_rows(plan, pixels):
            _by_rows(plan, x5, wm, ym, dm, grad_weight.reshape(plan.c_out, taps), taps)
            if b is not None:
                y5 += b.reshape((1, -1, 1, 1, 1))
            return
        per_group = len(items) // g
        runs = max(1, min(MIN_TASKS, per_group, PARTIAL_ELEMENTS // max(1, plan.c_out * taps)))
        step = -(-per_group // runs)
        tasks = list(enumerate(items[gi * per_group + lo:gi * per_group + min(per_group, lo + step)]
                               for gi in range(g) for lo in range(0, per_group, step)))
        partials = np.zeros((len(tasks), c_out_g, taps), plan.dtype)
    span = block * out_w  # columns per sample in a block

    def work(claimed):
        buf = np.empty(taps * per * span, plan.dtype)
        res = np.empty(c_out_g * per * span, plan.dtype) if per > 1 else None
        part = None if dual5 is None else np.empty((c_out_g, taps), plan.dtype)
        for k, run in claimed:
            for n_lo, n_hi, gi, lo, hi in run:
                width = (n_hi - n_lo) * (hi - lo) * out_w
                chans = slice(gi * c_out_g, (gi + 1) * c_out_g)
                cols = buf[:taps * width].reshape(taps, width)
                # (Python ints: int64 tuples in the kernel)
                im2col(x5, cols, (n_lo, n_hi, gi * c_in_g), kernel, stride, dilation, start, (lo, hi, out_h, out_w))
                if ym is not None and res is None:
                    np.matmul(wm[chans], cols, out=ym[n_lo, chans, lo * out_w:hi * out_w])
                elif ym is not None:  # the samples' outputs side by side, then each into its place
                    out = res[:c_out_g * width].reshape(c_out_g, n_hi - n_lo, pixels)
                    np.matmul(wm[chans], cols, out=out.reshape(c_out_g, width))
                    ym[n_lo:n_hi, chans] = out.transpose(1, 0, 2)
                if part is not None:
                    if res is None:
                        dual = dm[n_lo, chans, lo * out_w:hi * out_w]
                    else:  # the dual's columns in the same order as the block's
                        dual = res[:c_out_g * width].reshape(c_out_g, n_hi - n_lo, pixels)
                        dual[...] = dm[n_lo:n_hi, chans].transpose(1, 0, 2)
                        dual = dual.reshape(c_out_g, width)
                    np.matmul(dual, cols.T, out=part)
                    partials[k] += part

    run_parallel(work, tasks)
    if dual5 is not None:
        gwm = grad_weight.reshape(plan.c_out, taps)
        per = len(tasks) // g  # runs per group, added in order
        for gi in range(g):
            total = gwm[gi * c_out_g:(gi + 1) * c_out_g]
            total[...] = partials[gi * per]
            for k in range(gi * per + 1, (gi + 1) * per):
                total += partials[k]
    if b is not None:
        y5 += b.reshape((1, -1, 1, 1, 1))
