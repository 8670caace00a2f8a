"""Forward convolution (PyTorch ``conv1d/2d/3d`` cross-correlation), the adjoint of :func:`conv_transpose`.

One spatial axis of the forward convolution reads ``x[out_index * stride + tap * dilation - start]`` -- the
index map of :mod:`fastdeconv._geometry` with input and output swapped, so
``<conv(x, w), y> == <x, conv_transpose(y, w)>`` for the same ``weight`` array and geometry. Channel-rich layers
run im2col (the padding written as zeros into the columns) + BLAS; the others correlate a padded copy of the
input densely (``_tasks.correlate``), or gather columns straight from x when padding would dominate. Layers
with one input channel per group (depthwise) pad and phase-split the rows they read in a per-task scratch
(``_tasks.depthwise``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from . import _conv_gemm, _cost, _model, _profile, _s2d
from . import _geometry as geo
from ._api import as_array, contiguous, exact_key, execute
from ._caches import Table, memo
from ._geometry import IntOrSeq, Padding
from ._kernels.conv import correlate_small, im2col
from ._runtime import run_parallel
from ._scan import max_abs
from ._tasks import correlate, depthwise, fill
from ._threads import get_num_threads, max_threads
from ._tiling import tile_for
from .variants import _terms


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

    def __hash__(self) -> int:  # (computed once: every memoised decision about a plan hashes it)
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.batch, self.c_in, self.c_out, self.groups, self.axes, self.rank, self.batched,
                      self.dtype))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple(a.size_out for a in self.axes[geo.MAX_RANK - self.rank:])

    @property
    def out_shape(self) -> tuple[int, ...]:
        lead = (self.batch, self.c_out) if self.batched else (self.c_out,)
        return lead + self.out_spatial

    def arrays(self, name: str) -> np.ndarray:
        """Per-axis geometry as an int64 array of length 3, for the kernels (made once per plan and name; the
        kernels only read it)."""
        return _axis_array(self, name)


@memo(1024)
def _axis_array(plan: ConvPlan, name: str) -> np.ndarray:
    return np.array([getattr(a, name) for a in plan.axes], dtype=np.int64)


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
         groups: int = 1, *, data_format: str = "channels_first") -> np.ndarray:
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
    data_format : {"channels_first", "channels_last"}
        The layout of x and of the result; channels-last x is (N, *spatial, C_in) and gives (N, *out_spatial,
        C_out). (The forward convolution runs its channels-first kernels between two transposes.)

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
    x, weight = as_array(x, "x"), as_array(weight, "weight")
    bias = None if bias is None else as_array(bias, "bias")
    last = geo.check_data_format(data_format)
    if last:
        rank = weight_rank(weight.shape, "(C_out, C_in // groups, *kernel)")
        geo.split_batch(x.shape, rank)
        channel = x.ndim - rank - 1  # where the channels-first x has them
        if weight.shape[1] * max(1, groups if isinstance(groups, int) else 1) != x.shape[-1]:
            raise ValueError(f"x has {x.shape[-1]} input channels on its last axis (data_format='channels_last': x "
                             f"is (N, *spatial, C_in)) but weight.shape[1] * groups is {weight.shape[1]} * "
                             f"{groups}; x.shape = {x.shape}")
        x = np.moveaxis(x, -1, channel)
    key = exact_key(stride, padding, dilation, groups)
    if key is not None:
        key += (x.shape, weight.shape, x.dtype, weight.dtype, None if bias is None else (bias.shape, bias.dtype))
    plan = None if key is None else _PLANS.get(key)
    if plan is None:
        plan = make_conv_plan(x.shape, weight.shape, x.dtype, weight.dtype, stride, padding, dilation, groups,
                              None if bias is None else bias.shape, None if bias is None else bias.dtype)
        if key is not None:
            _PLANS.put(key, plan)
    y = np.empty(plan.out_shape, plan.dtype)
    tiny_call = _tiny_call(plan)
    if tiny_call is not None:  # (run_conv's route for it, without its per-call steps)
        x_shape, w_shape, y_shape, geometry = tiny_call
        b = _zeros(plan.c_out, plan.dtype) if bias is None else contiguous(bias, plan.dtype)
        correlate_small(contiguous(x, plan.dtype).reshape(x_shape), contiguous(weight, plan.dtype).reshape(w_shape),
                        b, y.reshape(y_shape), plan.groups, *geometry)
    else:
        run_conv(plan, x, weight, bias, y)
    return np.ascontiguousarray(np.moveaxis(y, channel, -1)) if last else y


def _tiny_call(plan: ConvPlan) -> tuple | None:
    """Where ``run_conv`` would correlate x in place (``tiny``, and no other route before it): the canonical
    shapes and geometry arrays of that call; else None."""
    return _tiny_call_at(plan, generation())


@memo(512)
def _tiny_call_at(plan: ConvPlan, model_generation: int) -> tuple | None:
    """``_tiny_call`` on the model of ``model_generation`` (the route depends on the profile)."""
    if route(plan) != "tiny" or prod(plan.out_shape) == 0:
        return None
    spatial_in, spatial_out = tuple(a.size_in for a in plan.axes), tuple(a.size_out for a in plan.axes)
    return ((plan.batch, plan.c_in) + spatial_in, (plan.c_out, plan.c_in // plan.groups) + tuple(
        a.kernel for a in plan.axes), (plan.batch, plan.c_out) + spatial_out,
        (plan.arrays("stride"), plan.arrays("dilation"), plan.arrays("start")))


@memo(64)
def _zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """A zero bias (read only by the kernels)."""
    return np.zeros(n, dtype)


@memo(512)
def _needed(plan: ConvPlan) -> tuple[int, ...]:
    """The padded input the correlation reads: exactly the extent the outputs reach (zeros beyond x)."""
    return tuple((a.size_out - 1) * a.stride + a.span for a in plan.axes)


@memo(512)
def _padded_shape(plan: ConvPlan) -> tuple[int, ...] | None:
    """The padded copy of x the direct correlation reads, or None when it reads x itself (checked against the
    memory rule: the check raises again on every call that would need it)."""
    needed = _needed(plan)
    if not any(a.start for a in plan.axes) and not any(n > a.size_in for n, a in zip(needed, plan.axes)):
        return None
    shape = (plan.batch, plan.c_in) + needed
    geo.check_memory(shape, plan.dtype, "the padded input")
    return shape


_ONES = np.ones(3, np.int64)  # (read only by the kernels)


@memo(512)
def _tile(plan: ConvPlan, threads: int) -> np.ndarray:
    """``tile_for(plan)`` at ``threads`` threads (read only by the kernels)."""
    return tile_for(plan)


@memo(512)
def _sparse(plan: ConvPlan) -> bool:
    return _conv_gemm.mostly_padding(plan, _needed(plan))


def plan(x_shape, w_shape, *, op: str = "conv_transpose", stride=1, padding=0, output_padding=0, groups: int = 1,
         dilation=1, output_size=None, method: str = "auto", dtype=np.float32,
         data_format: str = "channels_first") -> _cost.Choice:
    """What runs for these shapes, and the estimates behind the choice: ``conv_transpose``'s variant, or
    (``op="conv"``) the route of the forward convolution ``conv``.

    Parameters
    ----------
    x_shape : sequence of int
        Input shape (N, C_in, *spatial) or unbatched (C_in, *spatial) (channels-last: (N, *spatial, C_in)).
    w_shape : sequence of int
        Weight shape: (C_in, C_out // groups, *kernel) for ``conv_transpose``; (C_out, C_in // groups, *kernel)
        for ``conv``.
    op : {"conv_transpose", "conv"}
        The operation planned.
    stride, padding, output_padding, groups, dilation, output_size
        The geometry, exactly as for :func:`fastdeconv.conv_transpose` (``conv``: ``stride``, ``padding``,
        ``dilation`` and ``groups`` as for :func:`fastdeconv.conv`; no ``output_padding`` or ``output_size``).
    method : {"auto", "scatter", "gather", "zerofill"} or a variant's name
        ``conv_transpose``'s requested form; ``"auto"`` compares all variants; a variant's name
        (``fastdeconv.variants()``) pins it (a ValueError lists the applicable variants where it does not
        apply). ``conv`` has no form to request: ``"auto"`` only.
    dtype : numpy dtype, default float32
        Data type of x and weight (float32, or anything else meaning float64).
    data_format : {"channels_first", "channels_last"}
        The layout of x, as for :func:`fastdeconv.conv_transpose` and :func:`fastdeconv.conv`.

    Returns
    -------
    Choice
        ``method`` (the form that runs; ``"conv"`` for ``op="conv"``), ``variant`` (the variant, or conv's
        route: one of ``fastdeconv._forward.ROUTES``), ``estimates`` (seconds of each candidate the model
        prices, cheapest first; conv's direct routes are chosen by rule and have none), ``flops``, ``threads``,
        ``serial`` and a one-line ``reason``. The estimates come from the cost model on this machine's profile
        (:mod:`fastdeconv.machine`); nothing is timed. When wisdom is recorded for these shapes
        (``ConvTranspose(..., tune=True)``, ``python -m fastdeconv tune``, or imported: see
        :mod:`fastdeconv.calibration`), ``plan`` reports that measured choice and the times.

    Raises
    ------
    TypeError, ValueError
        For shapes or geometry that the operation would refuse, with the same messages; an unknown ``op``, or
        an argument ``conv`` does not take.

    Examples
    --------
    >>> import fastdeconv as fd
    >>> fd.plan((64, 512, 4, 4), (512, 256, 4, 4), stride=2, padding=1).variant
    'scatter-gemm'
    >>> fd.plan((8, 64, 64, 64), (64, 1, 4, 4), op="conv", stride=2, padding=1, groups=64).variant
    'depthwise'
    """
    if op == "conv_transpose":
        return _cost.plan(x_shape, w_shape, stride=stride, padding=padding, output_padding=output_padding,
                          groups=groups, dilation=dilation, output_size=output_size, method=method, dtype=dtype,
                          data_format=data_format)
    if op != "conv":
        raise ValueError(f"op must be 'conv_transpose' or 'conv', got {op!r}")
    zero = type(output_padding) is int or (type(output_padding) is tuple and all(type(v) is int for v in
                                                                              output_padding))
    for name, value, unset in (("output_padding", output_padding, zero and not any(np.atleast_1d(output_padding))),
                               ("output_size", output_size, output_size is None),
                               ("method", method, type(method) is str and method == "auto")):
        if not unset:
            raise ValueError(f"{name} applies to op='conv_transpose' only (conv has none); got {value!r}")
    x_shape = _cost.check_shape(x_shape, "x_shape")
    w_shape = _cost.check_shape(w_shape, "w_shape")
    dt = np.dtype(dtype)
    last = geo.check_data_format(data_format)
    if last:  # (conv runs channels-last data through its channels-first routes)
        rank = weight_rank(w_shape, "(C_out, C_in // groups, *kernel)")
        geo.split_batch(x_shape, rank)
        channel = len(x_shape) - rank - 1
        x_shape = x_shape[:channel] + x_shape[-1:] + x_shape[channel:-1]
    p = make_conv_plan(x_shape, w_shape, dt, dt, stride, padding, dilation, groups)
    way = route(p)
    estimates = tuple(sorted(route_estimates(p).items(), key=lambda kv: kv[1]))
    return _cost.Choice(method="conv", variant=way, estimates=estimates, flops=2 * _macs(p), threads=max_threads(),
                        serial=way == "tiny",
                        reason=ROUTES[way] + (" (channels-last x and y transposed around it)" if last else ""))


def generation() -> int:
    """The cost model's generation, the machine profile loaded first: conv's decisions that read estimates are
    memoised per generation, so that they come from this machine's profile (whichever call of the process comes
    first) and follow a change of it, as ``conv_transpose``'s choices do."""
    _profile.ensure()
    return _model.generation


# conv's routes (``route``), in the order ``run_conv`` tries them, and what each does
ROUTES = {
    "bias": "no input channels: the output is the bias",
    "sparse": "most of the input is padding: the products of the real inputs alone (sparse columns)",
    "winograd": "stride 1: the equivalent transposed convolution, which conv_transpose's planner runs with "
                "Winograd F(2, r)",
    "s2d-winograd": "kernel = 2 x stride: the stride-1 correlation of the space-to-depth input with Winograd "
                    "F(2, 2), one GEMM per transform point",
    "s2d-transposed": "strided: the space-to-depth input's stride-1 correlation as a transposed convolution "
                      "run with Winograd",
    "gemm": "im2col + BLAS GEMM: each column reused by the group's output channels",
    "depthwise": "one input channel per group: the depthwise kernel (padded, phase-split rows in cache, "
                 "contiguous taps)",
    "phases": "a stride of 2-4 along the rows: the direct correlation on phase-split rows",
    "tiny": "a few thousand multiply-adds: x read in place, each term bounds checked, in the calling thread",
    "direct": "the direct correlation on a padded copy of x",
}


def route(plan: ConvPlan, backward: bool = False) -> str:
    """The route (:data:`ROUTES`) ``run_conv`` takes for this plan, decided from the shapes and the model alone
    (``backward``: with the weight gradient); a route with a value check (``s2d-*``) falls back to ``gemm`` on
    inputs it would not keep exact. (Not memoised itself: its predicates are, and tests patch them.)"""
    if plan.c_in == 0:
        return "bias"
    if _sparse(plan):
        return "sparse"
    if as_transposed(plan) is not None:
        return "winograd"
    if use_gemm(plan):
        if use_s2d(plan, backward):
            return "s2d-winograd"
        # (the backward keeps the GEMM form's shared columns: grad_x on this route plus grad_weight on its own
        # columns was slower on every layer measured)
        if not backward and plan_s2d(plan) is not None:
            return "s2d-transposed"
        return "gemm"
    if use_depthwise(plan):
        return "depthwise"
    if plan_phases(plan) and not small(plan):
        return "phases"
    return "tiny" if tiny(plan) else "direct"


def route_estimates(plan: ConvPlan) -> dict[str, float]:
    """The estimated seconds of the routes the model prices for this plan (the others are chosen by rule)."""
    out = {}
    tplan = as_transposed(plan)
    if tplan is not None:
        out["winograd"] = dict(_cost.choose(tplan).estimates)["gather-winograd"]
    if use_gemm(plan):
        out["gemm"] = gemm_seconds(plan)
        if _s2d.pays(plan):
            out["s2d-winograd"] = _s2d.estimate(plan)
        routed = _routed_seconds(plan)
        if routed is not None:
            out["s2d-transposed"] = routed
    return out


_PLANS = Table(256)  # conv's validated plans, keyed by the exact arguments (a repeated call's one lookup)


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
    x5 = contiguous(x, dtype).reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes))
    w5 = contiguous(weight, dtype).reshape((plan.c_out, plan.c_in // plan.groups) +
                                            tuple(a.kernel for a in plan.axes))
    b = np.zeros(plan.c_out, dtype) if bias is None else contiguous(bias, dtype)
    y5 = y.reshape((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes))
    backward = dual is not None
    way = route(plan, backward)
    if way == "bias":  # no input channels: the output is the bias
        y5[...] = b.reshape((1, -1, 1, 1, 1))
        return False
    if way == "sparse":
        _conv_gemm.conv_sparse(plan, x5, w5, None if bias is None else b, y5)
        return False
    dual5 = None if dual is None else contiguous(dual, dtype).reshape(y5.shape)
    if way == "winograd":
        _conv_winograd(plan, x5, w5, None if bias is None else b, y5)
        if dual5 is None:
            return False
        # the weight gradient alone, from its columns
        _conv_gemm.conv_gemm(plan, x5, w5, None, None, dual5, grad_weight)
        return True
    if way == "s2d-winograd" and _s2d.finite(plan, x5, w5, dual5):
        _s2d.run(plan, x5, w5, None if bias is None else b, y5, dual5, grad_weight)
        return backward
    # (the space-to-depth forms fall back on values they would not keep exact: the next one, then the GEMM form)
    s2d = plan_s2d(plan) if way in ("s2d-winograd", "s2d-transposed") and not backward else None
    if s2d is not None and _conv_s2d(plan, s2d, x5, w5, None if bias is None else b, y5):
        return False
    if way in ("gemm", "s2d-winograd", "s2d-transposed"):
        # im2col reads x itself (the padding is written as zeros into the columns)
        _conv_gemm.conv_gemm(plan, x5, w5, None if bias is None else b, y5, dual5, grad_weight)
        return backward
    if way == "depthwise":
        depthwise(x5, w5, b, y5, plan.arrays("stride"), plan.arrays("dilation"), plan.arrays("start"),
                  _depthwise_block(plan, get_num_threads()))
        return False
    if way == "phases":
        _conv_phases(plan, x5, w5, b, y5)
        return False
    if way == "tiny":
        correlate_small(x5, w5, b, y5, plan.groups, plan.arrays("stride"), plan.arrays("dilation"),
                        plan.arrays("start"))
        return False
    shape = _padded_shape(plan)
    if shape is not None:
        xp = np.empty(shape, dtype)
        fill(x5, xp, _ONES, plan.arrays("start"))
    else:
        xp = x5
    correlate(xp, w5, b, y5, plan.groups, plan.arrays("stride"), plan.arrays("dilation"),
              _tile(plan, get_num_threads()))
    return False


def as_transposed(plan: ConvPlan) -> geo.Plan | None:
    """The stride-1 forward convolution as a transposed convolution, where that form does fewer products.

    A stride-1 correlation with pads ``(b, a)`` is the transposed convolution of the same input with the
    spatially flipped, channel-swapped weight and pads ``((k - 1) * d - b, (k - 1) * d - a)``. Returns that
    transposed convolution's plan when the planner of ``conv_transpose`` runs it with Winograd's minimal filtering
    (``gather-winograd``: 2.25x fewer products than im2col + GEMM for 3x3 kernels), else None. The decision is
    the planner's, a property of the layer. (Strided layers become stride-1 ones on their space-to-depth input:
    :func:`plan_s2d` asks this function about that plan, :mod:`fastdeconv._s2d` runs kernel = 2 x stride itself.)
    """
    return _as_transposed(plan, generation())


@memo(512)
def _as_transposed(plan: ConvPlan, model_generation: int) -> geo.Plan | None:
    """``as_transposed`` on the model of ``model_generation``."""
    axes = plan.axes[geo.MAX_RANK - plan.rank:]
    if any(a.stride != 1 for a in axes):
        return None
    pads = tuple(((a.kernel - 1) * a.dilation - a.start,
                  (a.kernel - 1) * a.dilation - (a.size_out + (a.kernel - 1) * a.dilation - a.size_in - a.start))
                 for a in axes)
    if any(b < 0 or e < 0 for b, e in pads):  # (pads wider than the dilated kernel)
        return None
    x_shape = (plan.batch, plan.c_in) + tuple(a.size_in for a in axes)
    w_shape = (plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in axes)
    try:
        tplan = geo.make_plan(x_shape, w_shape, plan.dtype, plan.dtype, 1, pads, 0, plan.groups,
                              tuple(a.dilation for a in axes))
    except ValueError:
        return None
    return tplan if _winograd_pays(plan, tplan) else None


def _winograd_pays(plan: ConvPlan, tplan: geo.Plan) -> bool:
    """Whether ``conv_transpose``'s planner runs the equivalent transposed convolution with Winograd (channel-poor
    layers are not asked: their transforms cost more than the products they save)."""
    if plan.c_out // plan.groups < 4 or plan.c_in // plan.groups < 4:
        return False
    return _cost.choose(tplan).variant == "gather-winograd"


def _conv_winograd(plan: ConvPlan, x5: np.ndarray, w5: np.ndarray, b: np.ndarray | None, y5: np.ndarray) -> bool:
    """Run the forward convolution through ``conv_transpose``'s Winograd form (see :func:`as_transposed`) when
    the planner picks it; returns whether it did."""
    tplan = as_transposed(plan)
    if tplan is None:
        return False
    rank, axes = plan.rank, plan.axes[geo.MAX_RANK - plan.rank:]
    g, c_out_g, c_in_g = plan.groups, plan.c_out // plan.groups, plan.c_in // plan.groups
    xs = x5.reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in axes))
    # weight (C_out, C_in_g, *k) -> (C_in, C_out_g, *k) per group, flipped along every spatial axis
    ws = w5.reshape((g, c_out_g, c_in_g) + tuple(a.kernel for a in axes)).swapaxes(1, 2)
    wt = np.ascontiguousarray(ws[(Ellipsis,) + (slice(None, None, -1),) * rank]).reshape(
        (plan.c_in, c_out_g) + tuple(a.kernel for a in axes))
    execute(tplan, xs, wt, b, y5.reshape(tplan.out_shape))
    return True


