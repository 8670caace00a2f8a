"""Argument normalisation, output sizes, crops and validation for transposed convolution.

Pure Python (no numba). Everything the kernels need is reduced to one :class:`Plan` (the problem: shapes,
geometry, dtype, epilogue and layout); what the caller asked for besides (``method=``: a form, or a variant
pinned) is a :class:`Request`. The decision (which variant, its schedule and packed weight) is neither: it lives
on the object that runs the plan (``_api.Prepared``).

One spatial axis of a transposed convolution, with the kernel *not* flipped::

    full[in_index * stride + tap * dilation] += x[in_index] * w[tap]
    full_size = (size_in - 1) * stride + (kernel - 1) * dilation + 1
    y[out_index] = full[out_index + start]          (0 outside [0, full_size))

so ``out_index = in_index * stride + tap * dilation - start`` is the one index map every kernel uses.
``start`` is the number of leading elements cropped (``pad_before``); the output length is
``full_size - pad_before - pad_after + output_padding``.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._caches import Table

# the geometry arguments' types, as the public signatures take them
IntOrSeq = int | Sequence[int]  # one value for every spatial axis, or one per axis
Padding = int | str | Sequence[int] | Sequence[Sequence[int]]  # also "same"/"valid" and (before, after) pairs

METHODS = ("auto", "scatter", "gather", "zerofill")
# variant name -> its form: what ``method=`` also accepts (a variant pinned); filled by ``fastdeconv.variants``,
# which registers its records here (this module sits below them)
VARIANT_FORMS: dict[str, str] = {}
DATA_FORMATS = ("channels_first", "channels_last")
# The activations an epilogue applies after the bias, by name: the number of parameters each takes.
ACTIVATIONS = {"relu": 0, "leaky_relu": 1, "tanh": 0, "sigmoid": 0, "clamp": 2}
MAX_RANK = 3
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Largest uncropped output length per axis: the kernels' int64 index arithmetic (``i * stride + k * dilation -
# start`` and its inverse) then never overflows, whatever the crop.
MAX_FULL_SIZE = 2**62


@dataclass(frozen=True)
class Axis:
    """Geometry of one spatial axis: ``out_index = in_index * stride + tap * dilation - start``."""

    size_in: int
    kernel: int
    stride: int
    dilation: int
    start: int
    size_out: int

    @property
    def span(self) -> int:
        """Effective kernel extent ``(kernel - 1) * dilation + 1``."""
        return (self.kernel - 1) * self.dilation + 1

    @property
    def phase_count(self) -> int:
        """Output phases ``r < stride`` that have outputs: ``min(stride, size_out)`` (never one per stride step)."""
        return min(self.stride, self.size_out)

    def tap_phases(self) -> list[tuple[int, int, list[int], list[int]]]:
        """The sub-pixel decomposition, compactly: per output phase ``r`` that has outputs *and* taps, in phase
        order, (r, outputs ``o = r + stride * m``, the taps reaching them, each tap's source ``base`` for m = 0,
        in tap order). Tap ``k`` reaches phase ``r = (k * dilation - start) mod stride`` only and reads input
        ``base + m``; the other ``phase_count - len(tap_phases())`` phases with outputs get only the bias.
        At most ``kernel`` entries, built from the taps alone: the time never depends on the stride or the
        dilation values."""
        by_phase: dict[int, list[int]] = {}
        for k in range(self.kernel):
            r = (k * self.dilation - self.start) % self.stride
            if r < self.size_out:
                by_phase.setdefault(r, []).append(k)
        return [(r, ceil_div(self.size_out - r, self.stride), ks,
                 [(r + self.start - k * self.dilation) // self.stride for k in ks])
                for r, ks in sorted(by_phase.items())]


@dataclass(frozen=True)
class Plan:
    """The problem a call solves, everything a kernel needs: shapes, per-axis geometry, dtype, the epilogue
    (``activation``) and the data layout (``channels_last``), which are part of the result.

    ``axes`` always has three entries (leading unit axes pad rank 1 and 2 up to 3), so one
    numba kernel serves every rank.
    """

    batch: int
    c_in: int
    c_out: int
    groups: int
    axes: tuple[Axis, Axis, Axis]
    rank: int
    batched: bool
    dtype: np.dtype
    # The epilogue, applied after the bias where each variant stores its output: None, or (name, a, b) as
    # ``normalize_activation`` gives it.
    activation: tuple | None = None
    # x (N, *spatial, C_in) and the output (N, *spatial, C_out) channels-last (the weight keeps its layout)
    channels_last: bool = False

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple(a.size_out for a in self.axes[MAX_RANK - self.rank:])

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.channels_last:
            return ((self.batch,) if self.batched else ()) + self.out_spatial + (self.c_out,)
        lead = (self.batch, self.c_out) if self.batched else (self.c_out,)
        return lead + self.out_spatial

    @property
    def data_format(self) -> str:
        return DATA_FORMATS[self.channels_last]

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct definition (no zero is multiplied)."""
        n = self.batch * self.c_in * (self.c_out // self.groups)
        for a in self.axes:
            n *= a.size_in * a.kernel
        return n

    def arrays(self, name: str) -> np.ndarray:
        """Per-axis geometry as an int64 array of length 3, for the kernels."""
        return np.array([getattr(a, name) for a in self.axes], dtype=np.int64)


@dataclass(frozen=True)
class Request:
    """What the caller asked for besides the problem: the data-flow ``method`` (``"auto"`` or a form), and a
    ``variant`` fixed by ``method=`` naming one (or by the Dask twin, which runs every block on the whole array's
    variant, so that the blocks sum their terms exactly as the in-memory call does); None lets the planner rank.
    """

    method: str = "auto"
    variant: str | None = None


AUTO = Request()


def make_request(method) -> Request:
    """``method=`` (``"auto"``, a form, or a variant's name: that variant pinned, with its form) as a
    :class:`Request`, validated."""
    if isinstance(method, str) and method not in METHODS and method in VARIANT_FORMS:
        return Request(VARIANT_FORMS[method], method)  # a pinned variant: its form, and the variant fixed
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))} or a variant's name "
                         f"({', '.join(VARIANT_FORMS)}); got {method!r}")
    return AUTO if method == "auto" else Request(method)


