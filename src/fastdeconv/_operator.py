"""``fastdeconv.ConvTranspose``: a transposed convolution you keep (the weight packed once, plans kept per shape)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import numpy as np

from . import _cost
from . import _geometry as geo
from ._api import Prepared, as_array, operator_pick, output_array
from ._geometry import IntOrSeq, Padding
from ._scan import max_abs
from ._threads import apply_num_threads
from .grad import conv_transpose_backward

# ``ndarray.flags.num`` bits of a C-contiguous, writeable array that owns its data (NPY_ARRAY_C_CONTIGUOUS,
# NPY_ARRAY_OWNDATA, NPY_ARRAY_WRITEABLE)
_OWNED = 0x1 | 0x4 | 0x400
_SHAPES_SIZE = 256  # plans kept per operator (input shape, dtype, output_size); the oldest half is dropped beyond


class ConvTranspose:
    """A transposed convolution with a fixed weight: ``op(x)`` equals ``conv_transpose(x, weight, ...)``.

    What depends only on the weight is done once and kept by the operator: its conversion to the computing
    dtype, and per kernel variant the relayouts and transformed weights the variant reads (``gather-gemm``'s
    per-phase weights, the tap-major weight of the row-block GEMMs, Winograd's transformed weights). With the
    transformed weights kept, Winograd is also a candidate on weight-heavy layers where a one-off call's memory
    rule (per-call scratch <= one output) forbids it. The plan of each input shape (and dtype, and
    ``output_size``) is made on its first call and kept. Any number of threads may call one operator at once.

    Parameters
    ----------
    weight : array_like
        Kernel of shape (C_in, C_out // groups, *kernel) (the PyTorch/ONNX layout, not flipped); copied, so later
        changes of the caller's array do not reach the operator.
    bias : array_like, optional
        Shape (C_out,); copied.
    stride, padding, output_padding, groups, dilation
        The geometry, exactly as for :func:`fastdeconv.conv_transpose` (validated here, and against each input
        shape on its first call).
    method : {"auto", "scatter", "gather", "zerofill"} or a variant's name
        As for :func:`fastdeconv.conv_transpose`.
    tune : bool, default False
        Measure, like FFTW's MEASURE: the first call of each input shape (and dtype) for which no wisdom is
        recorded times the variants the cost model rates close to the best on the call's own arrays, keeps the
        fastest when it is consistently faster, and records the verdict as wisdom in the calibration file
        (:mod:`fastdeconv.calibration`), which every later process follows. Without it (the default) the choice
        is the cost model's on this machine's profile, or recorded wisdom: nothing is timed. A process that
        already ran these shapes keeps its variant (results never change within a process); the wisdom decides
        later processes.
    activation : None, str or tuple
        The fused epilogue after the bias, as for :func:`fastdeconv.conv_transpose` (``"relu"``,
        ``("leaky_relu", slope)``, ``"tanh"``, ``"sigmoid"``, ``("clamp", lo, hi)``). A batch norm that follows
        in eval mode is folded into the weight and bias first: :func:`fastdeconv.fold_batchnorm`.
    data_format : {"channels_first", "channels_last"}
        The layout of the inputs and results, as for :func:`fastdeconv.conv_transpose`.

    Attributes
    ----------
    weight : numpy.ndarray
        The operator's copy of the weight (read-only).
    bias : numpy.ndarray or None
        The operator's copy of the bias (read-only).

    Raises
    ------
    TypeError, ValueError
        For a weight, bias or geometry that ``conv_transpose`` would refuse, with the same messages.

    Notes
    -----
    ``op(x)`` gives the same bits as ``conv_transpose(x, weight, bias, ...)`` whenever both run the same variant
    (:meth:`plan` says which runs; an operator may run Winograd where a one-off call cannot). ``pickle`` and
    ``copy`` keep the weight, bias and geometry; the copy packs again on its first calls. Unpickled in a process
    with another ``NUMBA_NUM_THREADS``, a BLAS-backed variant cuts its GEMMs for that pool size and may differ in
    the last bits (see ``docs/variants.md``); the numba kernels give the same bits.

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> op = fd.ConvTranspose(np.ones((1, 1, 2, 2)), stride=2)
    >>> op(np.ones((1, 1, 2, 2)))[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """

    def __init__(self, weight, bias=None, stride: IntOrSeq = 1, padding: Padding = 0,
                 output_padding: IntOrSeq = 0, groups: int = 1, dilation: IntOrSeq = 1, *, method: str = "auto",
                 tune: bool = False, activation=None, data_format: str = "channels_first"):
        w = as_array(weight, "weight")
        geo.check_numeric(w.dtype, "weight")
        if not 3 <= w.ndim <= 2 + geo.MAX_RANK:
            raise ValueError(f"weight must be (C_in, C_out // groups, *kernel) with 1 to 3 kernel axes; "
                             f"got weight.ndim = {w.ndim}")
        b = None if bias is None else as_array(bias, "bias")
        if b is not None:
            geo.check_numeric(b.dtype, "bias")
        self._request = _validate(w, b, stride, padding, output_padding, groups, dilation, method, activation,
                                  data_format)
        if not isinstance(tune, bool):
            raise TypeError(f"tune must be a bool, got {tune!r}")
        self._tune = tune
        self._epilogue = (activation, data_format)
        # private copies (C order); the kernels read writeable arrays (numba compiles read-only ones
        # separately), the public attributes are read-only views of them
        self._w = np.array(w, order="C", copy=True)
        self._b = None if b is None else np.array(b, order="C", copy=True)
        self._geometry = (stride, padding, output_padding, groups, dilation, method)
        self._lock = threading.Lock()
        # (x shape, x dtype, output_size) or a Dask block's (plan, request) -> (Prepared, w5, bias vector): the
        # decision per input shape lives here, on the operator
        self._shapes: dict = {}
        self._weights: dict = {}  # dtype -> (w5, bias vector): the weight and bias in the computing dtype
        self._store = _PackStore(self._lock, self._used_variants)  # what its prepared calls read: packs, max_abs

    # ------------------------------------------------------------------ public

    @property
    def weight(self) -> np.ndarray:
        view = self._w.view()
        view.flags.writeable = False
        return view

    @property
    def bias(self) -> np.ndarray | None:
        if self._b is None:
            return None
        view = self._b.view()
        view.flags.writeable = False
        return view

    def __call__(self, x, out: np.ndarray | None = None, output_size: Sequence[int] | None = None) -> np.ndarray:
        """Apply the operator to ``x``.

        Parameters
        ----------
        x : array_like
            Input of shape (N, C_in, *spatial) or unbatched (C_in, *spatial).
        out : numpy.ndarray, optional
            Array of exactly the result's shape and dtype to write into; it is returned. A call interrupted by
            Ctrl-C leaves it untouched or complete, as :func:`fastdeconv.conv_transpose` does.
        output_size : sequence of int, optional
            Wanted spatial output size (picks the output padding), as for :func:`fastdeconv.conv_transpose`.

        Returns
        -------
        numpy.ndarray
            (N, C_out, *out_spatial) or (C_out, *out_spatial); float32 when x and the weight are both float32,
            float64 otherwise.
        """
        if type(x) is np.ndarray and output_size is None:
            entry = self._shapes.get((x.shape, x.dtype, None))
            if entry is None:
                entry = self._entry(x.shape, x.dtype, None)
        else:
            x = as_array(x, "x")
            geo.check_numeric(x.dtype, "x")
            entry = self._entry(x.shape, x.dtype, output_size)
        prepared, w5, b = entry
        apply_num_threads()
        if out is None:
            y = np.empty(prepared.out_shape, prepared.dtype)
            prepared.run_kept(x, w5, b, y)
            return y
        if type(out) is np.ndarray and out.dtype is prepared.dtype and out.shape == prepared.out_shape:
            # the common case checked cheaply, so that a call into ``out`` costs no more than one allocating its
            # result: both C-contiguous, writeable and owning their data (two such arrays never overlap), with
            # three flags read at once (``flags.num``)
            if (out.flags.num & _OWNED == _OWNED and x.flags.num & _OWNED == _OWNED and out is not x
                    and x.dtype is prepared.dtype):
                prepared.run_canonical(x, w5, b, out, True)
                return out
            flags = out.flags
            if flags.c_contiguous and flags.writeable and not np.may_share_memory(out, x):
                prepared.run_kept(x, w5, b, out, True)
                return out
        y = output_array(prepared.plan, out, (x,))
        prepared.run_kept(x, w5, b, y, y is out)
        if y is not out:
            out[...] = y  # (one copy: an interrupt lands before or after it)
        return out

    def backward(self, x, grad_output) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients of ``op(x)`` with respect to x, the operator's weight and a bias, given ``grad_output``.

        Equal to :func:`fastdeconv.conv_transpose_backward` with this operator's weight and geometry (what
        ``torch.autograd`` computes for ``conv_transpose`` with the same arguments): grad_x is the forward
        convolution of ``grad_output`` with the weight, grad_weight a correlation of x with ``grad_output`` summed
        over the batch, grad_bias ``grad_output`` summed over the batch and the spatial axes.

        Parameters
        ----------
        x : array_like
            The forward input, (N, C_in, *spatial) or unbatched (C_in, *spatial).
        grad_output : array_like
            dL/dy, of exactly the shape ``op(x)`` returns (with the operator's ``output_padding``).

        Returns
        -------
        grad_x : numpy.ndarray
            Shape of x.
        grad_weight : numpy.ndarray
            Shape of :attr:`weight`.
        grad_bias : numpy.ndarray
            Shape (C_out,), whether or not the operator has a bias.

        Raises
        ------
        TypeError, ValueError
            As :func:`fastdeconv.conv_transpose_backward` (grad_output not the shape of ``op(x)``, ...).
        """
        stride, padding, output_padding, groups, dilation, _ = self._geometry
        activation, data_format = self._epilogue
        if activation is not None:
            raise ValueError(f"backward: the operator has activation={activation!r}, whose derivative it does not "
                             f"apply; use an operator without an activation for the gradients")
        if data_format == "channels_last":  # the gradients' kernels are channels-first: transposed around them
            x, grad_output = as_array(x, "x"), as_array(grad_output, "grad_output")
            lead = [] if x.ndim == self._w.ndim - 1 else [0]  # (unbatched: no batch axis)
            perm = lead + [x.ndim - 1] + list(range(len(lead), x.ndim - 1))
            back = np.argsort(perm)
            gx, gw, gb = conv_transpose_backward(grad_output.transpose(perm), x.transpose(perm), self._w, stride,
                                                 padding, output_padding, groups, dilation)
            return np.ascontiguousarray(gx.transpose(back)), gw, gb
        return conv_transpose_backward(grad_output, x, self._w, stride, padding, output_padding, groups, dilation)

    def plan(self, x_shape, *, dtype=None, output_size: Sequence[int] | None = None) -> _cost.Choice:
        """The :class:`~fastdeconv.Choice` a call of this operator on inputs of ``x_shape`` runs.

        Parameters
        ----------
        x_shape : sequence of int
            Input shape (N, C_in, *spatial) or unbatched (C_in, *spatial).
        dtype : numpy dtype, optional
            The input's dtype (default: the weight's).
        output_size : sequence of int, optional
            As for a call.

        Returns
        -------
        Choice
            As :func:`fastdeconv.plan` gives it, for this operator (whose weight-only work is done once: the
            estimates leave it out); its reason also states the bytes the operator keeps.
        """
        shape = _cost.check_shape(x_shape, "x_shape")
        dt = self._w.dtype if dtype is None else np.dtype(dtype)
        prepared = self._entry(shape, dt, output_size)[0]
        choice = _cost.choose(prepared.plan, prepared.request, kept=prepared.own)
        variant = prepared.variant
        reason = choice.reason
        if variant != choice.variant:
            reason = f"measured fastest on this machine; the model alone would pick {choice.variant}"
        reason += f"; the operator keeps {_fmt_bytes(self.state_bytes)} of weights and packed weights"
        return dataclasses.replace(choice, method=_cost.FORM_OF[variant], variant=variant,
                                   serial=_cost.runs_serially(prepared.plan, variant), reason=reason)

    @property
    def state_bytes(self) -> int:
        """Bytes the operator holds: its weight and bias (in every computing dtype) and the packed weights."""
        with self._lock:
            total = self._w.nbytes + (0 if self._b is None else self._b.nbytes)
            for w5, b in self._weights.values():
                total += (0 if np.may_share_memory(w5, self._w) else w5.nbytes) + b.nbytes
            total += sum(_pack_bytes(p, self._weights) for p in self._store.packs.values())
        return total

    def __repr__(self) -> str:
        stride, padding, output_padding, groups, dilation, method = self._geometry
        return (f"ConvTranspose(weight={self._w.shape} {self._w.dtype}, bias={'None' if self._b is None else 'yes'}, "
                f"stride={stride!r}, padding={padding!r}, output_padding={output_padding!r}, groups={groups!r}, "
                f"dilation={dilation!r}, method={method!r}, activation={self._epilogue[0]!r}, "
                f"data_format={self._epilogue[1]!r}; {len(self._shapes)} input shapes planned, "
                f"{_fmt_bytes(self.state_bytes)} kept)")

    # ------------------------------------------------------------------ pickle / copy

    def __getstate__(self) -> dict:
        return {"weight": self._w, "bias": self._b, "geometry": self._geometry, "tune": self._tune,
                "epilogue": self._epilogue}

    def __setstate__(self, state: dict) -> None:
        stride, padding, output_padding, groups, dilation, method = state["geometry"]
        activation, data_format = state.get("epilogue", (None, "channels_first"))
        self.__init__(state["weight"], state["bias"], stride, padding, output_padding, groups, dilation,
                      method=method, tune=state.get("tune", False), activation=activation, data_format=data_format)

    # ------------------------------------------------------------------ internals

    def _entry(self, x_shape, x_dtype, output_size):
        """The kept (prepared call, weight, bias) of an input shape and dtype: made (and validated) once."""
        sizes = None if output_size is None else geo.output_size_spatial(output_size, self._w.ndim - 2)
        key = (tuple(x_shape), np.dtype(x_dtype), sizes)
        entry = self._shapes.get(key)
        if entry is not None:
            return entry
        stride, padding, output_padding, groups, dilation, method = self._geometry
        activation, data_format = self._epilogue
        plan = geo.make_plan(key[0], self._w.shape, key[1], self._w.dtype, stride, padding, output_padding, groups,
                             dilation, sizes, options=geo.PlanOptions(
                                 None if self._b is None else self._b.shape, None if self._b is None else self._b.dtype,
                                 activation=activation, data_format=data_format))
        request = self._request
        if request.variant is not None:  # pinned by ``method=``: refused where even an operator cannot run it
            own = operator_pick(plan, request)
            _cost.check_pinned(plan, request, _cost.choose(plan, request, kept=own), own)
        return self._keep(key, plan, request)

    def _keep(self, key, plan: geo.Plan, request: geo.Request):
        """Prepare ``plan`` under ``key`` once (the first thread to get the lock makes it, the others read it)."""
        with self._lock:
            entry = self._shapes.get(key)
            if entry is None:
                w5, b = self._in_dtype(plan)
                entry = (Prepared(plan, request, kept=self._store, tune=self._tune), w5, b)
                if len(self._shapes) >= _SHAPES_SIZE:
                    for old in list(self._shapes)[:_SHAPES_SIZE // 2]:
                        del self._shapes[old]
                self._shapes[key] = entry
        return entry

    def _in_dtype(self, plan: geo.Plan):
        """The weight (5-D) and bias vector in the plan's dtype, converted once (call with the lock held)."""
        pair = self._weights.get(plan.dtype)
        if pair is None:
            w5_shape = (plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes)
            w5 = self._w.reshape(w5_shape) if self._w.dtype == plan.dtype else \
                np.ascontiguousarray(self._w, plan.dtype).reshape(w5_shape)
            b = np.zeros(plan.c_out, plan.dtype) if self._b is None else np.array(self._b, plan.dtype, copy=True)
            pair = self._weights[plan.dtype] = (w5, b)
        return pair

    def _used_variants(self) -> set[str]:
        """The variants its prepared calls run (call with the lock held)."""
        return {entry[0].variant for entry in self._shapes.values()}


def run_block(op: ConvTranspose, plan: geo.Plan, request: geo.Request, x: np.ndarray, y: np.ndarray) -> None:
    """Run a plan made and validated by the caller for ``op``'s weight and bias, with the operator's converted and
    packed weights: ``fastdeconv.dask``'s blocks, whose shifted plans (``start``, ``size_out``) no input shape of
    the operator's own geometry gives, and whose variant the caller fixed (``request.variant``: the whole
    array's). ``x`` and ``y`` are C-contiguous of the plan's shapes and dtype."""
    key = (plan, request)
    entry = op._shapes.get(key)
    if entry is None:
        entry = op._keep(key, plan, request)
    prepared, w5, b = entry
    apply_num_threads()
    prepared.run_kept(x, w5, b, y)


class _PackStore:
    """An operator's weight-only work that its prepared calls read (``Prepared.kept``): per variant the packed
    weight, and per dtype the weight's largest magnitude. Shares the operator's lock."""

    def __init__(self, lock: threading.Lock, used):
        self.lock = lock
        self.used = used  # () -> the variants the operator's prepared calls run (with the lock held)
        self.packs: dict = {}    # (variant, dtype, the variant's pack_input) -> its packed weight
        self.max_abs: dict = {}  # dtype -> the converted weight's largest magnitude (inf: not all finite)

    def packed(self, record, plan: geo.Plan, w5: np.ndarray):
        """Variant ``record``'s packed weight for ``plan`` (made once, under the lock; later calls only read it).

        The pack is made from ``record.pack_input(plan)`` and the weight in the plan's dtype (``w5``) alone, and
        kept under exactly those (the variant, the dtype, the inputs): plans with equal inputs share it, and a
        plan whose inputs differ (another input shape with fewer output phases, a Dask block) never reads it."""
        inputs = record.pack_input(plan)
        key = (record.name, plan.dtype, inputs)
        packed = self.packs.get(key)
        if packed is None:
            with self.lock:
                packed = self.packs.get(key)
                if packed is None:
                    packed = self.packs[key] = record.pack(inputs, w5)
        return packed

    def weight_max(self, w5: np.ndarray) -> float:
        """``scan.max_abs`` of the weight ``w5`` the operator converted: one scan per dtype, for the value checks
        of the variants that are not exact (``Variant.check``)."""
        found = self.max_abs.get(w5.dtype)
        if found is None:
            found = self.max_abs[w5.dtype] = max_abs(w5)  # (a race computes the same value twice)
        return found

    def prune(self) -> None:
        """Drop the packs of variants no kept plan runs (the candidates a calibration measured and dropped)."""
        with self.lock:
            used = self.used()
            for key in [k for k in self.packs if k[0] not in used]:
                del self.packs[key]


def _validate(w: np.ndarray, b: np.ndarray | None, stride, padding, output_padding, groups, dilation,
              method, activation=None, data_format="channels_first") -> geo.Request:
    """The rules of ``conv_transpose`` that do not depend on the input: checked on a probe input large enough
    for any padding (each input shape is checked again, fully, on its first call). Returns the request."""
    rank = w.ndim - 2
    strides = geo.per_axis(stride, rank, "stride", minimum=1)
    pads = geo.normalize_padding(padding, rank)
    pairs = ((0, 0),) * rank if isinstance(pads, str) else pads
    probe = tuple(geo.ceil_div(before + after, s) + 2 for (before, after), s in zip(pairs, strides))
    channels_last = geo.check_data_format(data_format)
    x_shape = (1,) + probe + (w.shape[0],) if channels_last else (1, w.shape[0]) + probe
    request = geo.make_request(method)  # (validated where make_plan validated it)
    geo.make_plan(x_shape, w.shape, w.dtype, w.dtype, stride, padding, output_padding, groups,
                  dilation, None, options=geo.PlanOptions(
                      None if b is None else b.shape, None if b is None else b.dtype, limit_memory=False,
                      activation=activation, data_format=data_format))
    return request


def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps: float = 1e-5, groups: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fold an eval-mode batch norm that follows a transposed convolution into its weight and bias.

    ``bn(conv_transpose(x, weight, bias)) == conv_transpose(x, w_folded, b_folded)`` with, per output channel
    ``c``, ``scale[c] = gamma[c] / sqrt(running_var[c] + eps)``, ``b_folded[c] = (bias[c] - running_mean[c]) *
    scale[c] + beta[c]`` and the weight scaled along its output-channel axis: a transposed convolution's weight is
    (C_in, C_out // groups, *kernel), so output channel ``g * C_out_g + j`` is ``weight[g-th block of C_in // groups
    rows, j]`` (axis 1 within group ``g``, not axis 0 as for a forward convolution).

    Parameters
    ----------
    weight : array_like
        (C_in, C_out // groups, *kernel).
    bias : array_like or None
        (C_out,), or None for no bias.
    gamma, beta, running_mean, running_var : array_like
        The batch norm's affine weight and bias and its running statistics, each (C_out,).
    eps : float
        The batch norm's epsilon (> 0; PyTorch's default 1e-5).
    groups : int
        The transposed convolution's groups.

    Returns
    -------
    weight, bias : numpy.ndarray
        The folded weight (the input weight's shape) and bias (C_out,), float32 when every input is float32,
        else float64.

    Raises
    ------
    ValueError
        An array whose length is not C_out, a weight whose C_in is not divisible by ``groups``, ``eps <= 0``, a
        negative ``running_var + eps``.
    """
    w = as_array(weight, "weight")
    geo.check_numeric(w.dtype, "weight")
    if not 3 <= w.ndim <= 2 + geo.MAX_RANK:
        raise ValueError(f"weight must be (C_in, C_out // groups, *kernel) with 1 to 3 kernel axes; got weight.ndim "
                         f"= {w.ndim}")
    groups = geo.as_int(groups, "groups")
    if groups < 1 or w.shape[0] % groups:
        raise ValueError(f"groups must be >= 1 and divide weight.shape[0] = {w.shape[0]}, got {groups}")
    c_out = w.shape[1] * groups
    arrays = {}
    for name, value in (("bias", bias), ("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if value is None and name == "bias":
            continue
        a = as_array(value, name)
        geo.check_numeric(a.dtype, name)
        if a.shape != (c_out,):
            raise ValueError(f"{name} must have shape (C_out,) = ({c_out},) (weight.shape[1] * groups = "
                             f"{w.shape[1]} * {groups}), got {a.shape}")
        arrays[name] = a
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    parts = [w] + list(arrays.values())
    dtype = np.dtype(np.float32) if all(geo.is_float32(a.dtype) for a in parts) else np.dtype(np.float64)
    var = arrays["running_var"].astype(np.float64) + float(eps)
    if np.any(var <= 0) or not np.all(np.isfinite(var)):
        raise ValueError("running_var + eps must be finite and > 0 for every channel")
    scale = arrays["gamma"].astype(np.float64) / np.sqrt(var)
    b = arrays["bias"].astype(np.float64) if "bias" in arrays else np.zeros(c_out)
    folded_b = (b - arrays["running_mean"].astype(np.float64)) * scale + arrays["beta"].astype(np.float64)
    c_in_g, c_out_g = w.shape[0] // groups, w.shape[1]
    # (groups, C_in_g, C_out_g, *kernel) * scale (groups, 1, C_out_g, 1...): group g's rows scale its channels
    per = scale.reshape((groups, 1, c_out_g) + (1,) * (w.ndim - 2))
    folded_w = (w.astype(np.float64).reshape((groups, c_in_g) + w.shape[1:]) * per).reshape(w.shape)
    return folded_w.astype(dtype), folded_b.astype(dtype)


def _pack_bytes(packed, weights: dict) -> int:
    """Bytes a pack adds: nothing when it is the computing-dtype weight itself (or a view of it)."""
    if isinstance(packed, np.ndarray):
        if any(np.may_share_memory(packed, w5) for w5, _ in weights.values()):
            return 0
        return packed.nbytes
    return int(getattr(packed, "nbytes", 0))


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
