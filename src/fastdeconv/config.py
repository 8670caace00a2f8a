"""Numba flags shared by every kernel (one place to change them, as in stumpy's ``config.py``).

``FASTDECONV_NO_CACHE=1`` turns the on-disk compile cache off (useful when debugging kernels).
``fastmath`` stays off: every numba kernel adds each output element's terms in a fixed order, so its results do
not depend on the thread count or the tiling; reassociation or FMA contraction would break that. (The BLAS
products of the GEMM variants are another matter: their chunks follow numba's pool size, see
``docs/variants.md``, "Threads, memory and reproducibility".)
No kernel is ``parallel=True``: the parallel ones run ranges of their tasks on fastdeconv's own worker pool
(``_tasks.py``), never on numba's threading layer, which is not fork-safe with GNU OpenMP and not
thread-safe as ``workqueue``.
"""

import os

NUMBA_CACHE = os.environ.get("FASTDECONV_NO_CACHE", "0") != "1"
NJIT_FLAGS = {"cache": NUMBA_CACHE, "nogil": True, "error_model": "numpy"}
