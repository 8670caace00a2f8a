"""fastdeconv: fast CPU transposed convolution with Numba (scatter, gather and zero-fill forms).

The public names load on first use (PEP 562): importing numba is most of fastdeconv's start-up, so
``import fastdeconv`` stays cheap (it loads no tool either: ``fastdeconv.tools`` sits above the library) and the
first call pays it.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers read the name the same way)

__version__ = "0.1.0"
__all__ = ["conv_transpose", "zero_fill", "conv", "conv_matrix", "conv_transpose_backward", "bilinear_kernel",
           "upsample_bilinear", "get_num_threads", "set_num_threads", "plan", "Choice", "ConvTranspose",
           "linear_operator", "variants", "set_profile", "machine", "fold_batchnorm", "clear_caches"]

# public name -> the module that defines it (None: the name is the submodule itself)
_HOME = {"conv_transpose": "_api", "zero_fill": "_api", "plan": "_forward", "Choice": "_cost", "conv": "_forward",
         "get_num_threads": "_threads", "set_num_threads": "_threads", "bilinear_kernel": "filters",
         "upsample_bilinear": "filters", "conv_transpose_backward": "grad", "conv_matrix": "matrix", "compat": None,
         "ConvTranspose": "_operator", "calibration": None, "linear_operator": "linop", "variants": None,
         "set_profile": "machine", "machine": None, "fold_batchnorm": "_operator",
         "clear_caches": "_caches"}


def __getattr__(name: str):
    home = _HOME.get(name, "")
    if home == "":
        raise AttributeError(f"module 'fastdeconv' has no attribute {name!r}")
    from ._interrupts import deferred

    with deferred():  # an import cut by Ctrl-C would leave numba and llvmlite half-initialised (and a lock held)
        module = importlib.import_module(f".{home or name}", __name__)
    value = module if home is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


if TYPE_CHECKING:  # what static analysers and IDEs see
    from . import compat as compat
    from . import machine as machine
    from . import variants as variants
    from ._api import conv_transpose, zero_fill
    from ._caches import clear_caches
    from ._cost import Choice, plan
    from ._forward import conv
    from ._operator import ConvTranspose, fold_batchnorm
    from ._threads import get_num_threads, set_num_threads
    from .filters import bilinear_kernel, upsample_bilinear
    from .grad import conv_transpose_backward
    from .linop import linear_operator
    from .machine import set_profile
    from .matrix import conv_matrix
