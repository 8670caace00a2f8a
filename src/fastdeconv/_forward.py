"""Forward convolution (PyTorch ``conv1d/2d/3d`` cross-correlation), the adjoint of :func:`conv_transpose`.

One spatial axis of the forward convolution reads ``x[out_index * stride + tap * dilation - start]`` -- the
index map of :mod:`fastdeconv._geometry` with input and output swapped, so
``<conv(x, w), y> == <x, conv_transpose(y, w)>`` for the same ``weight`` array and geometry. The padded input
is written by the zero-fill kernel (stride 1) and then correlated densely (``_kernels.conv.correlate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _geometry as geo
from ._api import _as_array, _contiguous
from ._geometry import IntOrSeq, Padding
from ._kernels.conv import correlate, im2col
from ._kernels.zerofill import fill
from ._runtime import run_parallel
from ._tiling import tile_for


@dataclass(frozen=True)
class ConvPlan:
    """A validated forward convolution on canonical 5-D arrays.

    ``axes`` holds three :class:`~fastdeconv._geometry.Axis` (leading unit axes pad rank 1 and 2): ``size_in``
    is the conv input, ``size_out`` the conv output, ``start`` the leading zero padding, so the input index is
    ``out_index * stride + tap * dilation - start``.
    """

    batch: int
    c_in: int
    c_out: int
    groups: int
    axes: tuple[geo.Axis, geo.Axis, geo.Axis]
    rank: int
    batched: bool
    dtype: np.dtype

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple(a.size_out for a in self.axes[geo.MAX_RANK - self.rank:])

    @property
    def out_shape(self) -> tuple[int, ...]:
        lead = (self.batch, self.c_out) if self.batched else (self.c_out,)
        return lead + self.out_spatial

    def arrays(self, name: str) -> np.ndarray:
        """Per-axis geometry as an int64 array of length 3, for the kernels."""
        return np.array([getattr(a, name) for a in self.axes], dtype=np.int64)


def conv_output_size(size_in: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    """PyTorch's ``floor((in + before + after - dilation * (kernel - 1) - 1) / stride) + 1`` (may be < 1)."""
    return (size_in + before + after - (kernel - 1) * dilation - 1) // stride + 1