def full_size(size_in: int, kernel: int, stride: int, dilation: int) -> int:
    """Length of the uncropped transposed-convolution output along one axis."""
    return (size_in - 1) * stride + (kernel - 1) * dilation + 1


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints (``b > 0``), exactly (no float rounding)."""
    return -((-a) // b)


# --------------------------------------------------------------------------- argument normalisation


def as_int(value, name: str) -> int:
    """An integer argument (Python or NumPy int; bool and float are refused) that fits in int64 (the kernels'
    index type)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}") from None
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{name} must fit in a 64-bit signed integer ([-2**63, 2**63 - 1]), got {v}")
    return v


def is_scalar(value) -> bool:
    """One value rather than a sequence (``np.ndim`` alone raises on ragged lists such as ``[1, (0, 0)]``)."""
    return not isinstance(value, (list, tuple)) and np.ndim(value) == 0


def per_axis(value, rank: int, name: str, minimum: int | None = None) -> tuple[int, ...]:
    """An int, or one int per spatial axis, as a tuple of length ``rank``."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an int or a sequence of {rank} ints, got {value!r}")
    if is_scalar(value):
        values = (as_int(value, name),) * rank
    else:
        seq = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
        if len(seq) != rank:
            raise ValueError(f"{name} must be an int or a sequence of {rank} ints (one per spatial axis), "
                             f"got {len(seq)} values: {value!r}")
        values = tuple(as_int(v, name) for v in seq)
    if minimum is not None and any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {value!r}")
    return values


def normalize_padding(padding, rank: int) -> str | tuple[tuple[int, int], ...]:
    """``"valid"``, ``"same"``, or one (before, after) pair of non-negative ints per axis."""
    if isinstance(padding, str):
        key = padding.lower()
        if key not in ("valid", "same"):
            raise ValueError(f"padding must be an int, per-axis ints, (before, after) pairs, 'valid' or 'same'; "
                             f"unknown padding string {padding!r}")
        return key
    if isinstance(padding, bytes):
        raise TypeError(f"padding must be an int, a sequence or a str, got {padding!r}")
    if is_scalar(padding):
        p = as_int(padding, "padding")
        pairs = ((p, p),) * rank
    else:
        seq = list(padding)
        if len(seq) != rank:
            raise ValueError(f"padding must be an int, {rank} ints (one per spatial axis) or {rank} "
                             f"(before, after) pairs, got {len(seq)} entries: {padding!r}")
        pairs = []
        for entry in seq:
            if is_scalar(entry):
                p = as_int(entry, "padding")
                pairs.append((p, p))
            else:
                pair = list(entry)
                if len(pair) != 2:
                    raise ValueError(f"padding pairs must be (before, after), got {entry!r}")
                pairs.append((as_int(pair[0], "padding"), as_int(pair[1], "padding")))
        pairs = tuple(pairs)
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"padding must be >= 0 on every axis and side, got {padding!r}")
    return pairs


def normalize_activation(activation) -> tuple | None:
    """``activation`` as ``None`` or ``(name, a, b)`` (floats; unused ones 0.0), validated.

    Accepted: None, ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``("leaky_relu", slope)`` (a finite slope) and
    ``("clamp", lo, hi)`` (``lo <= hi``, not NaN; infinite bounds clamp one side only).
    """
    if activation is None:
        return None
    known = ", ".join(repr(k) if n == 0 else f"({k!r}, {', '.join(['lo', 'hi'] if n == 2 else ['slope'])})"
                      for k, n in ACTIVATIONS.items())
    if isinstance(activation, str):
        name, params = activation, ()
    elif isinstance(activation, tuple) and activation and isinstance(activation[0], str):
        name, params = activation[0], activation[1:]
    else:
        raise ValueError(f"activation must be None or one of {known}; got {activation!r}")
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: unknown name {name!r}; known: {known}")
    if len(params) != ACTIVATIONS[name]:
        raise ValueError(f"activation {name!r} takes {ACTIVATIONS[name]} parameter(s), got {activation!r}; "
                         f"known: {known}")
    values = []
    for v in params:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"activation parameters must be real numbers, got {activation!r}")
        values.append(float(v))
    if name == "leaky_relu" and not np.isfinite(values[0]):
        raise ValueError(f"activation: the leaky_relu slope must be finite, got {values[0]!r}")
    if name == "clamp":
        lo, hi = values
        if np.isnan(lo) or np.isnan(hi) or lo > hi:
            raise ValueError(f"activation: clamp needs lo <= hi (not NaN), got lo={lo!r}, hi={hi!r}")
    values += [0.0] * (2 - len(values))
    return (name, values[0], values[1])


def check_data_format(data_format) -> bool:
    """Whether ``data_format`` is channels-last (validated: ``"channels_first"`` or ``"channels_last"``)."""
    if not isinstance(data_format, str) or data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
    return data_format == "channels_last"


def check_numeric(dtype: np.dtype, name: str) -> None:
    """Refuse complex and non-numeric dtypes, naming the argument."""
    if dtype.kind == "c":
        raise TypeError(f"{name} must be real: complex inputs are not supported (got dtype {dtype})")
    if dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric (bool, int or float), got dtype {dtype}")


def is_float32(dtype: np.dtype) -> bool:
    """A 4-byte float in either byte order (byte order is not precision: '>f4' computes as float32)."""
    return dtype.kind == "f" and dtype.itemsize == 4


def result_dtype(x_dtype: np.dtype, w_dtype: np.dtype) -> np.dtype:
    """float32 when x and weight are both float32 (any byte order), otherwise float64 (native byte order)."""
    check_numeric(x_dtype, "x")
    check_numeric(w_dtype, "weight")
    if is_float32(x_dtype) and is_float32(w_dtype):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def check_memory(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """Refuse an array that could never be allocated on this machine, before trying."""
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    if nbytes > _physical_memory():
        raise ValueError(f"{name} of shape {tuple(shape)} would need {nbytes / 2**30:.1f} GiB, more than this "
                         f"machine's {_physical_memory() / 2**30:.1f} GiB of memory")


@lru_cache(maxsize=1)
def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 46


# --------------------------------------------------------------------------- the plan


def split_shapes(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> tuple[int, bool, int]:
    """Rank, batchedness and batch size from the shapes of x and weight (validated)."""
    if len(w_shape) < 3 or len(w_shape) > MAX_RANK + 2:
        raise ValueError(f"weight must have shape (C_in, C_out // groups, *kernel) with 1 to 3 spatial axes; "
                         f"got weight.ndim = {len(w_shape)}")
    rank = len(w_shape) - 2
    return (rank,) + split_batch(x_shape, rank)


def split_batch(x_shape: tuple[int, ...], rank: int) -> tuple[bool, int]:
    """(batched, batch size) of an x of shape (N, C, *spatial) or unbatched (C, *spatial) with ``rank`` axes."""
    if len(x_shape) == rank + 2:
        return True, x_shape[0]
    if len(x_shape) == rank + 1:
        return False, 1
    raise ValueError(f"x must have shape (N, C_in, *spatial) or (C_in, *spatial) with {rank} spatial axes "
                     f"(weight has {rank}); got x.ndim = {len(x_shape)}")


@dataclass(frozen=True)
class PlanOptions:
    """``make_plan``'s optional extras, grouped (each as before: a call gives only those it needs).

    ``bias_shape``/``bias_dtype``: the bias's (None: no bias); ``limit_memory=False`` skips the check that the
    whole output fits in this machine's memory (for callers, like the Dask twin, that never hold the whole output
    at once); ``activation`` and ``data_format`` are the public arguments of the same names.
    """

    bias_shape: tuple[int, ...] | None = None
    bias_dtype: object = None
    limit_memory: bool = True
    activation: object = None
    data_format: object = "channels_first"


def make_plan(x_shape, w_shape, x_dtype, w_dtype, stride=1, padding=0, output_padding=0, groups=1,
              dilation=1, output_size=None, *, options: PlanOptions | None = None) -> Plan:
    """Validate a call and reduce it to a :class:`Plan` (cached for hashable arguments); ``options`` (a
    :class:`PlanOptions`; None: its defaults) the bias, activation, data format and memory check."""
    if options is None:
        options = _DEFAULT_OPTIONS
    elif not isinstance(options, PlanOptions):
        raise TypeError(f"options must be a PlanOptions or None, got {type(options).__name__}")
    args = (tuple(x_shape), tuple(w_shape), np.dtype(x_dtype), np.dtype(w_dtype), stride, padding, output_padding,
            groups, dilation, output_size)
    extras = PlanOptions(None if options.bias_shape is None else tuple(options.bias_shape),
                         None if options.bias_dtype is None else np.dtype(options.bias_dtype),
                         bool(options.limit_memory), options.activation, options.data_format)
    try:
        # type-tagged: 1, 1.0 and True must not share a cache entry
        key = _freeze(args + (extras.bias_shape, extras.bias_dtype, extras.limit_memory, extras.activation,
                              extras.data_format))
        plan = _PLANS.get(key)
    except TypeError:  # unhashable arguments (e.g. arrays): plan without the cache
        return _make_plan(*args, extras)
    if plan is None:
        plan = _PLANS.put(key, _make_plan(*args, extras))
    return plan


_DEFAULT_OPTIONS = PlanOptions()
_PLANS = Table(512)


def _freeze(value):
    """A hashable key for an argument that tells 1, 1.0 and True apart (raises TypeError if unhashable)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    hash(value)
    return (type(value), value)


