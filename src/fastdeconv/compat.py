"""Framework conventions on top of :func:`fastdeconv.conv_transpose`: TensorFlow, ONNX, zero-fill weights.

Every framework computes the same scatter, with the kernel *not* flipped, along each spatial axis::

    full[in_index * stride + tap * dilation] += x[in_index] * w[tap]
    full_size = (size_in - 1) * stride + (kernel - 1) * dilation + 1
    y = full[start : start + size_out]            (zeros wherever that reads past ``full``)

They differ only in the layout of the arrays and in how they choose ``start`` and ``size_out`` (see
``_geometry``). The adapters here only map the layouts and apply each framework's rules for ``start`` and
``size_out``; the arithmetic is the core's (``_geometry.Plan`` executed by ``_api.execute``), so every
kernel and ``method="auto"`` serve them. Nothing is computed in Python loops.

Choices where a framework's documentation and its engines disagree are stated in each docstring; in short:

* TensorFlow: ``output_shape`` is a constraint (``conv_grad_shape_utils.cc``), checked exactly as TF does,
  including its C integer division. Channels-first layouts, groups and dilations are answered (TF's CPU
  kernels refuse them). The result's dtype follows the core's rule (float32 iff both inputs are float32).
* ONNX: onnxruntime 1.32 is followed where the ONNX text and onnxruntime differ (SEMANTICS pitfalls 2 and
  4): a negative total padding is clamped to 0 (the output is zero-extended at the end),
  ``auto_pad="SAME_*"`` with ``(kernel - 1) * dilation + 1 < stride`` gives the natural size rather than
  ``input * stride``, ``output_padding`` must be smaller than ``stride``, and an ``output_shape`` larger than
  ``(in - 1) * stride + (kernel - 1) * dilation + stride`` is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from . import _geometry as geo
from ._api import as_array, execute
from ._geometry import IntOrSeq

__all__ = ["tf_conv2d_transpose", "tf_conv_transpose", "onnx_conv_transpose", "from_correlation_weights"]

ONNX_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
TF_FORMATS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}



# --------------------------------------------------------------------------------------------- shared


def _run(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple[int, ...],
         dilation: tuple[int, ...], groups: int, starts: list[int], sizes: list[int],
         channels_last: bool = False) -> np.ndarray:
    """The core's transposed convolution of validated arrays with explicit crops.

    ``y[..., o] = full[..., starts + o]`` for ``o < sizes`` per spatial axis (zeros outside ``full``), plus
    ``bias``. x (N, C_in, *spatial) with every spatial size >= 1 (``channels_last``: (N, *spatial, C_in), computed
    by the core's channels-last kernels, no transpose), weight (C_in, C_out // groups, *kernel).
    """
    rank = weight.ndim - 2
    kernel = weight.shape[2:]
    spatial = x.shape[1:-1] if channels_last else x.shape[2:]
    fulls = [geo.full_size(i, k, s, d) for i, k, s, d in zip(spatial, kernel, stride, dilation)]
    # Validate shapes/dtypes with the core's rules on a plan cropped to one element per axis (cheap to
    # check), then give each spatial axis the framework's own start and size.
    plan = geo.make_plan(x.shape, weight.shape, x.dtype, weight.dtype, stride, [(f - 1, 0) for f in fulls], 0,
                         groups, dilation, None, options=geo.PlanOptions(
                             None if bias is None else bias.shape, None if bias is None else bias.dtype,
                             data_format="channels_last" if channels_last else "channels_first"))
    lead = plan.axes[:geo.MAX_RANK - rank]
    axes = lead + tuple(replace(a, start=int(st), size_out=int(o))
                        for a, st, o in zip(plan.axes[geo.MAX_RANK - rank:], starts, sizes))
    plan = replace(plan, axes=axes)
    geo.check_memory(plan.out_shape, plan.dtype, "the output")
    y = np.empty(plan.out_shape, plan.dtype)
    execute(plan, x, weight, bias, y)
    return y


def _numeric_array(a, name: str) -> np.ndarray:
    a = as_array(a, name)
    geo.check_numeric(a.dtype, name)
    return a


def _trunc_div(a: int, b: int) -> int:
    """C/C++ integer division (rounds toward zero), as used by TensorFlow's shape functions."""
    q = abs(a) // b
    return q if a >= 0 else -q


def _int_list(value, name: str) -> list[int]:
    """A 1-D sequence of ints (list, tuple or 1-D integer array)."""
    if isinstance(value, (str, bytes)) or geo.is_scalar(value) or (isinstance(value, np.ndarray) and value.ndim != 1):
        raise TypeError(f"{name} must be a 1-D sequence of ints, got {value!r}")
    return [geo.as_int(v, name) for v in value]


# --------------------------------------------------------------------------------------------- TensorFlow


def tf_conv2d_transpose(input, filters, output_shape: Sequence[int], strides: IntOrSeq,
                        padding: str | Sequence[Sequence[int]] = "SAME", data_format: str = "NHWC",
                        dilations: IntOrSeq | None = None) -> np.ndarray:
    """``tf.nn.conv2d_transpose``: 2-D transposed convolution with TensorFlow's arguments and rules.

    Parameters
    ----------
    input : array_like
        (N, H, W, C_in) for ``data_format="NHWC"`` or (N, C_in, H, W) for ``"NCHW"``.
    filters : array_like
        [kH, kW, C_out // groups, C_in] (TensorFlow's layout; not flipped).
    output_shape : sequence of int
        [N, H_out, W_out, C_out] (in data_format order) or [H_out, W_out]. A constraint, as in TF: it is
        accepted only if the forward convolution of an array of that shape gives ``input``'s spatial size.
        With the channel entry, ``groups = C_out // filters.shape[2]``; without it, ``C_out = filters.shape[2]``.
    strides : int or sequence of int
        An int, or a list of length 1, 2 or 4 (batch and channel entries must be 1).
    padding : "SAME", "VALID" or list
        ``"SAME"``, ``"VALID"`` (case-sensitive, as in TF) or explicit ``[[0, 0], [top, bottom], [left, right],
        [0, 0]]`` in data_format order.
    data_format : {"NHWC", "NCHW"}
        Layout of ``input`` and of the result (channels-first is answered on the CPU, unlike TF).
    dilations : int or sequence of int, optional
        Like ``strides``; default 1.

    Returns
    -------
    numpy.ndarray
        Shape ``output_shape`` (N, H_out, W_out, C_out) or (N, C_out, H_out, W_out); float32 when input and
        filters are both float32, float64 otherwise.

    Raises
    ------
    ValueError
        An ``output_shape`` that TF refuses, inconsistent shapes or channel counts, bad strides, dilations,
        padding or data_format.
    TypeError
        Complex or non-numeric arrays, non-integer geometry.

    Notes
    -----
    Along each spatial axis with ``in`` input and ``out`` output elements and ``Keff = (k - 1) * d + 1``,
    TF requires ``ceil(out / s) == in`` (SAME), ``(out - Keff + s) // s == in`` (VALID) or
    ``(out + before + after - Keff + s) // s == in`` (explicit; ``//`` is C division, rounding toward zero).
    The result is ``full[start : start + out]`` with ``start = max(0, full_size - out) // 2`` (SAME: the odd
    extra is cropped at the end), ``0`` (VALID) or ``before`` (explicit), zero-extended at the end.

    Examples
    --------
    >>> import numpy as np
    >>> from fastdeconv.compat import tf_conv2d_transpose
    >>> y = tf_conv2d_transpose(np.ones((1, 2, 2, 1)), np.ones((3, 3, 1, 1)), [1, 4, 4, 1], strides=2)
    >>> y[0, :, :, 0]
    array([[1., 1., 2., 1.],
           [1., 1., 2., 1.],
           [2., 2., 4., 2.],
           [1., 1., 2., 1.]])
    """
    if data_format not in TF_FORMATS[2]:
        raise ValueError(f"data_format must be 'NHWC' or 'NCHW' for tf_conv2d_transpose, got {data_format!r}")
    filters = _numeric_array(filters, "filters")
    if filters.ndim != 4:
        raise ValueError(f"filters must have shape [kH, kW, C_out // groups, C_in] (4-D) for "
                         f"tf_conv2d_transpose, got filters.ndim = {filters.ndim}")
    return _tf(input, filters, output_shape, strides, padding, data_format, dilations)


def tf_conv_transpose(input, filters, output_shape: Sequence[int], strides: IntOrSeq,
                      padding: str | Sequence[Sequence[int]] = "SAME", data_format: str | None = None,
                      dilations: IntOrSeq | None = None) -> np.ndarray:
    """``tf.nn.conv_transpose``: 1-D, 2-D or 3-D transposed convolution with TensorFlow's arguments and rules.

    The number of spatial axes ``d`` is ``filters.ndim - 2``; everything else is as in
    :func:`tf_conv2d_transpose`, one entry per spatial axis.

    Parameters
    ----------
    input : array_like
        (N, *spatial, C_in) (channels-last, the default) or (N, C_in, *spatial).
    filters : array_like
        [*kernel, C_out // groups, C_in].
    output_shape : sequence of int
        [N, *out_spatial, C_out] in data_format order, or the ``d`` spatial sizes. A constraint (see
        :func:`tf_conv2d_transpose`).
    strides : int or sequence of int
        An int or a list of length 1, d or d + 2 (batch and channel entries must be 1).
    padding : "SAME", "VALID" or list
        ``"SAME"``, ``"VALID"`` or explicit ``[[0, 0], [before, after], ..., [0, 0]]`` (d + 2 pairs in
        data_format order; TF itself accepts lists only in 2-D).
    data_format : str, optional
        ``"NWC"``/``"NCW"`` (1-D), ``"NHWC"``/``"NCHW"`` (2-D), ``"NDHWC"``/``"NCDHW"`` (3-D); default
        channels-last.
    dilations : int or sequence of int, optional
        Like ``strides``; default 1.

    Returns
    -------
    numpy.ndarray
        (N, *out_spatial, C_out) or (N, C_out, *out_spatial); float32 iff input and filters are float32.

    Raises
    ------
    ValueError
        An ``output_shape`` that TF refuses, inconsistent shapes, bad strides, dilations, padding or format.
    TypeError
        Complex or non-numeric arrays, non-integer geometry.

    Examples
    --------
    >>> import numpy as np
    >>> from fastdeconv.compat import tf_conv_transpose
    >>> tf_conv_transpose(np.ones((1, 3, 1)), np.ones((2, 1, 1)), [1, 6, 1], 2, padding="VALID")[0, :, 0]
    array([1., 1., 1., 1., 1., 1.])
    """
    filters = _numeric_array(filters, "filters")
    if not 3 <= filters.ndim <= geo.MAX_RANK + 2:
        raise ValueError(f"filters must have shape [*kernel, C_out // groups, C_in] with 1 to 3 spatial axes, "
                         f"got filters.ndim = {filters.ndim}")
    rank = filters.ndim - 2
    if data_format is None:
        data_format = TF_FORMATS[rank][0]
    if data_format not in TF_FORMATS[rank]:
        raise ValueError(f"data_format must be one of {TF_FORMATS[rank]} for {rank} spatial axes (filters.ndim = "
                         f"{filters.ndim}), got {data_format!r}")
    return _tf(input, filters, output_shape, strides, padding, data_format, dilations)


def _tf(x, filters: np.ndarray, output_shape, strides, padding, data_format: str, dilations) -> np.ndarray:
    rank = filters.ndim - 2
    channels_last = data_format.endswith("C")
    ch = rank + 1 if channels_last else 1
    x = _numeric_array(x, "input")
    if x.ndim != rank + 2:
        raise ValueError(f"input must have shape {data_format} ({rank + 2}-D, batch first) to match filters with "
                         f"{rank} spatial axes, got input.ndim = {x.ndim}")
    strides = _tf_per_axis(strides, rank, ch, "strides")
    dilations = (1,) * rank if dilations is None else _tf_per_axis(dilations, rank, ch, "dilations")
    pads = _tf_padding(padding, rank, ch)

    # output_shape: [N, *spatial, C] (data_format order) or the spatial sizes only
    shape = _int_list(output_shape, "output_shape")
    if len(shape) == rank + 2:
        spatial_idx = [i for i in range(rank + 2) if i not in (0, ch)]
        out_spatial, out_batch, c_out = [shape[i] for i in spatial_idx], shape[0], shape[ch]
    elif len(shape) == rank:
        out_spatial, out_batch, c_out = shape, None, None
    else:
        raise ValueError(f"output_shape must have {rank + 2} entries ({data_format}) or {rank} spatial entries, "
                         f"got {len(shape)}: {shape}")
    if any(v < 0 for v in shape):
        raise ValueError(f"output_shape entries must be >= 0, got {shape}")

    kernel = filters.shape[:rank]
    c_out_g, c_in = filters.shape[rank], filters.shape[rank + 1]
    batch, x_channels = x.shape[0], x.shape[ch]
    in_spatial = [x.shape[i] for i in range(rank + 2) if i not in (0, ch)]
    if any(k < 1 for k in kernel):
        raise ValueError(f"filters spatial sizes (the kernel) must be >= 1, got {kernel}")
    if c_out_g < 1:
        raise ValueError(f"filters.shape[{rank}] (C_out // groups) must be >= 1, got {c_out_g}")
    if x_channels != c_in:
        raise ValueError(f"input has {x_channels} channels but filters.shape[-1] (C_in) is {c_in}")
    if out_batch is not None and out_batch != batch:
        raise ValueError(f"output_shape batch ({out_batch}) must equal the input batch ({batch})")
    if c_out is None:
        c_out, groups = c_out_g, 1
    else:
        if c_out < 1 or c_out % c_out_g:
            raise ValueError(f"output_shape channels ({c_out}) must be a positive multiple of filters.shape[{rank}] "
                             f"({c_out_g}); their ratio is the number of groups")
        groups = c_out // c_out_g
        if c_in % groups:
            raise ValueError(f"input channels ({c_in}) must be divisible by groups = output channels / "
                             f"filters.shape[{rank}] = {groups}")

    starts = []
    for axis, (i, o, k, s, d, pad) in enumerate(zip(in_spatial, out_spatial, kernel, strides, dilations, pads)):
        keff = (k - 1) * d + 1
        if pad == "SAME":
            forward = _trunc_div(o + s - 1, s)
            lo, hi = (i - 1) * s + 1, i * s
            starts.append(max(0, (i - 1) * s + keff - o) // 2)
        else:
            b, a = (0, 0) if pad == "VALID" else pad
            forward = _trunc_div(o + b + a - keff + s, s)
            lo, hi = (i - 1) * s + keff - b - a, i * s + keff - b - a - 1
            starts.append(b)
        if forward != i:
            rule = "ceil(out / stride)" if pad == "SAME" else "(out + pad_before + pad_after - (kernel - 1) * " \
                                                             "dilation - 1) // stride + 1"
            raise ValueError(f"output_shape {out_spatial} is refused on spatial axis {axis}: TensorFlow accepts an "
                             f"output size only if the forward convolution of it gives the input size, "
                             f"{rule} == {i}, i.e. out in [{max(lo, 0)}, {hi}]; got {o} (padding {padding!r}, "
                             f"stride {s}, kernel {k}, dilation {d})")

    out_shape_nc = (batch, c_out) + tuple(out_spatial)
    dtype = geo.result_dtype(x.dtype, filters.dtype)
    geo.check_memory(out_shape_nc, dtype, "the output")
    weight = filters.transpose((rank + 1, rank) + tuple(range(rank)))  # -> (C_in, C_out // groups, *kernel)
    if x.size == 0 or 0 in out_spatial:  # no input element (or no output element): TF returns zeros
        return np.zeros((batch,) + tuple(out_spatial) + (c_out,) if channels_last else out_shape_nc, dtype)
    # channels-last data runs the core's channels-last kernels directly (no transpose of x or of the result)
    return _run(x, weight, None, strides, dilations, groups, starts, out_spatial, channels_last)


def _tf_per_axis(value, rank: int, ch: int, name: str) -> tuple[int, ...]:
    """TF's strides/dilations: an int or a list of length 1, rank or rank + 2 (batch/channel entries 1)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an int or a list of ints, got {value!r}")
    if geo.is_scalar(value):
        values = [geo.as_int(value, name)] * rank
    else:
        seq = _int_list(value, name)
        if len(seq) == 1:
            values = seq * rank
        elif len(seq) == rank:
            values = seq
        elif len(seq) == rank + 2:
            if seq[0] != 1 or seq[ch] != 1:
                raise ValueError(f"{name} in the batch and channel dimensions must be 1, got {seq}")
            values = [seq[i] for i in range(rank + 2) if i not in (0, ch)]
        else:
            raise ValueError(f"{name} must be an int or a list of length 1, {rank} or {rank + 2}, "
                             f"got {len(seq)} values: {seq}")
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be >= 1 on every spatial axis, got {value!r}")
    return tuple(values)


def _tf_padding(padding, rank: int, ch: int) -> list:
    """``"SAME"``/``"VALID"`` per axis, or (before, after) per spatial axis from TF's explicit list."""
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID' (upper case, as in TensorFlow) or an explicit list "
                             f"of {rank + 2} [before, after] pairs, got {padding!r}")
        return [padding] * rank
    if isinstance(padding, bytes) or geo.is_scalar(padding):
        raise TypeError(f"padding must be 'SAME', 'VALID' or a list of [before, after] pairs, got {padding!r}")
    pairs = list(padding)
    if len(pairs) != rank + 2:
        raise ValueError(f"explicit padding must be a list of {rank + 2} [before, after] pairs in data_format order, "
                         f"got {len(pairs)}: {padding!r}")
    out = []
    for entry in pairs:
        if isinstance(entry, (str, bytes)) or geo.is_scalar(entry) or len(entry) != 2:
            raise ValueError(f"explicit padding entries must be [before, after] pairs, got {entry!r}")
        out.append((geo.as_int(entry[0], "padding"), geo.as_int(entry[1], "padding")))
    if any(v < 0 for pair in out for v in pair):
        raise ValueError(f"explicit padding must be >= 0, got {padding!r}")
    if out[0] != (0, 0) or out[ch] != (0, 0):
        raise ValueError(f"explicit padding in the batch and channel dimensions must be [0, 0], got {padding!r}")
    return [out[i] for i in range(rank + 2) if i not in (0, ch)]


# --------------------------------------------------------------------------------------------- ONNX


def onnx_conv_transpose(X, W, B=None, *, auto_pad: str = "NOTSET", dilations: IntOrSeq | None = None,
                        group: int = 1, kernel_shape: Sequence[int] | None = None,
                        output_padding: IntOrSeq | None = None, output_shape: Sequence[int] | None = None,
                        pads: Sequence[int] | None = None, strides: IntOrSeq | None = None) -> np.ndarray:
    """ONNX ``ConvTranspose`` (opset 22), answered as onnxruntime 1.32 answers it.

    Parameters
    ----------
    X : array_like
        (N, C, D1, ..., Dn) with n = 1, 2 or 3.
    W : array_like
        (C, M // group, k1, ..., kn) (not flipped; the PyTorch layout).
    B : array_like, optional
        (M,), added to every element of its output channel.
    auto_pad : {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"}
        ``SAME_*`` crops ``total = full_size + output_padding - input * stride`` (clamped at 0): SAME_UPPER
        takes the odd extra from the end, SAME_LOWER from the beginning. Not together with ``pads``.
    dilations, strides : sequence of int, optional
        One value >= 1 per spatial axis (an int is taken for every axis); default 1.
    group : int
        Number of groups; C must be divisible by it.
    kernel_shape : sequence of int, optional
        If given, must equal ``W.shape[2:]``.
    output_padding : sequence of int, optional
        Zeros added at the high end, ``0 <= output_padding < strides`` per axis (onnxruntime's rule).
    output_shape : sequence of int, optional
        The n spatial output sizes. The pads are derived from ``total = full_size + output_padding -
        output_shape`` (clamped at 0): SAME_UPPER crops ``total // 2`` at the beginning, NOTSET, SAME_LOWER and
        VALID crop ``total - total // 2`` there; ``pads`` is ignored. Each entry must lie in ``[1, (in - 1) *
        stride + (kernel - 1) * dilation + stride]``.
    pads : sequence of int, optional
        ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``, each >= 0; default 0.

    Returns
    -------
    numpy.ndarray
        (N, M, *out_spatial); float32 when X and W are both float32, float64 otherwise.

    Raises
    ------
    ValueError
        Attributes of the wrong length or sign, ``pads`` with ``auto_pad``, an unknown ``auto_pad``, a
        ``kernel_shape`` not matching W, channels not divisible by ``group``, a B of the wrong shape, an
        unreachable ``output_shape`` or a non-positive output size.
    TypeError
        Complex or non-numeric arrays, non-integer attributes.

    Notes
    -----
    Decisions where the ONNX text and its implementations disagree (SEMANTICS pitfalls 2 and 4), all
    following onnxruntime 1.32 (which matches the current spec wherever the spec is unambiguous):

    * A negative total padding (``output_shape`` above the natural size, or SAME with ``(kernel - 1) *
      dilation + 1 < stride``) is clamped to 0, so no crop happens: an ``output_shape`` above the natural
      size is zero-extended at the END (as ``test_convtranspose_output_shape`` expects); for SAME the output
      keeps its natural size ``full_size + output_padding`` instead of ``input * stride`` (the
      ReferenceEvaluator instead pads a zero row at the start for SAME_UPPER).
    * ``output_shape`` entries larger than ``(in - 1) * stride + (kernel - 1) * dilation + stride`` are
      refused (the forward convolution of such an output would be longer than the input), although onnx
      shape inference accepts them; ``output_shape`` must have one entry per spatial axis.
    * ``output_padding`` must be smaller than ``strides`` (the spec's text reads "less than stride/dilation";
      onnxruntime refuses ``output_padding >= stride`` even when it is below the dilation).

    Examples
    --------
    >>> import numpy as np
    >>> from fastdeconv.compat import onnx_conv_transpose
    >>> onnx_conv_transpose(np.ones((1, 1, 3)), np.ones((1, 1, 3)), strides=[2], auto_pad="SAME_UPPER")[0, 0]
    array([1., 1., 2., 1., 2., 1.])
    """
    X, W = _numeric_array(X, "X"), _numeric_array(W, "W")
    if B is not None:
        B = _numeric_array(B, "B")
    if not 3 <= W.ndim <= geo.MAX_RANK + 2:
        raise ValueError(f"W must have shape (C, M // group, *kernel) with 1 to 3 spatial axes, got W.ndim = {W.ndim}")
    rank = W.ndim - 2
    if X.ndim != rank + 2:
        raise ValueError(f"X must have shape (N, C, *spatial) with {rank} spatial axes (as W), got X.ndim = {X.ndim}")
    if not isinstance(auto_pad, str) or auto_pad not in ONNX_AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {', '.join(ONNX_AUTO_PADS)}, got {auto_pad!r}")
    strides = _onnx_ints(strides, rank, "strides", 1, minimum=1)
    dilations = _onnx_ints(dilations, rank, "dilations", 1, minimum=1)
    output_padding = _onnx_ints(output_padding, rank, "output_padding", 0, minimum=0)
    if pads is not None:
        if not isinstance(pads, (str, bytes)) and not geo.is_scalar(pads) and len(pads) != 2 * rank:
            raise ValueError(f"pads must have 2 * {rank} = {2 * rank} entries [x1_begin, ..., x1_end, ...], "
                             f"got {len(pads)}: {list(pads)}")
        pads = _onnx_ints(pads, 2 * rank, "pads", 0, minimum=0)
        if auto_pad != "NOTSET":
            raise ValueError(f"pads and auto_pad={auto_pad!r} cannot be used together (use auto_pad='NOTSET')")
    if output_shape is not None:
        output_shape = _onnx_ints(output_shape, rank, "output_shape", 0, minimum=1)
    group = geo.as_int(group, "group")
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    kernel = W.shape[2:]
    if kernel_shape is not None and _onnx_ints(kernel_shape, rank, "kernel_shape", 0, minimum=1) != kernel:
        raise ValueError(f"kernel_shape {list(kernel_shape)} must match W.shape[2:] = {list(kernel)}")
    if any(k < 1 for k in kernel):
        raise ValueError(f"W spatial sizes (the kernel) must be >= 1, got {kernel}")
    if X.shape[1] != W.shape[0]:
        raise ValueError(f"X has {X.shape[1]} channels but W.shape[0] is {W.shape[0]}")
    if W.shape[0] % group:
        raise ValueError(f"the input channel count ({W.shape[0]}) must be divisible by group ({group})")
    m = W.shape[1] * group
    if B is not None and B.shape != (m,):
        raise ValueError(f"B must have shape (M,) = ({m},) with M = W.shape[1] * group, got {B.shape}")
    in_spatial = X.shape[2:]
    if any(i < 1 for i in in_spatial):
        raise ValueError(f"X spatial sizes must be >= 1, got {in_spatial}")
    for axis, (op, s) in enumerate(zip(output_padding, strides)):
        if op >= s:
            raise ValueError(f"output_padding must be smaller than strides on every axis (onnxruntime's rule); "
                             f"axis {axis} has output_padding {op} and stride {s}")

    starts, sizes = _onnx_crops(in_spatial, kernel, strides, dilations, output_padding, output_shape, pads, auto_pad)
    return _run(X, W, B, strides, dilations, group, starts, sizes)


def _onnx_crops(in_spatial, kernel, strides, dilations, output_padding, output_shape, pads,
                auto_pad: str) -> tuple[list[int], list[int]]:
    """Per spatial axis, the crop at the beginning and the output size of ONNX ``ConvTranspose`` (the rules in
    :func:`onnx_conv_transpose`'s notes: ``output_shape`` first, then ``SAME_*``, then ``pads``)."""
    rank = len(in_spatial)
    starts, sizes = [], []
    for axis in range(rank):
        i, k, s, d, op = in_spatial[axis], kernel[axis], strides[axis], dilations[axis], output_padding[axis]
        full = geo.full_size(i, k, s, d)
        if output_shape is not None:
            out = output_shape[axis]
            if out > full + s - 1:
                raise ValueError(f"output_shape {list(output_shape)} is not reachable on axis {axis}: it must be at "
                                 f"most (in - 1) * stride + (kernel - 1) * dilation + stride = {full + s - 1} "
                                 f"(onnxruntime's rule: the forward convolution of the output must give the input "
                                 f"size {i})")
            total = max(0, full + op - out)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = max(0, full + op - i * s)
        else:
            total = None
        if total is None:
            begin, end = (0, 0) if pads is None else (pads[axis], pads[axis + rank])
        elif auto_pad == "SAME_UPPER":
            begin, end = total // 2, total - total // 2
        else:
            begin, end = total - total // 2, total // 2
        size = output_shape[axis] if output_shape is not None else full + op - begin - end
        if size < 1:
            raise ValueError(f"the output size on axis {axis} would be {size} <= 0: pads {pads} crop more than the "
                             f"full output ({full + op} with output_padding)")
        starts.append(begin)
        sizes.append(size)
    return starts, sizes


def _onnx_ints(value, length: int, name: str, default: int, minimum: int) -> tuple[int, ...]:
    """An ONNX ints attribute of ``length`` entries (an int stands for every entry; None for the default)."""
    if value is None:
        return (default,) * length
    return geo.per_axis(value, length, name, minimum=minimum)


# ----------------------------------------------------------------------- zero-fill-then-correlate weights


def from_correlation_weights(w) -> np.ndarray:
    """Zero-fill-then-correlate weights [C_out, C_in, *kernel] -> the conv_transpose layout (C_in, C_out, *kernel).

    The zero-fill-then-correlate convention (weights [out, in, *k]) computes a transposed convolution by
    inserting ``stride - 1`` zeros between input elements, padding, and cross-correlating with ``w`` (as a
    forward convolution does). That equals
    ``conv_transpose`` with these weights: the spatial axes flipped and the channel axes swapped.
    ``correlate(zero_fill(x, s, K - 1 - p), w) == conv_transpose(x, from_correlation_weights(w), stride=s,
    padding=p)`` (ungrouped weights).

    Parameters
    ----------
    w : array_like
        Real weights of shape (C_out, C_in, *kernel) with 1 to 3 spatial axes.

    Returns
    -------
    numpy.ndarray
        A new C-contiguous array (C_in, C_out, *kernel) of the same dtype.

    Raises
    ------
    ValueError
        ``w.ndim`` not in 3..5.
    TypeError
        Complex or non-numeric ``w``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastdeconv.compat import from_correlation_weights
    >>> from_correlation_weights(np.arange(6.0).reshape(1, 2, 3))
    array([[[2., 1., 0.]],
    <BLANKLINE>
           [[5., 4., 3.]]])
    """
    w = _numeric_array(w, "w")
    if not 3 <= w.ndim <= geo.MAX_RANK + 2:
        raise ValueError(f"w must have shape (C_out, C_in, *kernel) with 1 to 3 spatial axes, got w.ndim = {w.ndim}")
    return np.ascontiguousarray(np.flip(w, tuple(range(2, w.ndim))).swapaxes(0, 1))
