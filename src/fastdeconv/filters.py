"""Bilinear upsampling as a transposed convolution (the FCN initialisation of learned upsampling layers).

A factor-``f`` upsampling kernel has size ``K = 2 f - f % 2`` and the values of the FCN reference code's
``upsample_filt(K)``: ``(1 - |i - c| / F) * (1 - |j - c| / F)`` with ``F = (K + 1) // 2`` and
``c = F - 1`` (odd K) or ``F - 0.5`` (even K). Run with stride f and padding ``(K - f) // 2`` it is
bilinear interpolation at pixel centres (``align_corners=False``), away from the border.

The FCN code builds a dense (K, K, C, C) weight with the kernel on the channel diagonal; here every channel gets
its own copy and the transposed convolution is depthwise (groups = channels), which skips the C - 1 zero
weights of every output channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _geometry as geo
from ._api import as_array, conv_transpose


def kernel_size(factor: int) -> int:
    """The FCN code's ``get_kernel_size``: ``2 * factor - factor % 2``."""
    return 2 * factor - factor % 2


def _profile(factor: int) -> np.ndarray:
    """The 1-D interpolation weights of length ``kernel_size(factor)`` (float64)."""
    size = kernel_size(factor)
    half = (size + 1) // 2
    center = half - 1 if size % 2 == 1 else half - 0.5
    return 1 - np.abs(np.arange(size) - center) / half


def _factor(value, name: str = "factor") -> int:
    f = geo.as_int(value, name)
    if f < 1:
        raise ValueError(f"{name} must be >= 1, got {f}")
    return f


def bilinear_kernel(factor: int, channels: int = 1, dtype=np.float32) -> np.ndarray:
    """Depthwise bilinear upsampling weight, one (K, K) copy of the FCN ``upsample_filt(K)`` per channel.

    Parameters
    ----------
    factor : int
        Upsampling factor (>= 1); the kernel size is ``K = 2 * factor - factor % 2``.
    channels : int
        Number of channels (>= 1): the weight of a transposed convolution with ``groups=channels``.
    dtype : numpy dtype
        float32 (default) or float64.

    Returns
    -------
    numpy.ndarray
        Shape (channels, 1, K, K), the ``conv_transpose`` layout (C_in, C_out // groups, kH, kW).

    Raises
    ------
    TypeError
        Non-integer factor or channels, a dtype other than float32/float64.
    ValueError
        factor or channels < 1, a weight too large for memory.

    Examples
    --------
    >>> import fastdeconv as fd
    >>> fd.bilinear_kernel(2)[0, 0]
    array([[0.0625, 0.1875, 0.1875, 0.0625],
           [0.1875, 0.5625, 0.5625, 0.1875],
           [0.1875, 0.5625, 0.5625, 0.1875],
           [0.0625, 0.1875, 0.1875, 0.0625]], dtype=float32)
    """
    factor = _factor(factor)
    channels = geo.as_int(channels, "channels")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    size = kernel_size(factor)
    geo.check_memory((channels, 1, size, size), dtype, "the bilinear kernel")
    p = _profile(factor)
    return np.broadcast_to(np.outer(p, p).astype(dtype), (channels, 1, size, size)).copy()


def upsample_bilinear(x, factor: int | Sequence[int]) -> np.ndarray:
    """Upsample images ×factor with the bilinear kernel: a depthwise ``conv_transpose``.

    Stride ``factor`` and padding ``(K - factor) // 2`` make every spatial axis exactly ``factor`` times longer;
    a constant image stays constant except within ``factor // 2`` pixels of the border (where the kernel
    reaches outside the image). Inside, the result equals bilinear interpolation with pixel-centre alignment
    (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``).

    Parameters
    ----------
    x : array_like
        Images (N, C, H, W) or (C, H, W).
    factor : int or (int, int)
        Upsampling factor (>= 1), for both axes or per axis (height, width).

    Returns
    -------
    numpy.ndarray
        (N, C, H * fh, W * fw) or (C, H * fh, W * fw); float32 for float32 x, float64 otherwise.

    Raises
    ------
    TypeError
        Complex or non-numeric x, non-integer factor.
    ValueError
        x not 3-D or 4-D, factor < 1, an output too large for memory.

    Examples
    --------
    >>> import numpy as np, fastdeconv as fd
    >>> fd.upsample_bilinear(np.array([[[0.0, 4.0]]]), (1, 2))
    array([[[0., 1., 3., 3.]]])
    """
    x = as_array(x, "x")
    geo.check_numeric(x.dtype, "x")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be images (N, C, H, W) or (C, H, W), got x.ndim = {x.ndim}")
    factors = tuple(_factor(f) for f in geo.per_axis(factor, 2, "factor"))
    dtype = np.dtype(np.float32) if geo.is_float32(x.dtype) else np.dtype(np.float64)
    channels = x.shape[-3]
    sizes = tuple(kernel_size(f) for f in factors)
    shape = x.shape[:-2] + tuple(n * f for n, f in zip(x.shape[-2:], factors))
    geo.check_memory(shape, dtype, "the output")
    geo.check_memory((channels, 1) + sizes, dtype, "the bilinear kernel")
    if channels == 0:  # no channel to convolve: an empty result of the right shape
        return np.empty(shape, dtype)
    weight = np.empty((channels, 1) + sizes, dtype)
    weight[...] = np.outer(_profile(factors[0]), _profile(factors[1]))
    padding = tuple((k - f) // 2 for k, f in zip(sizes, factors))
    return conv_transpose(x, weight, stride=factors, padding=padding, groups=channels)
