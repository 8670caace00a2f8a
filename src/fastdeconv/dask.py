"""Chunked, halo-correct transposed convolution on Dask arrays: the Dask twin of :func:`fastdeconv.conv_transpose`.

Every output block is computed independently from the window of input elements that reach it (its input
block plus a halo of about ``dilation * (kernel - 1) / stride`` elements per side), by the same numba kernels
as the in-memory call, run on a :class:`~fastdeconv._geometry.Plan` whose per-axis ``start`` and ``size_out``
are shifted so that it computes exactly that block. The blocks run through one
:class:`~fastdeconv.ConvTranspose` made for the whole call (one key of the graph, which every block task
depends on): the weight is converted and packed once per process, and the distributed scheduler ships the
operator once per worker, not once per task. Along one spatial axis the one index map is::

    out_index = in_index * stride + tap * dilation - start

so an output block ``[o_lo, o_hi)`` computed from the input window ``[i_lo, i_hi)`` is the plan with
``size_in = i_hi - i_lo``, ``start = start + o_lo - i_lo * stride`` and ``size_out = o_hi - o_lo``. The
blocks all run the variant the in-memory call of the whole array runs (a ``Request`` fixing it: the cost model's,
or a calibration measurement recorded for these shapes). The direct numba kernels (and the zero-fill form)
sum the terms of every output element in a fixed order, so then the result is bitwise equal to the in-memory
call whatever the chunking; with a BLAS-backed variant (channel-rich layers) OpenBLAS may take other code paths
for a block's smaller GEMMs, and the two agree to floating-point rounding (bitwise in practice for
``scatter-gemm``; ~1e-6 relative for the ``-rows`` variants).

This module needs ``dask[array]`` (``pip install "fastdeconv[dask]"``); the core package never imports it.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import product

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError("fastdeconv.dask needs dask[array]: pip install \"fastdeconv[dask]\"") from exc

from . import _cost
from . import _geometry as geo
from ._api import decide_variant
from ._geometry import IntOrSeq, Padding
from ._kernels._index import reaching_range
from ._operator import ConvTranspose, run_block

__all__ = ["conv_transpose"]



def conv_transpose(x, weight, bias=None, stride: IntOrSeq = 1, padding: Padding = 0,
                   output_padding: IntOrSeq = 0, groups: int = 1, dilation: IntOrSeq = 1, *,
                   method: str = "auto", activation=None, data_format: str = "channels_first") -> da.Array:
    """Lazy transposed convolution of a chunked Dask array, equal to :func:`fastdeconv.conv_transpose`.

    The arguments and semantics are those of the in-memory :func:`fastdeconv.conv_transpose` (PyTorch
    ``conv_transpose1d/2d/3d``, plus asymmetric ``(before, after)`` pads and TensorFlow ``"same"``). Each
    output block is computed from its input block plus the halo its footprint needs, so the whole output
    never has to fit in memory: only one output block and its input window per running task.

    Parameters
    ----------
    x : dask.array.Array
        Input of shape (N, C_in, *spatial) or unbatched (C_in, *spatial), 1 to 3 spatial axes, chunked along
        the batch and spatial axes in any sizes (chunks smaller than the kernel footprint included). The
        channel axis is rechunked to one block when it is split. Chunk sizes must be known.
    weight : array_like or dask.array.Array
        Kernel of shape (C_in, C_out // groups, *kernel) (PyTorch/ONNX layout, not flipped); rechunked to one
        block, from which one operator is made for all the blocks.
    bias : array_like or dask.array.Array, optional
        Shape (C_out,).
    stride, output_padding, dilation : int or sequence of int
        One value for every spatial axis or one per axis; ``output_padding < max(stride, dilation)``.
    padding : int, sequence, "valid" or "same"
        As in :func:`fastdeconv.conv_transpose`: ints cropped from both ends, one (before, after) pair per
        axis, ``"valid"`` or ``"same"`` (output = input * stride).
    groups : int
        Blocked channel groups.
    method : {"auto", "scatter", "gather", "zerofill"}
        Data-flow form of the per-block kernel; ``"auto"`` is resolved once, for the whole array, exactly
        as the in-memory call resolves it.
    activation : None, str or tuple
        The fused epilogue, as for :func:`fastdeconv.conv_transpose` (applied in each block's kernels).
    data_format : {"channels_first", "channels_last"}
        As for :func:`fastdeconv.conv_transpose`: channels-last x is (N, *spatial, C_in) and gives
        (N, *out_spatial, C_out), the channel axis the last one (one block).

    Returns
    -------
    dask.array.Array
        Lazy (N, C_out, *out_spatial) or (C_out, *out_spatial) array; float32 when x and weight are both
        float32, float64 otherwise. Along each spatial axis the output chunks are ``stride`` times the input
        chunks (the first boundaries at ``stride * input boundary``), the last chunk taking what the crop
        and ``output_padding`` leave; the batch chunks are those of ``x`` and the channel axis is one block.

    Raises
    ------
    TypeError
        ``x`` is not a Dask array; complex or non-numeric inputs; non-integer geometry.
    ValueError
        The same shape and geometry errors as :func:`fastdeconv.conv_transpose` (with the same messages);
        unknown (NaN) chunk sizes; one output block larger than this machine's memory.

    Notes
    -----
    Unlike the in-memory call the total output may exceed the machine's memory (it is written block by
    block, e.g. with :func:`dask.array.to_zarr`); only the largest block is checked against it.

    The result is bitwise equal to the in-memory call whenever that runs a direct numba kernel or the
    zero-fill form (the cost model's choice for few channels, see :func:`fastdeconv.plan`); with the
    BLAS-backed variants for channel-rich layers (every block runs the whole array's variant) the per-block
    GEMMs agree with it to rounding.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastdeconv as fd, fastdeconv.dask
    >>> x = da.ones((1, 1, 6, 6), chunks=(1, 1, 2, 3))
    >>> y = fastdeconv.dask.conv_transpose(x, np.ones((1, 1, 4, 4)), stride=2, padding=1)
    >>> y.chunks[2:]
    ((4, 4, 4), (6, 6))
    >>> bool((y.compute() == fd.conv_transpose(np.ones((1, 1, 6, 6)), np.ones((1, 1, 4, 4)), stride=2,
    ...                                         padding=1)).all())
    True
    """
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask.array.Array (wrap a NumPy array with dask.array.from_array(x, "
                        f"chunks=...)), got {type(x).__name__}")
    if any(np.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError("x must have known chunk sizes; call x.compute_chunk_sizes() first")
    w = _as_dask(weight, "weight")
    b = None if bias is None else _as_dask(bias, "bias")
    request = geo.make_request(method)
    plan = _full_plan(x, w, b, stride, padding, output_padding, groups, dilation, activation, data_format)

    batched, last = plan.batched, plan.channels_last
    xb = x if batched else x[None]
    channel = xb.ndim - 1 if last else 1
    if len(xb.chunks[channel]) > 1:
        xb = xb.rechunk({channel: -1})
    spatial_chunks = xb.chunks[1:-1] if last else xb.chunks[2:]
    # every block runs the whole array's variant (the same terms in the same order), decided as the in-memory
    # call decides it: without a measurement, this fixes the model's pick for the process
    variant = decide_variant(plan, _cost.choose(plan, request).ranking(), request=request)
    fixed = geo.Request(_cost.FORM_OF[variant], variant)
    rank, lead = plan.rank, geo.MAX_RANK - plan.rank
    axes = plan.axes[lead:]
    w = w.rechunk(-1)
    b = None if b is None else b.rechunk(-1)

    in_bounds = [_bounds(c) for c in spatial_chunks]
    out_bounds = [_output_bounds(bnd, a) for bnd, a in zip(in_bounds, axes)]
    windows = [[_window(a, lo, hi) for lo, hi in zip(ob[:-1], ob[1:])] for ob, a in zip(out_bounds, axes)]
    _check_block_memory(plan, xb.chunks[0], out_bounds, windows)

    name = "conv_transpose-" + tokenize(xb.name, w.name, None if b is None else b.name, plan, fixed, xb.chunks)
    w_key = (w.name,) + (0,) * w.ndim
    b_key = None if b is None else (b.name, 0)
    # one operator for the whole call, one key of the graph that every block task depends on: the weight is
    # converted and packed once per process that runs blocks (not once per block), and the distributed scheduler
    # ships it (weight, bias and geometry: ``ConvTranspose.__getstate__``) once per worker, not once per task
    op_key = ("conv_transpose-operator-" + tokenize(w.name, None if b is None else b.name, stride, padding,
                                                    output_padding, groups, dilation, method, plan.activation,
                                                    last), 0)
    dsk = {op_key: (_operator, w_key, b_key, (stride, padding, output_padding, groups, dilation, method,
                                              activation, plan.data_format), w.shape,
                    None if b is None else b.shape)}
    for nb, n_size in enumerate(xb.chunks[0]):
        for idx in product(*(range(len(ws)) for ws in windows)):
            wins = [windows[ax][j] for ax, j in enumerate(idx)]
            keys, copies = _pieces(xb.name, nb, in_bounds, wins, last)
            block_axes = tuple(dataclasses.replace(a, size_in=hi - lo, start=a.start + o_lo - lo * a.stride,
                                                   size_out=o_hi - o_lo)
                               for a, (lo, hi, o_lo, o_hi) in zip(axes, wins))
            block_plan = dataclasses.replace(plan, batch=n_size, batched=True,
                                             axes=plan.axes[:lead] + block_axes)
            dsk[(name, nb) + idx + (0,) if last else (name, nb, 0) + idx] = (_compute_block, keys, copies, block_plan,
                                                                             op_key, fixed)
    dependencies = [xb, w] + ([] if b is None else [b])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=dependencies)
    spatial = tuple(tuple(np.diff(ob).tolist()) for ob in out_bounds)
    chunks = (xb.chunks[0],) + spatial + ((plan.c_out,),) if last else (xb.chunks[0], (plan.c_out,)) + spatial
    y = da.Array(graph, name, chunks, meta=np.empty((0,) * (rank + 2), plan.dtype))
    return y if batched else y[0]


# --------------------------------------------------------------------------- graph construction


def _as_dask(a, name: str) -> da.Array:
    """weight / bias as a Dask array (NumPy-like inputs are wrapped as one block)."""
    if isinstance(a, da.Array):
        return a
    try:
        a = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be array-like: {exc}") from None
    return da.from_array(a, chunks=-1)


def _full_plan(x: da.Array, w: da.Array, b: da.Array | None, stride, padding, output_padding, groups, dilation,
               activation=None, data_format="channels_first") -> geo.Plan:
    """The core's plan for the whole call, validated by ``make_plan`` with the core's own messages.

    The whole output is never held at once, so it may exceed this machine's memory (``limit_memory=False``);
    only the largest block is checked against it (``_check_block_memory``).
    """
    return geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, stride, padding, output_padding, groups, dilation,
                         None, options=geo.PlanOptions(None if b is None else b.shape, None if b is None else b.dtype,
                                                       limit_memory=False, activation=activation,
                                                       data_format=data_format))


def _bounds(chunks: Sequence[int]) -> list[int]:
    return [0] + np.cumsum(chunks).tolist()


def _output_bounds(in_bounds: list[int], axis: geo.Axis) -> list[int]:
    """Output block boundaries: ``stride`` times the inner input boundaries, empty blocks dropped."""
    inner = [min(bd * axis.stride, axis.size_out) for bd in in_bounds[1:-1]]
    out = [0]
    for bd in inner + [axis.size_out]:
        if bd > out[-1]:
            out.append(bd)
    return out


def _window(axis: geo.Axis, o_lo: int, o_hi: int) -> tuple[int, int, int, int]:
    """(i_lo, i_hi, o_lo, o_hi): the input elements that reach output block ``[o_lo, o_hi)``.

    A block no input reaches (zeros of the crop extension or of ``output_padding``) still gets one input
    element, which the shifted plan maps outside the block.
    """
    lo, hi = reaching_range(axis.size_in, o_lo, o_hi, axis.stride, axis.kernel, axis.dilation, axis.start)
    lo = min(max(lo, 0), axis.size_in - 1)
    return lo, max(hi, lo + 1), o_lo, o_hi


def _pieces(x_name: str, nb: int, in_bounds: list[list[int]], wins, channels_last: bool = False) -> tuple[list, list]:
    """Keys of the input blocks a window overlaps and, for each, (window slices, block slices, the block's
    declared spatial shape)."""
    per_axis = []
    for bnd, (lo, hi, _, _) in zip(in_bounds, wins):
        first = bisect_right(bnd, lo) - 1
        last = bisect_left(bnd, hi) - 1
        entries = []
        for j in range(first, last + 1):
            a, z = max(lo, bnd[j]), min(hi, bnd[j + 1])
            if z > a:
                entries.append((j, slice(a - lo, z - lo), slice(a - bnd[j], z - bnd[j]), bnd[j + 1] - bnd[j]))
        per_axis.append(entries)
    keys, copies = [], []
    for combo in product(*per_axis):
        idx = tuple(e[0] for e in combo)
        keys.append((x_name, nb) + idx + (0,) if channels_last else (x_name, nb, 0) + idx)
        copies.append((tuple(e[1] for e in combo), tuple(e[2] for e in combo), tuple(e[3] for e in combo)))
    return keys, copies


def _check_block_memory(plan: geo.Plan, batch_chunks, out_bounds, windows) -> None:
    """Refuse a chunking whose largest block (input window + output block) could never be allocated."""
    n = max(batch_chunks) if len(batch_chunks) else 0
    out_sizes = [int(np.max(np.diff(ob))) for ob in out_bounds]
    win_sizes = [max(hi - lo for lo, hi, _, _ in ws) for ws in windows]
    geo.check_memory((n, plan.c_out) + tuple(out_sizes), plan.dtype, "one output block (use smaller chunks)")
    geo.check_memory((n, plan.c_in) + tuple(win_sizes), plan.dtype, "one input window (use smaller chunks)")


# --------------------------------------------------------------------------- the task


def _check_block(block, declared: tuple[int, ...], name: str) -> None:
    """Refuse a computed block that is not an array of its declared shape, naming the argument: a block whose real
    shape contradicts the one its Dask array declares (a wrong ``shape`` given to ``from_delayed``, a misbehaving
    ``map_blocks``) would otherwise be reshaped or broadcast into a wrong result."""
    shape = getattr(block, "shape", None)
    if shape is None or tuple(shape) != tuple(declared):
        raise ValueError(f"a block of {name} has shape {None if shape is None else tuple(shape)}, but the Dask "
                         f"array of {name} declares {tuple(declared)} for it (check the shape/chunks given where "
                         f"{name} was built, e.g. dask.array.from_delayed(..., shape=...))")


def _operator(weight, bias, geometry: tuple, w_shape: tuple[int, ...], b_shape: tuple[int, ...] | None
              ) -> ConvTranspose:
    """The call's operator, made from the computed weight and bias blocks (their shapes checked first)."""
    _check_block(weight, w_shape, "weight")
    if bias is not None:
        _check_block(bias, b_shape, "bias")
    stride, padding, output_padding, groups, dilation, method, activation, data_format = geometry
    return ConvTranspose(weight, bias, stride, padding, output_padding, groups, dilation, method=method,
                         activation=activation, data_format=data_format)


def _compute_block(blocks: list[np.ndarray], copies, plan: geo.Plan, op: ConvTranspose,
                   request: geo.Request) -> np.ndarray:
    """One output block: gather the input window from its blocks, then run the call's operator on the shifted
    plan, with the whole array's variant (``request``)."""
    lead = geo.MAX_RANK - plan.rank
    spatial_in = tuple(a.size_in for a in plan.axes[lead:])
    last = plan.channels_last
    window = np.empty((plan.batch,) + spatial_in + (plan.c_in,) if last else (plan.batch, plan.c_in) + spatial_in,
                      plan.dtype)
    for block, (_, _, spatial) in zip(blocks, copies):
        _check_block(block, (plan.batch,) + spatial + (plan.c_in,) if last else (plan.batch, plan.c_in) + spatial,
                     "x")
    for block, (dst, src, _) in zip(blocks, copies):
        if last:
            window[(slice(None),) + dst] = block[(slice(None),) + src]
        else:
            window[(Ellipsis,) + dst] = block[(Ellipsis,) + src]
    y = np.empty(plan.out_shape, plan.dtype)
    run_block(op, plan, request, window, y)
    return y
