"""asv benchmarks of what a user meets first, and of the machine the results come from.

- ``ColdCompile.track_cold_first_call``: seconds of the first ``conv_transpose`` call of each built-in workload
  (``src/fastdeconv/workloads.json``) in a fresh interpreter with an empty numba cache and an empty calibration
  cache: the compilation of the kernels the chosen variant needs, plus the one-time calibration.
- ``WarmFirstCall.track_first_call_after_warmup``: the same after ``python -m fastdeconv warmup`` filled the
  numba cache (``setup_cache``: once per benchmark run); ``Warmup.track_warmup_seconds``: the warm-up itself.
- ``Roofline.track_peak_gflops`` / ``track_stream_gbs``: this machine's fp32 GEMM peak and streaming copy
  bandwidth at the thread count in use (what ``compare`` divides by for "% roof"), recorded with the results
  so that timings from different machines can be read against their own roofs.

The children are the ones of ``benchmarks/first_call.py``.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from first_call import _run_child  # noqa: E402

from fastdeconv.tools import workloads as wls  # noqa: E402

NAMES = list(wls.builtin_workloads())


class ColdCompile:
    """First call of each built-in workload with an empty numba cache (compilation included)."""

    params = NAMES
    param_names = ["workload"]
    timeout = 1800
    unit = "seconds"
    number = 1
    repeat = 1

    def track_cold_first_call(self, name):
        with tempfile.TemporaryDirectory() as numba_cache, tempfile.TemporaryDirectory() as calib:
            return _run_child(name, numba_cache, calib)["first_call"]


def _warmup(cache):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fastdeconv", "warmup", "--no-progress"], check=True, timeout=3600,
                   env={**os.environ, "NUMBA_CACHE_DIR": cache}, capture_output=True)
    return time.perf_counter() - t0


class Warmup:
    """``python -m fastdeconv warmup`` (float32 and float64, every core) into an empty numba cache."""

    timeout = 3600
    unit = "seconds"
    number = 1
    repeat = 1

    def track_warmup_seconds(self):
        with tempfile.TemporaryDirectory() as cache:
            return _warmup(cache)


class WarmFirstCall:
    """First call of each built-in workload in a fresh process after ``python -m fastdeconv warmup``."""

    params = NAMES
    param_names = ["workload"]
    timeout = 3600
    unit = "seconds"

    def setup_cache(self):
        cache = tempfile.mkdtemp(prefix="fd-asv-warm-")
        _warmup(cache)
        return cache

    def track_first_call_after_warmup(self, cache, name):
        with tempfile.TemporaryDirectory() as calib:
            return _run_child(name, cache, calib)["first_call"]


class Roofline:
    """This machine's roofs at the thread count in use (measured once per CPU and thread count, cached)."""

    def setup(self):
        from fastdeconv.tools.roofline import roofline

        self.roof = roofline()

    def track_peak_gflops(self):
        return self.roof["peak_gflops"]

    track_peak_gflops.unit = "GFLOP/s"

    def track_stream_gbs(self):
        return self.roof["stream_gbs"]

    track_stream_gbs.unit = "GB/s"