def _macs(plan: ConvPlan) -> int:
    return plan.batch * plan.c_out * prod(a.size_out for a in plan.axes) * (plan.c_in // plan.groups) * prod(
        a.kernel for a in plan.axes)


@memo(512)
def small(plan: ConvPlan) -> bool:
    """Fewer multiply-adds than a serial kernel call is worth (``_model.SERIAL_WORK``): the correlation runs on a
    padded copy as it is, without the phase split's copies and second pass, whose set-up would be most of it."""
    return _macs(plan) < _model.SERIAL_WORK


@memo(512)
def tiny(plan: ConvPlan) -> bool:
    """So few multiply-adds (``_model.CONV_TINY_WORK``) that reading x directly, each term bounds checked, beats
    making the padded copy (``_kernels.conv.correlate_small``: the same terms, the same bits)."""
    return _macs(plan) < _model.CONV_TINY_WORK


@memo(512)
def use_depthwise(plan: ConvPlan) -> bool:
    """Whether the layer runs on :mod:`fastdeconv._kernels.depthwise`: one input channel per group, not so few
    multiply-adds that reading x in place wins (:func:`tiny`), and not taken by the GEMM form (``run_conv``
    asks it first: with a channel multiplier of 4 or more its columns are reused by that many channels).

    With one input channel per group each output row's terms read ``kD * kH`` rows of one input plane, and
    nothing is shared between groups: the direct correlation costs one pass over x plus the products. The
    other direct forms pay that pass as a copy in memory (the padded input, or the phase-split one of
    :func:`_conv_phases`, written and read back) and then stream every output row once per tap, with strided
    loads along a strided W or short rows after the split, each row and tap a vector loop of its own. This
    kernel copies the input of a block of outputs into a scratch that stays in cache (padded, split into the
    strides' phases), then adds each tap as one contiguous run over all rows of the block, up to eight taps
    per pass: no strided load, the loop set-up paid per block and not per row and tap, the accumulator loaded
    and stored once per eight taps. Cheaper than those forms at strides up to 8, any padding and dilation, the
    same terms in the same order as the padded correlation (the same bits), and parallel over blocks of one image.

    Up to a stride of ``DEPTHWISE_MAX_STRIDE`` per axis: beyond, the scratch splits into as many phases as the
    stride along each axis, each with rows of about ``size_out`` elements, and the per-tap runs are too short
    for their set-up (FCN-32s' 64x64 stride-32 bilinear adjoint took twice the padded correlation's time).
    """
    return plan.c_in == plan.groups and not tiny(plan) and max(a.stride for a in plan.axes) <= DEPTHWISE_MAX_STRIDE


