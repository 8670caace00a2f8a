"""fastdeconv: fast CPU transposed convolution with Numba (scatter, gather and zero-fill forms)."""

from . import compat as compat
from ._api import conv_transpose, zero_fill
from ._cost import Choice, plan
from ._forward import conv
from ._threads import get_num_threads, set_num_threads
from .filters import bilinear_kernel, upsample_bilinear
from .grad import conv_transpose_backward
from .matrix import conv_matrix

__all__ = ["conv_transpose", "zero_fill", "conv", "conv_matrix", "conv_transpose_backward", "bilinear_kernel",
           "upsample_bilinear", "get_num_threads", "set_num_threads", "plan", "Choice"]
__version__ = "0.1.0"
