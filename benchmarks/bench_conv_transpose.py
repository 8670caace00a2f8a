"""asv benchmarks of fastdeconv.conv_transpose on the project's workloads (``fastdeconv/workloads.json``).

- ``TimeConvTranspose.time_conv_transpose``: every method x workload (float32, PyTorch geometry).
- ``TimeOperator.time_operator``: a kept ``fastdeconv.ConvTranspose`` on every workload, fresh output or ``out=``.
- ``PeakMem.peakmem_conv_transpose``: the process's peak RSS around one call (inputs included).
- ``ExtraMemory.track_extra_memory``: (peak RSS - baseline - output) / output bytes in a fresh process
  (``memory_probe.py``); the target is <= 1 for scatter, gather and auto.
- ``FirstCall.track_import_and_first_call``: seconds for ``import fastdeconv`` + the first call in a fresh
  interpreter with a warm numba cache (``bench_first_use.py`` has the cold and after-warmup first calls of
  every built-in workload, and this machine's roofline).
- ``timeraw_import``: ``import fastdeconv`` alone, in a fresh interpreter.

zerofill multiplies ``stride**rank`` times as many terms (the inserted zeros) as the direct definition; on
the channel-heavy layers that is 17 GFLOP a call, tens of seconds, so those combinations are skipped
(``NotImplementedError`` in ``setup``, asv's way of saying "not applicable").
"""

import subprocess
import sys
from pathlib import Path

import numpy as np

import fastdeconv as fd

try:
    from .memory_probe import built_in_workloads, probe
except ImportError:  # run as a plain script directory
    from memory_probe import built_in_workloads, probe

HERE = Path(__file__).resolve().parent
WORKLOADS = built_in_workloads()
NAMES = list(WORKLOADS)
METHODS = ["scatter", "gather", "zerofill", "auto"]
# a zerofill call executing more than this (about 10 s at the ~1 GFLOP/s it reaches) is skipped
MAX_ZEROFILL_GFLOP = 8.0
MEMORY_WORKLOADS = ["unet_up", "seed003_img", "big_1ch"]  # one subprocess each: keep the list short


def executed_gflop(w, method):
    """Floating-point operations a call executes: the direct definition, times stride**rank for zerofill."""
    rank = len(w["spatial"])
    flops = 2 * w["N"] * w["C_in"] * (w["C_out"] // w["groups"]) * w["kernel"] ** rank
    for size in w["spatial"]:
        flops *= size
    return flops * (w["stride"] ** rank if method == "zerofill" else 1) / 1e9


def skip_if_too_slow(name, method):
    gflop = executed_gflop(WORKLOADS[name], method)
    if method == "zerofill" and gflop > MAX_ZEROFILL_GFLOP:
        raise NotImplementedError(f"zerofill on {name} executes {gflop:.0f} GFLOP a call (> {MAX_ZEROFILL_GFLOP})")


def arrays(w, seed=0):
    rng = np.random.default_rng(seed)
    rank = len(w["spatial"])
    x = rng.standard_normal((w["N"], w["C_in"]) + tuple(w["spatial"]), dtype=np.float32)
    weight = rng.standard_normal((w["C_in"], w["C_out"] // w["groups"]) + (w["kernel"],) * rank, dtype=np.float32)
    return x, weight


def kwargs(w, method):
    return {"stride": w["stride"], "padding": w["padding"], "output_padding": w["output_padding"],
            "groups": w["groups"], "dilation": w["dilation"], "method": method}


def warm_up(x, weight, kw):
    """Calls made before anything is measured: one on a small slice with the same channels and kernel (loads
    the compiled kernels from the numba cache, starts the thread pool), then, except for the zerofill
    baseline (no calibration, and slow), one at full size: that is where a first call of these shapes may
    run its one-time calibration, which the measured calls must not include."""
    small = x[(slice(0, 1), slice(None)) + tuple(slice(0, 8) for _ in x.shape[2:])]
    fd.conv_transpose(small, weight, **kw)
    if kw.get("method") != "zerofill":
        fd.conv_transpose(x, weight, **kw)


class _EveryMethodAndWorkload:
    """Set-up shared by the per-call suites: inputs of the workload, its keyword arguments, a warm-up."""

    params = (NAMES, METHODS)
    param_names = ["workload", "method"]
    timeout = 300

    def setup(self, name, method):
        skip_if_too_slow(name, method)
        w = WORKLOADS[name]
        self.x, self.weight = arrays(w)
        self.kw = kwargs(w, method)
        warm_up(self.x, self.weight, self.kw)


class TimeConvTranspose(_EveryMethodAndWorkload):
    """Seconds per call, every method on every workload."""

    def time_conv_transpose(self, name, method):
        fd.conv_transpose(self.x, self.weight, **self.kw)


class TimeOperator:
    """Seconds per call of a kept ``fastdeconv.ConvTranspose`` (weight packed once, plan kept), beside
    ``TimeConvTranspose``'s functional call; ``out=`` into a preallocated array too."""

    params = (NAMES, ["auto"], [False, True])
    param_names = ["workload", "method", "out"]
    timeout = 300

    def setup(self, name, method, out):
        w = WORKLOADS[name]
        self.x, weight = arrays(w)
        kw = kwargs(w, method)
        kw.pop("method")
        self.op = fd.ConvTranspose(weight, method=method, **kw)
        self.y = self.op(self.x)  # packs the weight, plans (and calibrates) this shape
        self.op(self.x, out=self.y)
        self.out = self.y if out else None

    def time_operator(self, name, method, out):
        self.op(self.x, out=self.out)


class PeakMem(_EveryMethodAndWorkload):
    """Peak resident memory of the benchmark process around one call (inputs and interpreter included)."""

    def peakmem_conv_transpose(self, name, method):
        fd.conv_transpose(self.x, self.weight, **self.kw)


class ExtraMemory:
    """Extra memory of a call beyond its output, as a multiple of the output size (fresh subprocess)."""

    params = (MEMORY_WORKLOADS, ["scatter", "gather", "auto"])
    param_names = ["workload", "method"]
    timeout = 600
    unit = "extra bytes / output bytes"

    def track_extra_memory(self, name, method):
        return probe(WORKLOADS[name], method)["ratio"]


_FIRST_CALL = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import fastdeconv as fd
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal((1, 4, 3, 3), dtype=np.float32)
w = np.random.default_rng(1).standard_normal((4, 2, 3, 3), dtype=np.float32)
fd.conv_transpose(x, w, stride=2, padding=1, output_padding=1, method=sys.argv[1])
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def first_call(method, env=None):
    """(import seconds, first-call seconds) of a fresh interpreter on seed 000's geometry."""
    proc = subprocess.run([sys.executable, "-c", _FIRST_CALL, method], capture_output=True, text=True,
                          env=env, timeout=900, check=True)
    imp, call = map(float, proc.stdout.split()[-2:])
    return imp, call


class FirstCall:
    """``import fastdeconv`` plus the first call, in a fresh interpreter with a warm numba cache."""

    params = METHODS
    param_names = ["method"]
    timeout = 600
    unit = "seconds"

    def setup(self, method):
        first_call(method)  # makes sure the cache is warm

    def track_import_and_first_call(self, method):
        return sum(first_call(method))


def timeraw_import():
    """``import fastdeconv`` in a fresh interpreter."""
    return "import fastdeconv"