DEPTHWISE_MAX_STRIDE = 8


# The depthwise kernel's scratch and accumulator per task, in elements (64 KiB in float32: L1 and L2 serve it
# alike, its passes stream through it): the whole plane of the usual feature maps (fewer blocks, so fewer
# halo rows copied twice and fewer loop set-ups), blocks of rows of a large image, of columns of a long row.
DEPTHWISE_SCRATCH = 1 << 14
DEPTHWISE_TASKS_PER_THREAD = 4  # tasks per thread at least, the output permitting: workers claim chunks of tasks


@memo(512)
def _depthwise_block(plan: ConvPlan, threads: int) -> np.ndarray:
    """(rows, cols) of the output block of one task of :func:`use_depthwise`'s kernel on ``threads`` threads
    (int64; read only by the kernel): a whole plane where its scratch fits ``DEPTHWISE_SCRATCH``, else
    halves of it, rows first while a block keeps several times the rows its halo adds (the halo is copied
    once per block); then fewer rows (columns for one-row outputs) where the planes are too few to give every
    thread ``DEPTHWISE_TASKS_PER_THREAD`` tasks. (Each output element's terms do not depend on it: only the
    scheduling does.)"""
    ad, ah, aw = plan.axes
    j_h, j_w = (ah.span - 1) // ah.stride, (aw.span - 1) // aw.stride
    planes = ad.kernel * min(ah.stride, ah.span)
    phases = planes * (min(aw.stride, aw.span) + (aw.stride if aw.stride > 1 else 0))

    def size(rows: int, cols: int) -> int:  # the kernel's scratch (rows before and after their split along W)
        return (phases * (rows + j_h) + rows) * (cols + j_w)  # plus the accumulator, in elements

    rows, cols = ah.size_out, aw.size_out
    while size(rows, cols) > DEPTHWISE_SCRATCH and rows * cols > 1:
        if rows > 1 and (rows > 4 * (j_h + 1) or cols <= 64):
            rows = -(-rows // 2)
        else:
            cols = -(-cols // 2)
    planes = plan.batch * plan.c_in * ad.size_out  # (of the output, now)
    want = DEPTHWISE_TASKS_PER_THREAD * threads
    if threads > 1 and planes * -(-ah.size_out // rows) * -(-aw.size_out // cols) < want:
        per_plane = -(-want // planes)
        if ah.size_out > 1:
            rows = min(rows, -(-ah.size_out // per_plane))
        else:
            cols = min(cols, max(64, -(-aw.size_out // per_plane)))
    return np.array([rows, cols], np.int64)


@memo(512)
def plan_phases(plan: ConvPlan) -> bool:
    """Whether the direct form runs on phase-split rows (:func:`_conv_phases`): a stride of 2 to 4 along the
    rows. With more phases the rows of each are short and the copy (one strided copy per phase) costs more
    than the vectorised loop saves."""
    return plan.rank <= 2 and 2 <= plan.axes[2].stride <= 4 and plan.axes[2].dilation == 1


def _conv_phases(plan: ConvPlan, x5: np.ndarray, w5: np.ndarray, b: np.ndarray, y5: np.ndarray) -> None:
    """The direct form with a stride along the rows (rank 1 or 2, no dilation along them): phase-split rows.

    With stride ``s`` along W, tap ``kw = j * s + p`` reads the padded row at ``ow * s + kw``, i.e. element
    ``ow + j`` of its phase ``p`` (every ``s``-th element from ``p``). The padded input is copied once with
    its phases side by side on the unit D axis, ``xs[n, c, p, h, q] = x_padded[n, c, h, q * s + p]``, and the
    weight re-laid out as ``ws[co, ci, p, kh, j] = w[co, ci, kh, j * s + p]``: the correlation is then one
    with unit stride along the rows (contiguous loads, the inner loop vectorises) and the phases as D taps.
    Phases with fewer taps (``kernel % s`` of them have one more) run as a second correlation added after the
    first, so no product of a padded zero tap is ever formed (an infinite input stays infinite, not NaN).
    """
    ah, aw = plan.axes[1], plan.axes[2]
    s, k = aw.stride, aw.kernel
    kk = -(-k // s)  # taps of the first ``k % s`` phases (all phases when s divides k)
    rows = (ah.size_out - 1) * ah.stride + ah.span
    geo.check_memory((plan.batch, plan.c_in, min(s, k), rows, aw.size_out - 1 + kk), plan.dtype,
                     "the phase-split input")
    r_lo, r_hi = min(rows, ah.start), min(rows, ah.start + ah.size_in)  # padded rows that hold rows of x
    stride, dilation = np.array([1, ah.stride, 1], np.int64), np.array([1, ah.dilation, 1], np.int64)
    tile = _tile(plan, get_num_threads())
    wz = np.zeros(w5.shape[:4] + (kk * s,), w5.dtype)  # the slices below never keep the added zeros
    wz[..., :k] = w5
    split = k % s or s  # phases [0, split) have kk taps, [split, s) kk - 1
    for first, (p_lo, p_hi, taps) in enumerate(((0, split, kk), (split, s, kk - 1))):
        if p_lo == p_hi or taps == 0:  # (s > k: phases no tap reads)
            continue
        xs = np.empty((plan.batch, plan.c_in, p_hi - p_lo, rows, aw.size_out - 1 + taps), plan.dtype)

        def split(samples, xs=xs, p_lo=p_lo, p_hi=p_hi):  # (numpy copies without the GIL: the pool's threads)
            for n0, n1 in samples:
                xs[n0:n1] = 0
                for p in range(p_lo, p_hi):
                    q_lo = max(0, -((p - aw.start) // s))  # first q with q * s + p - start >= 0
                    q_hi = min(xs.shape[4], -((p - aw.start - aw.size_in) // s))  # ... < size_in
                    if q_lo < q_hi and r_lo < r_hi:
                        i_lo = q_lo * s + p - aw.start
                        xs[n0:n1, :, p - p_lo, r_lo:r_hi, q_lo:q_hi] = x5[
                            n0:n1, :, 0, r_lo - ah.start:r_hi - ah.start, i_lo:i_lo + (q_hi - q_lo - 1) * s + 1:s]

        blocks = min(plan.batch, 2 * max_threads())
        run_parallel(split, [(i * plan.batch // blocks, (i + 1) * plan.batch // blocks) for i in range(blocks)])
        ws = np.ascontiguousarray(wz[:, :, 0, :, p_lo:p_lo + taps * s].reshape(
            w5.shape[0], w5.shape[1], ah.kernel, taps, s)[..., :p_hi - p_lo].transpose(0, 1, 4, 2, 3))
        if first == 0:
            correlate(xs, ws, b, y5, plan.groups, stride, dilation, tile)
        else:
            part = np.empty_like(y5)
            correlate(xs, ws, np.zeros_like(b), part, plan.groups, stride, dilation, tile)
            y5 += part


def s2d_form(plan: ConvPlan) -> ConvPlan | None:
    """The strided forward convolution as a stride-1 one on its space-to-depth input, or None.

    Along an axis with stride ``s > 1`` (no dilation) and kernel ``k``, tap ``j * s + p`` reads the padded input
    at ``o * s + j * s + p``: element ``o + j`` of its phase ``p`` (every ``s``-th element from ``p``). With the
    phases as channels, ``xs[n, ci * P + p, q] = x_padded[n, ci, q * s + p]`` (``P`` the product of the strides,
    ``p`` the phase index over the strided axes, phase-minor so that a group's channels stay together), and the
    weight ``ws[co, ci * P + p, j] = w[co, ci, j * s + p]``, the strided correlation is a stride-1 valid one with
    ``ceil(k / s)`` taps per axis on ``C_in * P`` channels. Returns that plan (its input ``xs``, padding written
    in). Stride-1 axes keep their taps and dilation. Where ``s`` does not divide ``k`` the last taps of some
    phases are zero weights (see :func:`_conv_s2d` for what that asks of the input).
    """
    axes = plan.axes[geo.MAX_RANK - plan.rank:]
    if all(a.stride == 1 for a in axes) or any(a.stride > 1 and a.dilation > 1 for a in axes):
        return None
    kk = [-(-a.kernel // a.stride) for a in axes]
    s2d_axes = tuple(geo.Axis(a.size_out - 1 + (k - 1) * a.dilation + 1, k, 1, a.dilation, 0, a.size_out)
                     for a, k in zip(axes, kk))
    return ConvPlan(batch=plan.batch, c_in=plan.c_in * prod(a.stride for a in axes), c_out=plan.c_out,
                    groups=plan.groups, axes=plan.axes[:geo.MAX_RANK - plan.rank] + s2d_axes, rank=plan.rank,
                    batched=plan.batched, dtype=plan.dtype)


def _space_to_depth(plan: ConvPlan, s2d: ConvPlan, x5: np.ndarray) -> np.ndarray:
    """The input of :func:`s2d_form`'s plan, ``xs[n, ci * P + p, q] = x_padded[n, ci, q * s + p]`` (canonical 5-D,
    zeros where the padding is).

    It is the im2col of x with the strides as kernel and stride (phase ``p`` as tap ``p``, ``q`` as output
    position) and one sample per block, whose columns are laid out exactly as ``xs[n]``: the GEMM form's
    compiled copy, run in blocks of samples and channels on the worker pool (a copy: bound by memory).
    """
    q = tuple(a.size_in for a in s2d.axes)
    geo.check_memory((plan.batch, s2d.c_in) + q, plan.dtype, "the space-to-depth input")
    xs = np.empty((plan.batch, s2d.c_in) + q, plan.dtype)
    phases = s2d.c_in // plan.c_in
    strides, ones, start = plan.arrays("stride"), np.ones(3, np.int64), plan.arrays("start")
    blocks = max(1, min(plan.c_in, -(-_conv_gemm.MIN_TASKS // plan.batch)))
    step = -(-plan.c_in // blocks)

    def work(tasks):
        for n, c_lo in tasks:
            c_hi = min(plan.c_in, c_lo + step)
            cols = xs[n, c_lo * phases:c_hi * phases].reshape((c_hi - c_lo) * phases, -1)
            im2col(x5, cols, (n, n + 1, c_lo), strides, strides, ones, start, (0, q[0] * q[1], q[1], q[2]))

    run_parallel(work, [(n, c) for n in range(plan.batch) for c in range(0, plan.c_in, step)])
    return xs


def _s2d_weight(plan: ConvPlan, s2d: ConvPlan, w5: np.ndarray) -> np.ndarray:
    """The weight of :func:`s2d_form`'s plan, ``ws[co, ci * P + p, j] = w[co, ci, j * s + p]`` (zero where
    ``j * s + p >= k``)."""
    strides = [a.stride for a in plan.axes]
    kk = [a.kernel for a in s2d.axes]
    c_in_g = plan.c_in // plan.groups
    wz = np.zeros((plan.c_out, c_in_g) + tuple(k * s for k, s in zip(kk, strides)), w5.dtype)
    wz[(slice(None), slice(None)) + tuple(slice(0, a.kernel) for a in plan.axes)] = w5
    split = (plan.c_out, c_in_g) + tuple(v for k, s in zip(kk, strides) for v in (k, s))
    order = (0, 1, 3, 5, 7, 2, 4, 6)
    return np.ascontiguousarray(wz.reshape(split).transpose(order)).reshape((plan.c_out, s2d.c_in // plan.groups)
                                                                             + tuple(kk))


def use_s2d(plan: ConvPlan, backward: bool = False) -> bool:
    """Whether the strided layer runs as the stride-1 correlation of its space-to-depth input with Winograd
    F(2, 2) and one GEMM per point (:mod:`fastdeconv._s2d`): it pays (``kernel == 2 * stride`` on every axis,
    not weight-heavy) and its estimate is below the GEMM form's and, for ``conv``, the Winograd route's
    (:func:`plan_s2d`). ``backward``: with the weight gradient, which the GEMM form computes from the columns of
    its forward convolution and ``_s2d`` from its transformed input; the two are compared on one thread, so that
    the choice, and with it every bit of the gradients, is the same for every pool size."""
    return _use_s2d(plan, backward, generation())


@memo(512)
def _use_s2d(plan: ConvPlan, backward: bool, model_generation: int) -> bool:
    """``use_s2d`` on the model of ``model_generation``."""
    if not _s2d.pays(plan):
        return False
    if backward:
        return _s2d.estimate(plan, True, 1) < 2 * gemm_seconds(plan, 1) - _im2col_seconds(plan, 1)
    others = [gemm_seconds(plan)]
    routed = _routed_seconds(plan)
    if routed is not None:
        others.append(routed)
    return _s2d.estimate(plan) < min(others)


def _routed_seconds(plan: ConvPlan) -> float | None:
    """Estimated seconds of :func:`_conv_s2d` where it applies (conv_transpose's planner picks Winograd for its
    transposed convolution), else None."""
    s2d = s2d_form(plan)
    tplan = None if s2d is None else as_transposed(s2d)
    return None if tplan is None else s2d_seconds(plan, s2d, tplan)


def plan_s2d(plan: ConvPlan) -> ConvPlan | None:
    """:func:`s2d_form`'s plan when the planner prefers it to the GEMM form, else None: ``conv_transpose``'s
    planner runs its transposed convolution with Winograd, and that estimate plus the space-to-depth copy is
    below the GEMM form's (:func:`gemm_seconds`). A property of the layer (and the pool size), as the
    other choices of :func:`run_conv`."""
    return _plan_s2d(plan, generation())


@memo(512)
def _plan_s2d(plan: ConvPlan, model_generation: int) -> ConvPlan | None:
    """``plan_s2d`` on the model of ``model_generation``."""
    s2d = s2d_form(plan)
    if s2d is None:
        return None
    tplan = as_transposed(s2d)
    if tplan is None:
        return None
    return s2d if s2d_seconds(plan, s2d, tplan) < gemm_seconds(plan) else None


def gemm_seconds(plan: ConvPlan, threads: int | None = None) -> float:
    """Estimated seconds of :func:`conv_gemm` (forward only) on ``threads`` threads (the pool's by default): the
    matrix products at the BLAS rate their sides allow (the same blocks as the call) and the im2col copy."""
    threads = threads or max_threads()
    s = _terms.sizes(plan)
    taps = s.cin_g * s.k
    out_w = plan.axes[2].size_out
    rows = s.pix_out // out_w
    tasks_per_group = -(-_conv_gemm.MIN_TASKS // plan.groups)
    per = min(_conv_gemm.GEMM_COLUMNS // s.pix_out, _conv_gemm.COL_ELEMENTS // (taps * s.pix_out),
              -(-plan.batch // min(plan.batch, tasks_per_group)))
    block = max(1, min(rows, _conv_gemm.COL_ELEMENTS // max(1, taps * out_w)))
    block = min(block, -(-rows // min(rows, -(-tasks_per_group // plan.batch))))
    columns = per * s.pix_out if per > 1 else block * out_w  # (as _conv_gemm.conv_gemm cuts its blocks)
    gemm = _terms.gemm_time(2.0 * plan.batch * s.cout_g * s.pix_out * taps * plan.groups, s.cout_g, columns, taps,
                            1, s.scale) / threads
    return gemm + _im2col_seconds(plan, threads) + _model.LAUNCH_POOL


def _im2col_seconds(plan: ConvPlan, threads: int | None = None) -> float:
    """The GEMM form's im2col copy on ``threads`` threads (the pool's by default)."""
    s = _terms.sizes(plan)
    rows = s.pix_out // plan.axes[2].size_out
    return plan.batch * plan.c_in * s.k * (s.pix_out * _model.IM2COL_ELEMENT + rows * _model.IM2COL_ROW) / (
        threads or max_threads())


def s2d_seconds(plan: ConvPlan, s2d: ConvPlan, tplan: geo.Plan) -> float:
    """Estimated seconds of :func:`_conv_s2d`: Winograd on the transposed convolution (the planner's estimate), the
    space-to-depth copy (read x, write its phases, one row segment per phase row) and the weight relayout."""
    threads = max_threads()
    winograd = dict(_cost.choose(tplan).estimates)["gather-winograd"]
    s = _terms.sizes(s2d)
    rows = s.x_elems // s2d.axes[2].size_in
    copy = (_terms.mem_time((_terms.sizes(plan).x_elems + s.x_elems) * s.item, threads)
            + rows * _model.IM2COL_ROW / threads + _model.LAUNCH_POOL)
    return winograd + copy + 2 * s.w_elems * _model.PHASE_RELAYOUT_ELEMENT


def _conv_s2d(plan: ConvPlan, s2d: ConvPlan, x5: np.ndarray, w5: np.ndarray, b: np.ndarray | None,
              y5: np.ndarray) -> bool:
    """Run a strided forward convolution as the stride-1 one of :func:`s2d_form` (``plan_s2d``) through
    ``conv_transpose``'s Winograd form; returns whether it did.

    Where a stride does not divide its kernel, the zero taps of the phase weights multiply real inputs: a
    finite input makes those products zero, an infinite or NaN one would make them NaN where the definition has
    no product. Such an input (one scan of x) runs the GEMM form instead (returns False).
    """
    if any(a.kernel % a.stride for a in plan.axes) and not np.isfinite(max_abs(x5)):
        return False
    xs = _space_to_depth(plan, s2d, x5)
    return _conv_winograd(s2d, xs, _s2d_weight(plan, s2d, w5), b, y5)


@memo(512)
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
    return (c_out_g >= 4 and taps >= 4 and one_row <= _conv_gemm.COL_ELEMENTS
            and plan.batch * plan.c_out * taps * outputs >= 1 << 20)
