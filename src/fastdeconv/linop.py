"""``fastdeconv.linear_operator``: the convolution C of one sample as a matrix-free SciPy ``LinearOperator``.

``C @ v`` is :func:`fastdeconv.conv` and ``C.T @ u`` (``rmatvec``, the adjoint) the transposed convolution with
the same weight array, so the iterative solvers of ``scipy.sparse.linalg`` (``lsqr``, ``lsmr``, ``cg`` on
``C.T @ C``, ``gmres``) run on the compiled kernels without the sparse matrix of :func:`fastdeconv.conv_matrix`
(the same operator, entry for entry), whose stored entries cost ``kernel taps`` values and indices per output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _geometry as geo
from ._forward import conv, conv_pads
from ._geometry import IntOrSeq, Padding
from ._operator import ConvTranspose
from .matrix import sample_plan


def linear_operator(weight, input_shape: Sequence[int], stride: IntOrSeq = 1, padding: Padding = 0,
                    dilation: IntOrSeq = 1, groups: int = 1) -> ConvLinearOperator:
    """The forward convolution of one sample as a matrix-free ``scipy.sparse.linalg.LinearOperator`` C.

    C is :func:`fastdeconv.conv_matrix` without the matrix: of shape (C_out * prod(out_spatial),
    C_in * prod(input_shape)), vectors flattened in C order of (channel, *spatial).
    ``C.matvec(v) == fastdeconv.conv(v.reshape(C_in, *input_shape), weight, ...).ravel()`` and
    ``C.rmatvec(u) == fastdeconv.conv_transpose(u.reshape(C_out, *out_spatial), weight, ...,
    output_size=input_shape).ravel()`` (the adjoint ``C.T``, same weight array and geometry); ``matmat`` and
    ``rmatmat`` take the k columns of an (N, k) array as one batch of k samples (one call, not k). So ``lsqr``,
    ``lsmr``, ``cg`` (on ``C.T @ C``) and ``gmres`` (square C) run unchanged.

    Parameters
    ----------
    weight : array_like
        Kernel of shape (C_out, C_in // groups, *kernel), 1 to 3 spatial axes (the ``conv`` layout; the same
        array is the ``conv_transpose`` weight of C.T). Copied: later changes of the caller's array do not
        reach the operator.
    input_shape : sequence of int
        Spatial shape of one input sample (``weight.ndim - 2`` entries, each >= 1), without channels.
    stride, padding, dilation, groups
        Geometry of the forward convolution, as in :func:`fastdeconv.conv`.

    Returns
    -------
    ConvLinearOperator
        A ``LinearOperator`` of dtype float32 when weight is float32, float64 otherwise. A product with a
        vector or matrix follows ``conv``'s rule: float32 when the operand is float32 too, float64 otherwise
        (bool and int operands are converted); a complex operand gives ``C @ real + 1j * C @ imag``. Its
        ``input_shape`` and ``output_shape`` attributes are the (channel, *spatial) shapes of one sample.

    Raises
    ------
    TypeError
        Complex or non-numeric weight, non-integer geometry, an ``input_shape`` that is no sequence.
    ValueError
        Inconsistent shapes or geometry, or one sample's input or output too large for this machine's memory
        (refused before anything is allocated).

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> from scipy.sparse.linalg import lsqr
    >>> C = fd.linear_operator(np.array([[[1.0, 2.0]]]), (3,))
    >>> C.shape, C @ np.array([1.0, 1.0, 1.0]), C.T @ np.array([1.0, 1.0])
    ((2, 3), array([3., 3.]), array([1., 3., 2.]))
    >>> x = lsqr(C, np.array([5.0, 8.0]), atol=1e-12, btol=1e-12)[0]    # the least-norm solution
    >>> bool(np.allclose(C @ x, [5.0, 8.0]))
    True
    """
    return ConvLinearOperator(weight, input_shape, stride, padding, dilation, groups)


class ConvLinearOperator(LinearOperator):
    """The operator :func:`fastdeconv.linear_operator` returns (see there); thread-safe, picklable.

    Attributes
    ----------
    weight : numpy.ndarray
        The operator's copy of the weight, in its dtype (read-only).
    input_shape : tuple of int
        (C_in, *input_spatial): ``v.reshape(input_shape)`` is the sample a column ``v`` stands for.
    output_shape : tuple of int
        (C_out, *out_spatial): ``(C @ v).reshape(output_shape)`` is its convolution.
    """

    def __init__(self, weight, input_shape, stride=1, padding=0, dilation=1, groups=1):
        weight, plan = sample_plan(weight, input_shape, stride, padding, dilation, groups, check_output=True)
        rank = plan.rank
        axes = plan.axes[geo.MAX_RANK - rank:]
        self.input_shape = (plan.c_in,) + tuple(a.size_in for a in axes)
        self.output_shape = plan.out_shape
        geo.check_memory(self.input_shape, plan.dtype, "the input of one sample")
        # the geometry as plain ints and (before, after) pairs: every call takes conv's and conv_transpose's
        # exact-key paths, and "same" becomes the pairs PyTorch's conv pads with
        kernel = tuple(a.kernel for a in axes)
        self._stride = tuple(a.stride for a in axes)
        self._dilation = tuple(a.dilation for a in axes)
        self._pads = tuple((int(b), int(a)) for b, a in conv_pads(padding, kernel, self._stride, self._dilation))
        self._groups = plan.groups
        # C.T maps (C_out, *out) back onto exactly (C_in, *input_shape): conv floors the last partial stride,
        # the transposed convolution restores those trailing samples as output padding (< stride)
        output_padding = tuple(i - ((o - 1) * a.stride + a.span - b - e)
                               for i, o, a, (b, e) in zip(self.input_shape[1:], self.output_shape[1:], axes,
                                                          self._pads))
        adjoint = geo.make_plan(self.output_shape, weight.shape, plan.dtype, plan.dtype, self._stride, self._pads,
                                output_padding, self._groups, self._dilation)
        if adjoint.out_shape != self.input_shape:  # pragma: no cover - the arithmetic above guarantees it
            raise AssertionError(f"adjoint of shape {adjoint.out_shape}, expected {self.input_shape}")
        self._weight = np.array(weight, dtype=plan.dtype, order="C")  # own writeable copy: kernels take it as is
        self.weight = self._weight.view()
        self.weight.flags.writeable = False
        self._transposed = ConvTranspose(self._weight, stride=self._stride, padding=self._pads,
                                         output_padding=output_padding, groups=self._groups,
                                         dilation=self._dilation)
        size_out, size_in = _prod(self.output_shape), _prod(self.input_shape)
        super().__init__(plan.dtype, (size_out, size_in))

    def __repr__(self) -> str:
        m, n = self.shape
        return (f"<{m}x{n} fastdeconv conv LinearOperator with dtype={self.dtype}: {self.input_shape} -> "
                f"{self.output_shape}, weight {self._weight.shape}, stride={self._stride}, padding={self._pads}, "
                f"dilation={self._dilation}, groups={self._groups}>")

    # scipy's matvec/rmatvec/matmat/rmatmat have checked the operand's shape ((N,), (N, 1) or (N, k))
    def _matvec(self, v):
        return self._matmat(np.asarray(v).reshape(-1, 1))

    def _rmatvec(self, u):
        return self._rmatmat(np.asarray(u).reshape(-1, 1))

    def _matmat(self, v):
        return self._apply(v, self.input_shape, self.output_shape, self._forward)

    def _rmatmat(self, u):
        return self._apply(u, self.output_shape, self.input_shape, self._transposed)

    def _adjoint(self):
        return _Adjoint(self)

    _transpose = _adjoint  # a real operator: C.T is C.H

    def _forward(self, x):
        return conv(x, self._weight, stride=self._stride, padding=self._pads, dilation=self._dilation,
                    groups=self._groups)

    def _apply(self, columns, shape_in, shape_out, run):
        """``run`` on the k columns of an (n, k) array as one batch of k samples of ``shape_in``."""
        columns = np.asarray(columns)  # a np.matrix operand: its data (scipy restores the type)
        if columns.ndim == 1:
            columns = columns.reshape(-1, 1)
        if columns.dtype.kind == "c":  # C is real: C (a + ib) = C a + i C b
            real = self._apply(columns.real, shape_in, shape_out, run)
            return real + 1j * self._apply(columns.imag, shape_in, shape_out, run)
        geo.check_numeric(columns.dtype, "the operand")
        k = columns.shape[1]
        if k == 0 or _prod(shape_in) == 0 or _prod(shape_out) == 0:  # nothing to compute: zeros of the shape
            return np.zeros((_prod(shape_out), k), geo.result_dtype(columns.dtype, self.dtype))
        batch = columns.T.reshape((k,) + shape_in)  # (k, C, *spatial): a copy only when not already so laid out
        return run(batch).reshape(k, -1).T


class _Adjoint(LinearOperator):
    """``C.T`` (= ``C.H``) of a :class:`ConvLinearOperator`: its matvec is C's rmatvec and the other way."""

    def __init__(self, op: ConvLinearOperator):
        self.op = op
        super().__init__(op.dtype, (op.shape[1], op.shape[0]))

    def _matvec(self, u):
        return self.op._rmatvec(u)

    def _rmatvec(self, v):
        return self.op._matvec(v)

    def _matmat(self, u):
        return self.op._rmatmat(u)

    def _rmatmat(self, v):
        return self.op._matmat(v)

    def _adjoint(self):
        return self.op

    _transpose = _adjoint


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
