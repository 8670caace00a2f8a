"""fastdeconv: fast CPU transposed convolution with Numba (scatter, gather and zero-fill forms)."""

from ._api import conv_transpose, zero_fill

__all__ = ["conv_transpose", "zero_fill"]
__version__ = "0.1.0"