def _make_plan(x_shape, w_shape, x_dtype, w_dtype, stride, padding, output_padding, groups, dilation,
               output_size, options: PlanOptions) -> Plan:
    """``make_plan``'s work, on its normalized arguments (``options``: bias shape a tuple, dtypes numpy's)."""
    data_format, bias_shape = options.data_format, options.bias_shape
    channels_last = check_data_format(data_format)
    activation = normalize_activation(options.activation)
    dtype = result_dtype(np.dtype(x_dtype), np.dtype(w_dtype))
    if options.bias_dtype is not None:
        check_numeric(np.dtype(options.bias_dtype), "bias")  # the bias never widens the result
    rank, batched, batch = split_shapes(x_shape, w_shape)
    c_in, c_out_g = w_shape[0], w_shape[1]
    kernel = tuple(w_shape[2:])
    spatial_in = tuple(x_shape[-rank - 1:-1]) if channels_last else tuple(x_shape[-rank:])
    x_channels = x_shape[-1] if channels_last else x_shape[-rank - 1]

    groups = as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if x_channels != c_in:
        where = "last axis" if channels_last else "channel axis"
        layout = "(N, *spatial, C_in)" if channels_last else "(N, C_in, *spatial)"
        raise ValueError(f"x has {x_channels} input channels on its {where} (data_format={data_format!r}: x is "
                         f"{layout}) but weight.shape[0] (C_in) is {c_in}; x.shape = {tuple(x_shape)}")
    if c_in % groups:
        raise ValueError(f"input channels ({c_in}) must be divisible by groups ({groups})")
    if any(k < 1 for k in kernel):
        raise ValueError(f"kernel sizes (weight.shape[2:]) must be >= 1, got {kernel}")
    if any(i < 1 for i in spatial_in):
        raise ValueError(f"x spatial sizes must be >= 1, got {spatial_in}")
    c_out = c_out_g * groups
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(f"bias must have shape (C_out,) = ({c_out},), got {tuple(bias_shape)}")

    stride = per_axis(stride, rank, "stride", minimum=1)
    dilation = per_axis(dilation, rank, "dilation", minimum=1)
    output_padding = per_axis(output_padding, rank, "output_padding", minimum=0)
    pads = normalize_padding(padding, rank)
    starts, sizes = _crop(spatial_in, kernel, stride, dilation, output_padding, pads, output_size)

    lead = (MAX_RANK - rank)
    axes = tuple(Axis(1, 1, 1, 1, 0, 1) for _ in range(lead)) + tuple(
        Axis(i, k, s, d, st, o) for i, k, s, d, st, o in zip(spatial_in, kernel, stride, dilation, starts, sizes))
    plan = Plan(batch=batch, c_in=c_in, c_out=c_out, groups=groups, axes=axes, rank=rank, batched=batched,
                dtype=dtype, activation=activation, channels_last=channels_last)
    if options.limit_memory:
        check_memory(plan.out_shape, dtype, "the output")
    return plan


