"""Numba flags shared by every kernel (one place to change them, as in stumpy's ``config.py``).

``FASTDECONV_NO_CACHE=1`` turns the on-disk compile cache off (useful when debugging kernels).
``fastmath`` stays off: every kernel adds each output element's terms in a fixed order, so results are
bitwise identical across thread counts and tilings; reassociation or FMA contraction would break that.
"""

import os

NUMBA_CACHE = os.environ.get("FASTDECONV_NO_CACHE", "0") != "1"
NJIT_FLAGS = {"cache": NUMBA_CACHE, "nogil": True, "error_model": "numpy"}
PARALLEL_FLAGS = {**NJIT_FLAGS, "parallel": True}

# The GEMM variants alternate BLAS calls and numba kernels on the same cores. OpenMP's default spin-wait after
# a parallel region (numba's "omp" threading layer) steals those cores from the BLAS threads, so that a short
# kernel next to OpenBLAS can take many times its own time on a busy machine. Read by libgomp when numba first
# launches its pool; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
