"""fastdeconv: fast CPU transposed convolution with Numba (scatter, gather and zero-fill forms)."""

from ._api import conv_transpose, zero_fill
from ._threads import get_num_threads, set_num_threads

__all__ = ["conv_transpose", "zero_fill", "get_num_threads", "set_num_threads"]
__version__ = "0.1.0"
