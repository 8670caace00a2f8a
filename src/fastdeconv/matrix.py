"""The forward convolution as a sparse matrix C, and the transposed convolution as its transpose.

For one sample, ``conv(x) == C @ x.ravel()`` and ``conv_transpose(y) == C.T @ y.ravel()`` with the same
``weight`` array and geometry: the transposed convolution is the adjoint of the convolution, which is why
it is called "transposed".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import _geometry as geo
from . import _interrupts
from ._api import as_array, contiguous
from ._forward import ConvPlan, make_conv_plan
from ._geometry import IntOrSeq, Padding
from ._kernels.conv import matrix_entries

if TYPE_CHECKING:  # scipy.sparse is slow to import: loaded on first use
    import scipy.sparse



def sample_plan(weight, input_shape, stride, padding, dilation, groups, check_output: bool = False
                ) -> tuple[np.ndarray, ConvPlan]:
    """Validate the arguments of an operator on one sample of spatial shape ``input_shape`` (``conv_matrix``,
    ``linear_operator``): ``weight`` as an array, and the forward convolution's plan for (C_in, *input_shape).

    ``check_output`` also refuses a dense output of one sample that would not fit in memory.
    """
    weight = as_array(weight, "weight")
    geo.check_numeric(weight.dtype, "weight")
    rank = len(weight.shape) - 2
    if not 1 <= rank <= geo.MAX_RANK:
        raise ValueError(f"weight must have shape (C_out, C_in // groups, *kernel) with 1 to 3 spatial axes; "
                         f"got weight.ndim = {weight.ndim}")
    if isinstance(input_shape, (str, bytes)) or np.ndim(input_shape) != 1:
        raise TypeError(f"input_shape must be a sequence of {rank} ints (the spatial shape of one sample), "
                        f"got {input_shape!r}")
    if len(input_shape) != rank:
        raise ValueError(f"input_shape must hold the {rank} spatial sizes of one sample (no batch or channel "
                         f"axis), got {tuple(input_shape)!r}")
    spatial = geo.per_axis(input_shape, rank, "input_shape", minimum=1)
    groups = geo.as_int(groups, "groups")
    c_in = weight.shape[1] * groups
    plan = make_conv_plan((c_in,) + spatial, weight.shape, weight.dtype, weight.dtype, stride, padding, dilation,
                          groups, check_output=check_output)
    return weight, plan


def conv_matrix(weight, input_shape: Sequence[int], stride: IntOrSeq = 1, padding: Padding = 0,
                dilation: IntOrSeq = 1, groups: int = 1) -> scipy.sparse.csr_array:
    """The matrix C of the forward convolution of one sample, as a sorted scipy.sparse CSR array.

    C has shape (C_out * prod(out_spatial), C_in * prod(input_shape)), rows and columns in C order of
    (channel, *spatial). ``fastdeconv.conv(x, weight, ...) == (C @ x.ravel()).reshape(C_out, *out_spatial)``
    for x of shape (C_in, *input_shape), and ``fastdeconv.conv_transpose(y, weight, ...,
    output_size=input_shape) == (C.T @ y.ravel()).reshape(C_in, *input_shape)``. Every in-bounds tap is a
    stored entry (also when its weight is 0): a 4x4 input and a 3x3 kernel give a 4x16 C with 9
    entries a row. For a batch, ``C @ x.reshape(N, -1).T``.

    Parameters
    ----------
    weight : array_like
        Kernel of shape (C_out, C_in // groups, *kernel), 1 to 3 spatial axes (the ``conv`` layout; the
        same array is the ``conv_transpose`` weight of C.T).
    input_shape : sequence of int
        Spatial shape of one input sample (``weight.ndim - 2`` entries, each >= 1), without channels.
    stride, padding, dilation, groups
        Geometry of the forward convolution, as in :func:`fastdeconv.conv`.

    Returns
    -------
    scipy.sparse.csr_array
        float32 when weight is float32, float64 otherwise.

    Raises
    ------
    TypeError
        Complex or non-numeric weight, non-integer geometry.
    ValueError
        Inconsistent shapes or geometry, or a matrix whose stored entries would not fit in this machine's
        memory (refused before anything is allocated).

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> fd.conv_matrix(np.array([[[1.0, 2.0]]]), (3,)).toarray()
    array([[1., 2., 0.],
           [0., 1., 2.]])
    """
    weight, plan = sample_plan(weight, input_shape, stride, padding, dilation, groups)
    groups, c_in, spatial = plan.groups, plan.c_in, tuple(a.size_in for a in plan.axes)
    dtype = plan.dtype
    axes = plan.axes
    c_in_g = c_in // groups
    n_rows = plan.c_out * math.prod(a.size_out for a in axes)
    n_cols = c_in * math.prod(spatial)
    # the sizes first, in exact integer arithmetic over the taps: nothing as long as an axis is built before the
    # matrix is known to fit (in-bounds (output, tap) pairs per axis; the stored entries are their product)
    pairs = [sum(hi - lo for lo, hi in (_reached(a, tap) for tap in range(a.kernel))) for a in axes]
    nnz = plan.c_out * c_in_g * math.prod(pairs)
    for shape, kind, what in (((nnz,), np.dtype([("value", dtype), ("column", np.int64)]),
                               "the conv matrix's stored entries (a value and a column index each)"),
                              ((2 * (n_rows + 1),), np.dtype(np.int64), "the conv matrix's row offsets")):
        try:
            geo.check_memory(shape, kind, what)
        except ValueError as exc:
            raise ValueError(f"input_shape {spatial[3 - (weight.ndim - 2):]}, weight shape {weight.shape} and this "
                             f"geometry give a "
                             f"{n_rows} x {n_cols} conv matrix too large for memory: {exc}") from None

    # in-bounds taps per output index, per axis (each tap reaches one run of outputs): the row lengths are
    # products of these
    counts = []
    for a in axes:
        count = np.zeros(a.size_out, np.int64)
        for tap in range(a.kernel):
            lo, hi = _reached(a, tap)
            count[lo:hi] += 1
        counts.append(count)
    per_row = c_in_g * (counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :])
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.tile(per_row.ravel(), plan.c_out), out=indptr[1:])
    indices = np.empty(nnz, np.int64)
    data = np.empty(nnz, dtype)
    if nnz:
        w5 = contiguous(weight, dtype).reshape((plan.c_out, c_in_g) + tuple(a.kernel for a in axes))
        matrix_entries(w5, plan.arrays("size_in"), plan.arrays("size_out"), groups, plan.arrays("stride"),
                       plan.arrays("dilation"), plan.arrays("start"), indptr, indices, data)
    sparse = _interrupts.import_module("scipy.sparse")
    matrix = sparse.csr_array((data, indices, indptr), shape=(n_rows, n_cols))
    matrix.has_sorted_indices = True
    return matrix


def _reached(axis: geo.Axis, tap: int) -> tuple[int, int]:
    """The output indices ``[lo, hi)`` (``lo == hi``: none) whose input ``o * stride + tap * dilation - start``
    lies in ``[0, size_in)``, in Python ints: exact whatever the geometry's magnitude."""
    offset = tap * axis.dilation - axis.start
    lo = max(0, -(offset // axis.stride))  # ceil(-offset / stride)
    hi = min(axis.size_out, -((offset - axis.size_in) // axis.stride))  # ceil((size_in - offset) / stride)
    return lo, max(lo, hi)
