"""Gradients of :func:`fastdeconv.conv_transpose` (what ``torch.autograd`` computes for ``conv_transpose``).

``y = conv_transpose(x, w) + b`` is linear in x and in w, so for ``L(y)`` with ``gy = dL/dy``:

- ``grad_x`` is the adjoint applied to gy: the forward convolution ``conv(gy, w)`` with the same geometry
  (same ``weight`` array, stride, padding, dilation, groups), cut to the shape of x;
- ``grad_weight[ci, col, tap] = sum_{n, i} x[n, ci, i] * gy[n, co, i * stride + tap * dilation - start]``, a
  correlation of x with gy summed over the batch (``_tasks.weight_grad``);
- ``grad_bias`` is gy summed over the batch and every spatial axis.
"""

from __future__ import annotations

import numpy as np

from . import _geometry as geo
from ._api import as_array, contiguous
from ._forward import ConvPlan, run_conv
from ._geometry import IntOrSeq, Padding
from ._tasks import weight_grad


def conv_transpose_backward(grad_output, x, weight, stride: IntOrSeq = 1, padding: Padding = 0,
                            output_padding: IntOrSeq = 0, groups: int = 1, dilation: IntOrSeq = 1
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``conv_transpose(x, weight, bias, ...)`` with respect to x, weight and bias.

    Matches ``torch.autograd`` of ``torch.nn.functional.conv_transpose{1,2,3}d`` (and of the ``padding``
    forms fastdeconv adds: (before, after) pairs, ``"valid"``, ``"same"``).

    Parameters
    ----------
    grad_output : array_like
        dL/dy, of exactly the shape ``conv_transpose(x, weight, ...)`` returns.
    x : array_like
        The forward input, (N, C_in, *spatial) or unbatched (C_in, *spatial).
    weight : array_like
        The forward kernel, (C_in, C_out // groups, *kernel).
    stride, padding, output_padding, groups, dilation
        The forward call's geometry, as in :func:`fastdeconv.conv_transpose`.

    Returns
    -------
    grad_x : numpy.ndarray
        Shape of x.
    grad_weight : numpy.ndarray
        Shape of weight.
    grad_bias : numpy.ndarray
        Shape (C_out,).
        All three are float32 when grad_output, x and weight are all float32, float64 otherwise.

    Raises
    ------
    TypeError
        Complex or non-numeric inputs, non-integer geometry.
    ValueError
        Inconsistent shapes (grad_output not the forward output's shape), geometry outside its rules.

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> x, w = np.ones((1, 1, 2)), np.array([[[1.0, 2.0]]])
    >>> gx, gw, gb = fd.conv_transpose_backward(np.ones((1, 1, 4)), x, w, stride=2)
    >>> gx, gw, gb
    (array([[[3., 3.]]]), array([[[2., 2.]]]), array([4.]))
    """
    grad_output = as_array(grad_output, "grad_output")
    x, weight = as_array(x, "x"), as_array(weight, "weight")
    geo.check_numeric(grad_output.dtype, "grad_output")
    plan = geo.make_plan(x.shape, weight.shape, x.dtype, weight.dtype, stride, padding, output_padding, groups,
                         dilation)
    if grad_output.shape != plan.out_shape:
        raise ValueError(f"grad_output must have the shape of conv_transpose's output {plan.out_shape} for this "
                         f"x, weight and geometry; got {grad_output.shape}")
    dtype = plan.dtype if geo.is_float32(grad_output.dtype) else np.dtype(np.float64)
    for shape, name in ((x.shape, "grad_x"), (weight.shape, "grad_weight")):
        geo.check_memory(shape, dtype, name)

    # grad_x: the forward convolution of grad_output with the same weight array (its C_in is conv's C_out)
    adjoint = ConvPlan(batch=plan.batch, c_in=plan.c_out, c_out=plan.c_in, groups=plan.groups,
                       axes=tuple(geo.Axis(a.size_out, a.kernel, a.stride, a.dilation, a.start, a.size_in)
                                  for a in plan.axes),
                       rank=plan.rank, batched=plan.batched, dtype=dtype)
    grad_x = np.empty(x.shape, dtype)
    grad_weight = np.empty(weight.shape, dtype)
    gy5 = contiguous(grad_output, dtype).reshape((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes))
    # the GEMM form computes grad_weight from the same columns of grad_output as grad_x (two matrix products)
    done = run_conv(adjoint, gy5, weight, None, grad_x, dual=x, grad_weight=grad_weight)
    if not done and grad_weight.size:
        x5 = contiguous(x, dtype).reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes))
        gw5 = grad_weight.reshape((plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes))
        weight_grad(x5, gy5, gw5, plan.groups, plan.arrays("stride"), plan.arrays("dilation"),
                    plan.arrays("start"))
    grad_bias = gy5.sum(axis=(0, 2, 3, 4), dtype=dtype)
    return grad_x, grad_weight, grad_bias
