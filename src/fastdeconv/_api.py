"""The NumPy-facing functions: validate -> plan -> call one kernel."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from . import _calibrate, _cost, _interrupts, variants
from . import _geometry as geo
from ._caches import Table, memo
from ._geometry import IntOrSeq, Padding
from ._scan import max_abs
from ._tasks import fill
from ._threads import apply_num_threads
from .variants import _epilogue


def conv_transpose(x, weight, bias=None, stride: IntOrSeq = 1, padding: Padding = 0,
                   output_padding: IntOrSeq = 0, groups: int = 1, dilation: IntOrSeq = 1, *,
                   output_size: Sequence[int] | None = None, method: str = "auto",
                   out: np.ndarray | None = None, activation=None,
                   data_format: str = "channels_first") -> np.ndarray:
    """Transposed convolution ("deconvolution") of a 1-D, 2-D or 3-D signal, PyTorch semantics.

    Along each spatial axis ``y_full[i * stride + k * dilation] += x[i] * weight[k]`` (the kernel is not
    flipped), then ``padding`` is cropped from the ends and ``output_padding`` zeros are added at the end:
    ``out = (in - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_padding + 1``.

    Parameters
    ----------
    x : array_like
        Input of shape (N, C_in, *spatial) or unbatched (C_in, *spatial); ``weight.ndim - 2`` spatial axes.
        With ``data_format="channels_last"``: (N, *spatial, C_in) or (*spatial, C_in).
    weight : array_like
        Kernel of shape (C_in, C_out // groups, *kernel) (the PyTorch/ONNX layout, not flipped).
    bias : array_like, optional
        Shape (C_out,), added to every output element of its channel.
    stride, output_padding, dilation : int or sequence of int
        One value for every spatial axis or one per axis. ``output_padding < max(stride, dilation)``.
    padding : int, sequence, "valid" or "same"
        An int or one int per axis (cropped from both ends, PyTorch), one (before, after) pair per axis
        (asymmetric, like ONNX ``pads``), ``"valid"`` (no crop), or ``"same"`` (TensorFlow SAME: the output
        is ``input * stride``; the odd extra crop is taken from the end, zeros fill the end when the full
        output is shorter).
    groups : int
        Blocked channel groups; C_in and C_out are both split into ``groups`` parts.
    output_size : sequence of int, optional
        Wanted spatial output size (as ``ConvTranspose2d.forward(output_size=...)``); it picks the
        output padding and must lie in ``[minimal, minimal + max(stride, dilation) - 1]`` per axis.
    method : {"auto", "scatter", "gather", "zerofill"} or a variant's name
        Data-flow form: ``scatter`` (each input element adds its footprint), ``gather`` (each output element
        sums its sources; zeros are never visited), ``zerofill`` (the textbook zero-fill-then-correlate
        route: dilate with zeros, pad, dense correlation with the flipped kernel, crop), or ``auto`` (the
        variant the cost model expects fastest on this machine's profile, or recorded wisdom). A variant's name
        (one of ``fastdeconv.variants()``) pins that variant; a ValueError listing the applicable ones refuses
        it where it does not apply.
    out : numpy.ndarray, optional
        Array of exactly the result's shape and dtype to write into; it is returned. A call interrupted by
        Ctrl-C (``KeyboardInterrupt``) leaves it untouched or complete, never partly written: the interrupt ends
        the call at once while kernels load or compile, and once ``out`` is being written it takes effect when
        the computation has finished, as in NumPy.
    activation : None, str or tuple
        The epilogue, applied after the bias where each kernel stores its output (no extra pass over it):
        ``"relu"``, ``("leaky_relu", slope)``, ``"tanh"``, ``"sigmoid"`` or ``("clamp", lo, hi)``. NaN stays NaN.
    data_format : {"channels_first", "channels_last"}
        The layout of x and of the result (Keras's names); the weight keeps its layout. Channels-last data is
        computed by kernels that read and write that layout directly.

    Returns
    -------
    numpy.ndarray
        (N, C_out, *out_spatial) or (C_out, *out_spatial) (channels-last: (N, *out_spatial, C_out) or
        (*out_spatial, C_out)); float32 when x and weight are both float32, float64 otherwise.

    Raises
    ------
    TypeError
        Complex or non-numeric inputs, non-integer geometry, an ``out`` of the wrong dtype.
    ValueError
        Inconsistent shapes, geometry outside its rules, an unreachable output size, an unknown method.

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> fd.conv_transpose(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    if (type(x) is np.ndarray and type(weight) is np.ndarray and output_size is None and type(method) is str
            and type(groups) is int and (bias is None or type(bias) is np.ndarray)
            and (type(stride) is int or _exact(stride)) and (type(output_padding) is int or _exact(output_padding))
            and (type(dilation) is int or _exact(dilation))
            and (type(padding) is int or type(padding) is str or _exact(padding))):
        # hot path: shapes and geometry validated once, keyed exactly (no bool/float can match an int key)
        apply_num_threads()
        key = (x.shape, weight.shape, x.dtype, weight.dtype, stride, padding, output_padding, groups, dilation,
               method, None if bias is None else (bias.shape, bias.dtype),
               _NO_ACTIVATION if activation is None else _key(activation),
               _CHANNELS_FIRST if type(data_format) is str and data_format == "channels_first" else _key(data_format))
        call = _FAST.get(key)
        if call is None:
            call = _prepare_call(x, weight, bias, stride, padding, output_padding, groups, dilation, method,
                                     activation, data_format)
            call = _FAST.put(key, call)
        if out is None:
            y = np.empty(call.out_shape, call.dtype)
            call.run(x, weight, bias, y)
            return y
        y = output_array(call.plan, out, (x, weight, bias))
        call.run(x, weight, bias, y, y is out)
    else:
        x, weight = as_array(x, "x"), as_array(weight, "weight")
        bias = None if bias is None else as_array(bias, "bias")
        request = geo.make_request(method)
        plan = geo.make_plan(x.shape, weight.shape, x.dtype, weight.dtype, stride, padding, output_padding,
                             groups, dilation, output_size, options=geo.PlanOptions(
                                 None if bias is None else bias.shape, None if bias is None else bias.dtype,
                                 activation=activation, data_format=data_format))
        # (a pinned variant that cannot run: refused before allocating)
        _cost.check_pinned(plan, request, _cost.choose(plan, request))
        y = output_array(plan, out, (x, weight, bias))
        execute(plan, x, weight, bias, y, y is out, request)
    if out is not None and y is not out:
        out[...] = y  # (one copy: an interrupt lands before or after it)
        return out
    return y


def exact_key(*parts):
    """A cache key of geometry arguments, or None when one is not exact: ints or tuples of ints (no bool or float
    may match an int's entry), tuples of (int, int) pairs, or a string (``padding="same"``)."""
    for part in parts:
        if not (type(part) is int or type(part) is str or _exact(part)):
            return None
    return parts


def _key(value):
    """A hot-path key part for ``activation`` / ``data_format``: type-tagged (so that ``("clamp", 0, 1)`` and
    ``("clamp", 0.0, 1.0)`` and ``True`` never share an entry), or a fresh object (never found) when unhashable."""
    try:
        hash(value)
    except TypeError:
        return object()
    if isinstance(value, tuple):
        return tuple((type(v), v) for v in value)
    return (type(value), value)


_NO_ACTIVATION, _CHANNELS_FIRST = _key(None), _key("channels_first")  # (the defaults' keys, made once)


def _exact(value) -> bool:
    """An int, or a tuple of ints / of (int, int) tuples: hashable, and never equal to a bool or float key."""
    if type(value) is int:
        return True
    return type(value) is tuple and all(type(v) is int or (type(v) is tuple and all(type(e) is int for e in v))
                                        for v in value)


def execute(plan: geo.Plan, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, y: np.ndarray,
            visible: bool = False, request: geo.Request = geo.AUTO) -> None:
    """Run ``plan`` as ``request`` asks on validated arrays, writing every element of ``y`` (C-contiguous);
    ``visible``: ``y`` is the caller's ``out`` (see :meth:`Prepared.run`)."""
    apply_num_threads()
    prepared(plan, request).run(x, weight, bias, y, visible)


def choose_method(plan: geo.Plan, request: geo.Request = geo.AUTO) -> str:
    """The concrete form for a plan: the requested one, or for ``auto`` the form of the cheapest variant.

    The variant (direct numba kernel or BLAS-backed) and the estimates behind the choice come from the cost
    model (``_cost.choose``; public as :func:`fastdeconv.plan`).
    """
    return _cost.choose(plan, request).method


# --------------------------------------------------------------------------- dispatch

# the hot path's prepared calls, keyed by the exact arguments (a hit is one dict lookup)
_FAST = Table(256)


def decide_variant(plan: geo.Plan, ranked: tuple[tuple[str, float], ...], run=None, own: bool = False,
                   ready=None, request: geo.Request = geo.AUTO) -> str:
    """The variant ``plan`` runs in this process for ``request``: the one place where it is fixed (``Prepared``,
    hence every path that runs a plan: functional calls, operators, Dask blocks).

    ``ranked`` is the model's ranking (cheapest first); ``run(variant)`` runs one call of a variant on the
    caller's arrays (None: cannot measure now); ``ready(variant)`` says whether its kernels load without
    compiling. The decision itself is :func:`_calibrate.decide` (one per key and process, single-flight).
    ``own``: an operator whose model pick only an operator can run (:func:`operator_pick`); it decides apart
    from one-off calls (see :func:`_ranking`). Every other operator decides exactly as a one-off call of the
    plan (same ranking, same record): both run the same variant and give the same bits.
    """
    ranking = _ranking(plan, request, ranked, own, run is not None)
    return _calibrate.decide(plan, ranking, run, ready, request=request, own=own)


def current_variant(plan: geo.Plan, ranked: tuple[tuple[str, float], ...], own: bool = False,
                    request: geo.Request = geo.AUTO, measure: bool = False) -> str:
    """What a call of ``plan`` would run now, without deciding (the decision is made on the first call);
    ``measure``: the call will time the candidates (``tune=True``)."""
    ranking = _ranking(plan, request, ranked, own, measure)
    return _calibrate.current(plan, ranking, request=request, own=own)[0]


def operator_pick(plan: geo.Plan, request: geo.Request = geo.AUTO) -> bool:
    """Whether an operator's model pick (its packed weights not counted per call) is a variant a one-off call of
    ``plan`` cannot run (Winograd with kept transformed weights, where the call's memory rule forbids it)."""
    pick = _cost.choose(plan, request, kept=True).variant
    one_off = _cost.choose(plan, request)
    return pick != one_off.variant and pick not in dict(one_off.estimates)


def _ranking(plan: geo.Plan, request: geo.Request, ranked: tuple[tuple[str, float], ...], own: bool,
             measure: bool = False):
    """The ranking a decision starts from.

    An operator's own decision (``own``) is recorded apart (``_calibrate.key``). Without measuring, it follows
    its model's ranking (the kept weights' estimates). A tuning operator (``measure``) starts from a one-off
    call's pick instead, which stays unless the operator's is measurably faster: the kept estimates were fitted
    on few layers, and one measurement settles the close calls.
    """
    if not own or not measure:
        return ranked
    one_off = _cost.choose(plan, request).variant
    estimates = dict(ranked)
    if one_off in estimates:
        ranked = ((one_off, estimates[one_off]),) + tuple(r for r in ranked if r[0] != one_off)
    return ranked


class Prepared:
    """Everything a call needs that depends only on the plan and the request: shapes, the decision (variant,
    its direct kernel and arguments, an operator's pack of it), geometry, task tiles.

    Nothing here depends on the current thread count (the tiles are cut for numba's pool size and only
    split the work), so a prepared call is valid in every Python thread and after ``set_num_threads``.
    ``kept`` is an operator's store of packed weights (``ConvTranspose``): its variants' weight-only work is
    done once and read from there; without it (a one-off call) each call packs what it needs.

    A Ctrl-C must leave a caller's ``out`` untouched or complete (issue 26): a variant's chunks, each a kernel
    call, run one after another in Python (and some add into the partial sums of the chunks before), so an
    interrupt between two of them would leave ``out`` partly written, and the numba kernels load or compile
    lazily, on their first call in each worker. So the first run of a dispatch in this process (its decision
    included) writes a private array, interruptible at any moment, and that is copied into ``out`` at the end;
    once a run has ended, every kernel of the dispatch is compiled (the kernels and their argument types depend
    on the plan alone), and the later runs into ``out`` write it directly with SIGINT deferred to their end
    (``_interrupts.deferred``). A dispatch that writes ``out`` in one numba call (a serial direct kernel; Python
    runs no signal handler inside it, and a kernel that must load or compile first does so before it writes)
    needs neither, and neither does a call in another thread than the main one (signals reach only that one).
    The private array of a first run is the price: one more output, once per prepared call and dispatch.
    """

    __slots__ = ("plan", "request", "dtype", "out_shape", "x5_shape", "w5_shape", "y5_shape", "zero_bias", "bias_only",
                 "ranked", "variant", "serial", "decided", "kept", "own", "dispatch", "warm", "tune")

    def __init__(self, plan: geo.Plan, request: geo.Request = geo.AUTO, kept=None, tune: bool = False):
        self.plan = plan
        self.request = request
        self.kept = kept
        self.tune = tune  # an operator made with tune=True: its first call may time the close candidates
        # an operator ranks with its packed weights not counted per call only when that changes its pick to a
        # variant a one-off call cannot run; otherwise it decides as a one-off call does (the same variant)
        self.own = own = kept is not None and operator_pick(plan, request)
        choice = _cost.choose(plan, request, own)
        self.ranked = choice.ranking()
        self.dtype = plan.dtype
        self.out_shape = plan.out_shape
        spatial_in, spatial_out = tuple(a.size_in for a in plan.axes), tuple(a.size_out for a in plan.axes)
        if plan.channels_last:  # (N, D, H, W, C): what the channels-last variants read and write
            self.x5_shape = (plan.batch,) + spatial_in + (plan.c_in,)
            self.y5_shape = (plan.batch,) + spatial_out + (plan.c_out,)
        else:
            self.x5_shape = (plan.batch, plan.c_in) + spatial_in
            self.y5_shape = (plan.batch, plan.c_out) + spatial_out
        self.w5_shape = (plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes)
        self.zero_bias = np.zeros(plan.c_out, plan.dtype)
        self.bias_only = plan.c_in < plan.groups or plan.c_out < plan.groups  # no channel in a group
        # the variant is decided on the first call (``_decide``: one decision per key and process, from the
        # model and recorded wisdom; timed on the caller's arrays only when tuning was asked for); until then,
        # what a call would run now
        self.decided = False
        self.warm = None  # the dispatch that has run to its end in this process (its kernels are compiled)
        self.use(current_variant(plan, self.ranked, own, request, measure=tune))

    def use(self, variant: str) -> None:
        """Run ``variant`` from now on (the decision, or a measurement's probe)."""
        record = variants.get(variant)
        kernel, args = record.direct(self.plan) if record.direct is not None else (None, ())
        # what ``_checked`` and ``execute`` read, swapped in one assignment: a thread running this object while
        # another one switches it (two first calls deciding at once) reads one variant's record, kernel and pack,
        # never a mix. The list holds an operator's pack of this variant, fetched on the first call (a late
        # store lands in the old tuple, never beside another variant's record). The last entry: whether a run is
        # one numba call, so that an interrupt cannot land in the middle of it (see the class docstring).
        one_call = self.bias_only or (kernel is not None and hasattr(kernel, "py_func"))
        self.dispatch = (record, kernel, args, [None], one_call)
        self.variant = variant
        self.serial = record.serial(self.plan)

    def run(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, y: np.ndarray,
            visible: bool = False) -> None:
        """Write every element of ``y`` (C-contiguous, the plan's shape and dtype); ``visible``: ``y`` is the
        caller's ``out``, which an interrupt must leave untouched or complete (see the class docstring)."""
        if y.size == 0:
            return
        dtype = self.dtype
        flags = x.flags
        if not (x.dtype is dtype and flags.c_contiguous and flags.writeable):
            x = contiguous(x, dtype, "x")
        flags = weight.flags
        if not (weight.dtype is dtype and flags.c_contiguous and flags.writeable):
            weight = contiguous(weight, dtype, "weight")
        x5 = x.reshape(self.x5_shape)
        w5 = weight.reshape(self.w5_shape)
        b = self.zero_bias if bias is None else contiguous(bias, dtype)
        y5 = y.reshape(self.y5_shape)
        if not self.decided:
            self._decide(x5, w5, b, np.empty_like(y5) if visible else y5)  # (measurements write their output)
        self._checked(x5, w5, b, y5, visible)

    def run_kept(self, x: np.ndarray, w5: np.ndarray, b: np.ndarray, y: np.ndarray, visible: bool = False) -> None:
        """``run`` for an operator: ``w5`` and ``b`` are its weight and bias vector, already canonical (the
        plan's dtype, 5-D, C-contiguous, writeable)."""
        flags = x.flags
        if y.size and not (x.dtype is self.dtype and flags.c_contiguous and flags.writeable):
            x = contiguous(x, self.dtype)  # (not for an empty output: nothing reads x then)
        self.run_canonical(x, w5, b, y, visible)

    def run_canonical(self, x: np.ndarray, w5: np.ndarray, b: np.ndarray, y: np.ndarray,
                      visible: bool = False) -> None:
        """``run_kept`` on an ``x`` already canonical (the plan's dtype, C-contiguous, writeable)."""
        if y.size == 0:
            return
        x5 = x.reshape(self.x5_shape)
        y5 = y.reshape(self.y5_shape)
        if not self.decided:
            self._decide(x5, w5, b, np.empty_like(y5) if visible else y5)
        self._checked(x5, w5, b, y5, visible)

    def probe(self, variant: str) -> Prepared:
        """A copy of this prepared call that runs ``variant`` (a measurement times candidates on copies, never on
        an object other threads may be running)."""
        probe = Prepared(self.plan, self.request, self.kept)
        probe.use(variant)
        return probe

    def _decide(self, x5, w5, b, y5) -> None:
        """Ask the process-wide decision (a tuning operator's first call of a key with no wisdom recorded times
        the candidates on these arrays, on prepared copies of this object, never on this one, which other threads
        may be running)."""
        probes: dict[str, Prepared] = {}

        def run(variant: str) -> None:
            probe = probes.get(variant)
            if probe is None:
                probe = probes[variant] = self.probe(variant)
            probe.execute(x5, w5, b, y5)

        def ready(variant: str) -> bool:
            return variants.ready(variant, self.dtype)

        # only a tuning operator measures (FFTW's MEASURE, on request); every other call decides from the model and
        # the recorded wisdom alone, so that the choice is a function of the plan and the machine profile
        variant = decide_variant(self.plan, self.ranked, run if self.tune else None, self.own, ready, self.request)
        if variant != self.variant:
            self.use(variant)
        self.decided = True
        if self.kept is not None and probes:
            self.kept.prune()  # the packs of the candidates that lost

    def _checked(self, x5, w5, b, y5, visible: bool = False) -> None:
        """``execute``, unless the variant's value check (``Variant.check``) finds values it would turn into a
        wrong Inf or NaN: those run the cheapest exact variant of the gather form instead."""
        dispatch = self.dispatch
        check = dispatch[0].check
        if check is not None and not check(self.plan, x5, max_abs(w5) if self.kept is None else
                                           self.kept.weight_max(w5)):
            exact = prepared(self.plan, exact_request(self.plan))
            exact._guarded(x5, w5, b, y5, exact.dispatch, visible)
        elif dispatch[4]:  # one numba call (tiny calls are hot)
            self.execute(x5, w5, b, y5, dispatch)
        else:
            self._guarded(x5, w5, b, y5, dispatch, visible)

    def _guarded(self, x5, w5, b, y5, dispatch, visible: bool) -> None:
        """``execute`` so that an interrupt leaves a ``visible`` ``y5`` untouched or complete (see the class
        docstring)."""
        if dispatch[4] or not visible:
            self.execute(x5, w5, b, y5, dispatch)
        elif self.warm is dispatch:
            with _interrupts.deferred():
                self.execute(x5, w5, b, y5, dispatch)
            return
        elif threading.current_thread() is not threading.main_thread():  # (never interrupted)
            self.execute(x5, w5, b, y5, dispatch)
        else:  # the first run: its kernels may load or compile, in any worker, after other chunks wrote
            y = np.empty_like(y5)
            self.execute(x5, w5, b, y, dispatch)
            y5[...] = y  # (one copy: an interrupt lands before or after it)
        self.warm = dispatch

    def execute(self, x5, w5, b, y5, dispatch=None) -> None:
        """Run the dispatch (by default the decided one) on canonical 5-D arrays, as it is: no decision, no value
        check, no interrupt guard (a measurement's probe; the guarded paths above)."""
        record, kernel, args, kept_pack, _ = self.dispatch if dispatch is None else dispatch
        if kernel is not None and not self.bias_only:  # the direct kernels first: tiny calls are hot
            kernel(x5, w5, b, y5, *args)
            return
        if self.bias_only:  # no channel in a group: only the bias (activated)
            b = _epilogue.bias_vector(self.plan, b)
            y5[...] = b if self.plan.channels_last else b.reshape((1, -1, 1, 1, 1))
            return
        plan = self.plan
        if self.kept is None:
            packed = record.packed_for_call(plan, w5)
        else:
            packed = kept_pack[0]
            if packed is None:
                packed = kept_pack[0] = self.kept.packed(record, plan, w5)
        record.run(plan, x5, packed, b, y5)


def prepared(plan: geo.Plan, request: geo.Request = geo.AUTO) -> Prepared:
    """The one-off calls' prepared call of ``plan`` and ``request`` (their decision), in the one bounded cache
    (:func:`fastdeconv.clear_caches`)."""
    return _prepare(plan, request)  # (the request always passed: one entry per key, however it is called)


@memo(512)
def _prepare(plan: geo.Plan, request: geo.Request) -> Prepared:
    return Prepared(plan, request)


@memo(256)
def exact_request(plan: geo.Plan) -> geo.Request:
    """The request that pins the cheapest exact variant of the gather form: what runs a call whose values a
    checked variant could turn into a wrong Inf or NaN."""
    gather = geo.Request("gather")
    name = next(v for v, _ in _cost.choose(plan, gather).estimates if variants.get(v).exact)
    return geo.Request("gather", name)


def _prepare_call(x, weight, bias, stride, padding, output_padding, groups, dilation, method, activation=None,
                  data_format="channels_first") -> Prepared:
    """Validate a hot-path call once (the full rules of ``make_plan``) and prepare its dispatch."""
    bias_arr = None if bias is None else as_array(bias, "bias")
    request = geo.make_request(method)
    plan = geo.make_plan(x.shape, weight.shape, x.dtype, weight.dtype, stride, padding, output_padding, groups,
                         dilation, None, options=geo.PlanOptions(
                             None if bias_arr is None else bias_arr.shape, None if bias_arr is None else bias_arr.dtype,
                             activation=activation, data_format=data_format))
    _cost.check_pinned(plan, request, _cost.choose(plan, request))  # (a variant pinned by ``method=``)
    return prepared(plan, request)


def zero_fill(x, stride: IntOrSeq, padding: IntOrSeq | Sequence[Sequence[int]] = 0) -> np.ndarray:
    """Insert ``stride - 1`` zeros between neighbouring elements on every spatial axis, then zero-pad.

    Each spatial axis of length ``i`` becomes ``(i - 1) * stride + 1 + pad_before + pad_after``. The
    leading axes are untouched: x is (C, L), (C, H, W), (N, C, H, W) or (N, C, D, H, W) -- with an int
    ``stride`` a 3-D x is read as one image (C, H, W); pass ``stride`` per axis, e.g. ``(2,)``, to mean a
    batched 1-D (N, C, L).

    Parameters
    ----------
    x : array_like
        Input with one or two leading (batch, channel) axes and 1 to 3 spatial axes.
    stride : int or sequence of int
        Zero-insertion factor per spatial axis (>= 1).
    padding : int, sequence of int, or sequence of (before, after) pairs
        Zeros added on each side (>= 0).

    Returns
    -------
    numpy.ndarray
        float32 for float32 input, otherwise float64.

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> fd.zero_fill(np.array([[1.0, 2.0]]), 3, padding=1)
    array([[0., 1., 0., 0., 2., 0.]])
    """
    x = as_array(x, "x")
    geo.check_numeric(x.dtype, "x")
    rank = _zero_fill_rank(x.ndim, stride, padding)
    stride = geo.per_axis(stride, rank, "stride", minimum=1)
    pads = geo.normalize_padding(padding, rank)
    if isinstance(pads, str):
        raise ValueError(f"padding for zero_fill must be ints or (before, after) pairs, got {padding!r}")
    spatial = x.shape[x.ndim - rank:]
    if any(i < 1 for i in spatial):
        raise ValueError(f"x spatial sizes must be >= 1, got {spatial}")
    out_spatial = tuple((i - 1) * s + 1 + b + a for i, s, (b, a) in zip(spatial, stride, pads))
    dtype = np.dtype(np.float32) if geo.is_float32(x.dtype) else np.dtype(np.float64)
    shape = x.shape[:x.ndim - rank] + out_spatial
    geo.check_memory(shape, dtype, "the zero-filled array")
    z = np.empty(shape, dtype)
    if z.size:
        lead = (1,) * (geo.MAX_RANK - rank)
        x5 = contiguous(x, dtype, "x").reshape((-1, 1) + lead + spatial)
        fill(x5, z.reshape((-1, 1) + lead + out_spatial), _pad3(stride, 1), _pad3([b for b, _ in pads], 0))
    return z


# --------------------------------------------------------------------------- helpers


def _zero_fill_rank(ndim: int, stride, padding) -> int:
    for arg in (stride, padding):
        if not isinstance(arg, str) and np.ndim(arg) > 0:
            rank = len(arg)
            if not 1 <= rank <= geo.MAX_RANK or ndim - rank not in (1, 2):
                raise ValueError(f"x must have 1 or 2 leading axes before {rank} spatial axes; got x.ndim = {ndim}")
            return rank
    if not 2 <= ndim <= 5:
        raise ValueError(f"x must be (C, *spatial) or (N, C, *spatial) with 1 to 3 spatial axes; got x.ndim = {ndim}")
    return ndim - 1 if ndim <= 3 else ndim - 2


def _pad3(values, fill_value: int) -> np.ndarray:
    return np.array((fill_value,) * (geo.MAX_RANK - len(values)) + tuple(values), dtype=np.int64)


def as_array(a, name: str) -> np.ndarray:
    """``a`` as a plain ndarray: subclasses (``np.matrix``) become their data; masked arrays, tensors that
    require grad and objects that are no array are refused with a TypeError naming the argument."""
    if type(a) is np.ndarray:
        return a
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} must not be a masked array (its masked entries have no defined value): pass "
                        f"{name}.filled(value)")
    if getattr(a, "requires_grad", False) is True:  # torch: np.asarray would raise torch's RuntimeError
        raise TypeError(f"{name} is a tensor that requires grad: pass {name}.detach().numpy() (fastdeconv does not "
                        f"track gradients; fastdeconv.grad has the backward functions)")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise TypeError(f"{name} must be array-like: {exc}") from None
    if type(arr) is not np.ndarray:  # np.asarray keeps no subclass, but a custom __array__ may return one
        arr = arr.view(np.ndarray)
    return arr


def contiguous(a: np.ndarray, dtype: np.dtype, name: str = "an input") -> np.ndarray:
    """C-contiguous, writeable-typed array of ``dtype`` (a copy only when needed; inputs are never written).

    A copy that could never be allocated (e.g. of a broadcast view ``np.broadcast_to(v, (1, 1, 2**33))``, whose
    data is one element) is refused with the ValueError of every oversized buffer, before allocating."""
    if not (a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable):
        geo.check_memory(a.shape, dtype, f"a contiguous {np.dtype(dtype).name} copy of {name}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if not a.flags.writeable:  # numba compiles read-only arrays separately: copy instead
        a = a.copy()
    return a


def output_array(plan: geo.Plan, out: np.ndarray | None, inputs) -> np.ndarray:
    """The array the kernel writes: ``out`` itself when it is usable directly, else a fresh one."""
    if out is None:
        return np.empty(plan.out_shape, plan.dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != plan.out_shape:
        raise ValueError(f"out must have the result's shape {plan.out_shape}, got {out.shape}")
    if out.dtype.newbyteorder("=") != plan.dtype:  # byte order is not precision: '>f4' takes a float32 result
        raise TypeError(f"out must have the result's dtype {plan.dtype}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    overlaps = any(a is not None and np.may_share_memory(out, a) for a in inputs)
    if out.flags.c_contiguous and not overlaps and out.dtype == plan.dtype:
        return out
    return np.empty(plan.out_shape, plan.dtype)