def conv_pads(padding, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
              ) -> tuple[tuple[int, int], ...]:
    """(before, after) per axis for a forward conv: ints, pairs, ``"valid"`` or PyTorch's ``"same"``."""
    rank = len(kernel)
    pads = geo.normalize_padding(padding, rank)
    if pads == "valid":
        return ((0, 0),) * rank
    if pads == "same":
        if any(s != 1 for s in stride):
            raise ValueError(f"padding='same' needs stride 1 on every axis (as in PyTorch), got stride={stride}")
        totals = [(k - 1) * d for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return pads


def weight_rank(w_shape: tuple[int, ...], layout: str) -> int:
    """Spatial rank from a weight shape (1 to 3 spatial axes), naming the expected ``layout``."""
    if not 3 <= len(w_shape) <= geo.MAX_RANK + 2:
        raise ValueError(f"weight must have shape {layout} with 1 to 3 spatial axes; got weight.ndim = "
                         f"{len(w_shape)}")
    return len(w_shape) - 2


def make_conv_plan(x_shape, w_shape, x_dtype, w_dtype, stride=1, padding=0, dilation=1, groups=1,
                   bias_shape=None, bias_dtype=None, check_output: bool = True) -> ConvPlan:
    """Validate a forward convolution call and reduce it to a :class:`ConvPlan`.

    ``check_output=False`` skips the memory check of the dense output (for callers that never allocate it).
    """
    dtype = geo.result_dtype(np.dtype(x_dtype), np.dtype(w_dtype))
    if bias_dtype is not None:
        geo.check_numeric(np.dtype(bias_dtype), "bias")
    rank = weight_rank(w_shape, "(C_out, C_in // groups, *kernel)")
    batched, batch = geo.split_batch(x_shape, rank)
    groups = geo.as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    c_out, c_in_g = w_shape[0], w_shape[1]
    kernel = tuple(w_shape[2:])
    c_in = x_shape[-rank - 1]
    spatial = tuple(x_shape[-rank:])
    if c_out % groups:
        raise ValueError(f"output channels (weight.shape[0] = {c_out}) must be divisible by groups ({groups})")
    if c_in != c_in_g * groups:
        raise ValueError(f"x has {c_in} input channels but weight.shape[1] * groups is {c_in_g} * {groups} = "
                         f"{c_in_g * groups}")
    if any(k < 1 for k in kernel):
        raise ValueError(f"kernel sizes (weight.shape[2:]) must be >= 1, got {kernel}")
    if any(i < 1 for i in spatial):
        raise ValueError(f"x spatial sizes must be >= 1, got {spatial}")
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(f"bias must have shape (C_out,) = ({c_out},), got {tuple(bias_shape)}")
    stride = geo.per_axis(stride, rank, "stride", minimum=1)
    dilation = geo.per_axis(dilation, rank, "dilation", minimum=1)
    pairs = conv_pads(padding, kernel, stride, dilation)
    sizes = tuple(conv_output_size(i, k, s, d, b, a)
                  for i, k, s, d, (b, a) in zip(spatial, kernel, stride, dilation, pairs))
    if any(o < 1 for o in sizes):
        raise ValueError(f"the output size must be >= 1 on every axis, got {sizes}: the padded input "
                         f"{tuple(i + b + a for i, (b, a) in zip(spatial, pairs))} is shorter than the dilated "
                         f"kernel {tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))}")
    lead = tuple(geo.Axis(1, 1, 1, 1, 0, 1) for _ in range(geo.MAX_RANK - rank))
    axes = lead + tuple(geo.Axis(i, k, s, d, b, o)
                        for i, k, s, d, (b, _), o in zip(spatial, kernel, stride, dilation, pairs, sizes))
    plan = ConvPlan(batch=batch, c_in=c_in, c_out=c_out, groups=groups, axes=axes, rank=rank, batched=batched,
                    dtype=dtype)
    if check_output:
        geo.check_memory(plan.out_shape, dtype, "the output")
    return plan


def conv(x, weight, bias=None, stride: IntOrSeq = 1, padding: Padding = 0, dilation: IntOrSeq = 1,
         groups: int = 1) -> np.ndarray:
    """Forward convolution (cross-correlation, the kernel is not flipped) with PyTorch ``conv`` semantics.

    ``y[n, co, o] = bias[co] + sum_{ci, k} x_padded[n, g * C_in_g + ci, o * stride + k * dilation] *
    weight[co, ci, k]`` per spatial axis, with ``g = co // (C_out // groups)``; the output length is
    ``floor((in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1``. It is the adjoint of
    :func:`fastdeconv.conv_transpose` with the same ``weight`` array and geometry:
    ``<conv(x, w), y> == <x, conv_transpose(y, w, output_size=x.shape)>``.

    Parameters
    ----------
    x : array_like
        Input of shape (N, C_in, *spatial) or unbatched (C_in, *spatial); ``weight.ndim - 2`` spatial axes (1-3).
    weight : array_like
        Kernel of shape (C_out, C_in // groups, *kernel) (the PyTorch ``Conv`` layout).
    bias : array_like, optional
        Shape (C_out,).
    stride, dilation : int or sequence of int
        One value (>= 1) for every spatial axis or one per axis.
    padding : int, sequence, "valid" or "same"
        Zeros added on both sides (int or one int per axis), one (before, after) pair per axis, ``"valid"``
        (none) or ``"same"`` (PyTorch: stride 1 only, output = input, the odd extra zero at the end).
    groups : int
        Blocked channel groups; C_in and C_out are both split into ``groups`` parts.

    Returns
    -------
    numpy.ndarray
        (N, C_out, *out_spatial) or (C_out, *out_spatial); float32 when x and weight are both float32,
        float64 otherwise.

    Raises
    ------
    TypeError
        Complex or non-numeric inputs, non-integer geometry.
    ValueError
        Inconsistent shapes, geometry outside its rules, an empty output, an output too large for memory.

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> fd.conv(np.arange(5.0)[None], np.array([[[1.0, 1.0]]]))
    array([[1., 3., 5., 7.]])
    """
    x, weight = _as_array(x, "x"), _as_array(weight, "weight")
    bias = None if bias is None else _as_array(bias, "bias")
    plan = make_conv_plan(x.shape, weight.shape, x.dtype, weight.dtype, stride, padding, dilation, groups,
                          None if bias is None else bias.shape, None if bias is None else bias.dtype)
    y = np.empty(plan.out_shape, plan.dtype)
    run_conv(plan, x, weight, bias, y)
    return y


def run_conv(plan: ConvPlan, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, y: np.ndarray,
             dual: np.ndarray | None = None, grad_weight: np.ndarray | None = None) -> bool:
    """Execute a validated plan into the C-contiguous ``y`` (fully overwritten).

    With ``dual`` (shaped like ``y``) and ``grad_weight`` (C-contiguous, shaped like ``weight``), the GEMM form
    also writes ``grad_weight[co, ci, k] = sum_{n, o} dual[n, co, o] * x_padded[n, ci, o * stride + k * dilation]``
    from the same columns: the weight gradient of the transposed convolution ``dual -> x`` (see
    :mod:`fastdeconv.grad`). Returns whether it did (only the GEMM form does).
    """
    if y.size == 0:
        return False
    dtype = plan.dtype
    x5 = _contiguous(x, dtype).reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes))
    w5 = _contiguous(weight, dtype).reshape((plan.c_out, plan.c_in // plan.groups) +
                                            tuple(a.kernel for a in plan.axes))
    b = np.zeros(plan.c_out, dtype) if bias is None else _contiguous(bias, dtype)
    y5 = y.reshape((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes))
    if plan.c_in == 0:  # no input channels: the output is the bias
        y5[...] = b.reshape((1, -1, 1, 1, 1))
        return False
    # the padded input the correlation reads: exactly the extent the outputs reach (zeros beyond x)
    needed = tuple((a.size_out - 1) * a.stride + a.span for a in plan.axes)
    if _sparse(plan, needed):
        _conv_sparse(plan, x5, w5, None if bias is None else b, y5)
        return False
    if any(a.start for a in plan.axes) or any(n > a.size_in for n, a in zip(needed, plan.axes)):
        shape = (plan.batch, plan.c_in) + needed
        geo.check_memory(shape, dtype, "the padded input")
        xp = np.empty(shape, dtype)
        fill(x5, xp, np.ones(3, np.int64), plan.arrays("start"))
    else:
        xp = x5
    if use_gemm(plan):
        dual5 = None if dual is None else _contiguous(dual, dtype).reshape(y5.shape)
        _conv_gemm(plan, xp, w5, None if bias is None else b, y5, dual5, grad_weight)
        return dual is not None
    correlate(xp, w5, b, y5, plan.groups, plan.arrays("stride"), plan.arrays("dilation"), tile_for(plan))
    return False


# A padded input more than this many times larger than x and the gathered columns together is mostly zeros that
# no product needs: the call gathers the columns from x instead (``_conv_sparse``).
_SPARSE_RATIO = 8


def _sparse(plan: ConvPlan, needed: tuple[int, ...]) -> bool:
    """Whether the padded input (``needed`` per axis) would be mostly padding: a stride, dilation or padding
    large against the sizes (the adjoint of a transposed convolution with a huge dilation and crop)."""
    taps_outputs = _prod(a.kernel * a.size_out for a in plan.axes)
    return _prod(needed) > _SPARSE_RATIO * (_prod(a.size_in for a in plan.axes) + taps_outputs)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


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


def _conv_sparse(plan: ConvPlan, x5: np.ndarray, w5: np.ndarray, b: np.ndarray | None, y5: np.ndarray) -> None:
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
_COL_ELEMENTS = 1 << 22
# The GEMM form cuts a call into at least this many tasks where the layer allows (row blocks, channel blocks), so
# that every thread has work; a property of the layer, never of the thread count, so that the bits stay.
_MIN_TASKS = 8
# The weight gradient's partial products (one per run of blocks): at most this many elements in all.
_PARTIAL_ELEMENTS = 1 << 23


def use_gemm(plan: ConvPlan) -> bool:
    """im2col + BLAS when each column is reused by enough output channels and there is enough work.

    The direct kernel streams every output row once per (input channel, tap), which bounds it by memory
    traffic; the matrix product reuses each loaded column for all the group's output channels. Rows whose
    columns alone would exceed the column buffer (very long 1-D signals) stay direct.
    """
    c_out_g, c_in_g = plan.c_out // plan.groups, plan.c_in // plan.groups
    taps = c_in_g * int(np.prod([a.kernel for a in plan.axes]))
    outputs = int(np.prod([a.size_out for a in plan.axes]))
    one_row = taps * plan.axes[2].size_out  # the smallest column block: one output row
    return (c_out_g >= 4 and taps >= 4 and one_row <= _COL_ELEMENTS
            and plan.batch * plan.c_out * taps * outputs >= 1 << 20)


def _conv_gemm(plan: ConvPlan, xp: np.ndarray, w5: np.ndarray, b: np.ndarray | None, y5: np.ndarray,
               dual5: np.ndarray | None = None, grad_weight: np.ndarray | None = None) -> None:
    """Forward convolution as im2col (numba) + one matrix product per block of output rows (BLAS).

    The blocks run on the worker pool (``run_parallel``), each worker with its own column buffer. With
    ``dual5``, also ``grad_weight = sum over blocks of dual_block @ cols.T`` (see :func:`run_conv`): the blocks
    are cut into a fixed number of runs of consecutive blocks, each run summed into its own partial product in
    block order, and the partials added in run order, so the bits depend on the layer only.
    """
    g, c_in_g, c_out_g = plan.groups, plan.c_in // plan.groups, plan.c_out // plan.groups
    kernel, stride, dilation = plan.arrays("kernel"), plan.arrays("stride"), plan.arrays("dilation")
    taps = c_in_g * int(np.prod(kernel))
    out_d, out_h, out_w = (a.size_out for a in plan.axes)
    rows = out_d * out_h
    block = max(1, min(rows, _COL_ELEMENTS // max(1, taps * out_w)))
    block = min(block, -(-rows // min(rows, -(-_MIN_TASKS // (plan.batch * g)))))
    wm = w5.reshape(plan.c_out, taps)
    items = [(n, gi, lo) for gi in range(g) for n in range(plan.batch) for lo in range(0, rows, block)]
    if dual5 is None:
        tasks = [(0, [item]) for item in items]
    else:  # runs of consecutive blocks of one group, each with its partial product of the weight gradient
        per_group = len(items) // g
        runs = max(1, min(_MIN_TASKS, per_group, _PARTIAL_ELEMENTS // max(1, plan.c_out * taps)))
        step = -(-per_group // runs)
        tasks = list(enumerate(items[gi * per_group + lo:gi * per_group + min(per_group, lo + step)]
                               for gi in range(g) for lo in range(0, per_group, step)))
        partials = np.zeros((len(tasks), c_out_g, taps), plan.dtype)

    def work(claimed):
        buf = np.empty(taps * block * out_w, plan.dtype)
        part = None if dual5 is None else np.empty((c_out_g, taps), plan.dtype)
        for k, run in claimed:
            for n, gi, lo in run:
                hi = min(rows, lo + block)
                chans = slice(gi * c_out_g, (gi + 1) * c_out_g)
                cols = buf[:taps * (hi - lo) * out_w].reshape(taps, (hi - lo) * out_w)
                im2col(xp, cols, n, gi * c_in_g, kernel, stride, dilation, lo, hi, out_h, out_w)
                np.matmul(wm[chans], cols, out=y5[n].reshape(plan.c_out, rows * out_w)[chans, lo * out_w:hi * out_w])
                if part is not None:
                    dn = dual5[n].reshape(plan.c_out, rows * out_w)
                    np.matmul(dn[chans, lo * out_w:hi * out_w], cols.T, out=part)
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