def _crop(spatial_in, kernel, stride, dilation, output_padding, pads, output_size) -> tuple[list, list]:
    """Per spatial axis, the first output of the uncropped result kept and the output size (validated): from the
    padding (``normalize_padding``'s), ``output_padding`` or ``output_size``."""
    rank = len(spatial_in)
    fulls = [full_size(i, k, s, d) for i, k, s, d in zip(spatial_in, kernel, stride, dilation)]
    for axis, f in enumerate(fulls):
        if f > MAX_FULL_SIZE:
            raise ValueError(f"stride and dilation are too large on spatial axis {axis}: the uncropped output "
                             f"(in - 1) * stride + (kernel - 1) * dilation + 1 = {f} exceeds 2**62 (stride={stride}, "
                             f"dilation={dilation}, input {spatial_in}, kernel {kernel})")
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= max(s, d):
            raise ValueError(f"output_padding must be smaller than max(stride, dilation) on every axis; "
                             f"got output_padding={output_padding}, stride={stride}, dilation={dilation}")
    if pads == "same":
        if any(output_padding):
            raise ValueError("output_padding must be 0 with padding='same' (the output size is input * stride)")
        sizes = [i * s for i, s in zip(spatial_in, stride)]
        starts = [max(0, f - o) // 2 for f, o in zip(fulls, sizes)]
        if output_size is not None:
            wanted = output_size_spatial(output_size, rank)
            if wanted != tuple(sizes):
                raise ValueError(f"output_size {wanted} is not reachable with padding='same', which gives "
                                 f"{tuple(sizes)}")
        return starts, sizes
    pairs = ((0, 0),) * rank if pads == "valid" else pads
    starts = [b for b, _ in pairs]
    minimal = [f - b - a for f, (b, a) in zip(fulls, pairs)]
    if output_size is not None:
        if any(output_padding):
            raise ValueError("give output_size or output_padding, not both")
        wanted = output_size_spatial(output_size, rank)
        for m, o, s, d in zip(minimal, wanted, stride, dilation):
            if not m <= o < m + max(s, d):
                raise ValueError(f"output_size {wanted} is not reachable: each axis must lie in "
                                 f"[{tuple(minimal)}, {tuple(m + max(s, d) - 1 for m in minimal)}] for "
                                 f"this stride, padding and dilation")
        sizes = list(wanted)
    else:
        sizes = [m + op for m, op in zip(minimal, output_padding)]
    if any(o < 1 for o in sizes):
        raise ValueError(f"the output size must be >= 1 on every axis, got {tuple(sizes)} (padding too large "
                         f"for input {spatial_in}, kernel {kernel}, stride {stride}, dilation {dilation})")
    return starts, sizes


def output_size_spatial(output_size, rank: int) -> tuple[int, ...]:
    """output_size given as the spatial sizes, or as a whole output shape (the last ``rank`` entries)."""
    if isinstance(output_size, (str, bytes)) or is_scalar(output_size):
        raise TypeError(f"output_size must be a sequence of ints, got {output_size!r}")
    seq = list(output_size)
    if len(seq) not in (rank, rank + 1, rank + 2):
        raise ValueError(f"output_size must have {rank} spatial entries (or a full output shape), got {seq}")
    values = tuple(as_int(v, "output_size") for v in seq[-rank:])
    if any(v < 1 for v in values):
        raise ValueError(f"output_size entries must be >= 1, got {values}")
    return values
