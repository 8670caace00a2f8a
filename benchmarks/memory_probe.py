"""Extra memory of one conv_transpose call, measured as peak RSS in a fresh subprocess.

Usage (from the repository root)::

    python benchmarks/memory_probe.py                          # every built-in workload, every method
    python benchmarks/memory_probe.py --workload unet_up big_1ch --methods scatter,gather,auto --out

For each (workload, method) a child process creates the inputs, makes one warm-up call (numba cache, thread
pool, BLAS buffers), frees its result, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``),
reads the resident size (baseline), makes the measured call and reads the peak (``VmHWM``). The report is
``extra = peak - baseline - output bytes`` (with ``--out`` the output is preallocated, so ``extra = peak -
baseline``) and ``extra / output bytes``: the target is <= 1 for scatter, gather and auto; zerofill needs
its zero-filled, padded input buffer (``N * C_in * prod(out + span - 1)`` elements) on top.
glibc's adaptive mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so that freed large blocks go back to
the system instead of being reused unseen. Linux only.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ("scatter", "gather", "zerofill", "auto")
# below this, RSS differences are page and allocator granularity, not a buffer
RESOLUTION = 1 << 20

_CHILD = r"""
import gc, json, sys
import numpy as np
import fastdeconv as fd

spec = json.loads(sys.argv[1])
w = spec["workload"]
rank = len(w["spatial"])
rng = np.random.default_rng(0)
x = rng.standard_normal((w["N"], w["C_in"]) + tuple(w["spatial"]), dtype=np.float32)
wt = rng.standard_normal((w["C_in"], w["C_out"] // w["groups"]) + (w["kernel"],) * rank, dtype=np.float32)
kw = dict(stride=w["stride"], padding=w["padding"], output_padding=w["output_padding"], groups=w["groups"],
          dilation=w["dilation"], method=spec["method"])


def status():
    values = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


y = fd.conv_transpose(x, wt, **kw)  # warm-up
out_bytes = y.nbytes
out = None
if spec["use_out"]:
    out = np.empty_like(y)
    out.fill(0.0)  # resident before the baseline
del y
gc.collect()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset VmHWM to the current RSS
base = status()["VmRSS"]
y = fd.conv_transpose(x, wt, out=out, **kw)
peak = status()["VmHWM"]
print(json.dumps({"baseline": base, "peak": peak, "output_bytes": out_bytes}))
"""


def built_in_workloads() -> dict[str, dict]:
    """The package's workloads (``fastdeconv/workloads.json``, package data: the one list) by name, in order."""
    text = importlib.resources.files("fastdeconv").joinpath("workloads.json").read_text(encoding="utf-8")
    return {w["name"]: w for w in json.loads(text)["workloads"]}


BUILT_IN = list(built_in_workloads())


def load_workloads() -> dict[str, dict]:
    """The benchmark workloads by name: the package's (``fastdeconv/workloads.json``), then the shapes outside
    it (``benchmarks/unseen_workloads.json``)."""
    out = built_in_workloads()
    with open(HERE / "unseen_workloads.json", encoding="utf-8") as fh:
        out.update({w["name"]: w for w in json.load(fh)["workloads"]})
    return out


def probe(workload: dict, method: str, use_out: bool = False, timeout: float = 600.0) -> dict:
    """Measure one call in a fresh interpreter; return baseline, peak, output bytes, extra and extra/output.

    Parameters
    ----------
    workload : dict
        One entry of ``workloads.json``.
    method : str
        A ``conv_transpose`` method.
    use_out : bool
        Preallocate the output and pass ``out=`` (then the output is not part of the peak).
    timeout : float
        Seconds before the child is abandoned.

    Returns
    -------
    dict
        ``baseline``, ``peak``, ``output_bytes``, ``extra`` (bytes) and ``ratio`` (extra / output bytes).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    spec = json.dumps({"workload": workload, "method": method, "use_out": bool(use_out)})
    proc = subprocess.run([sys.executable, "-c", _CHILD, spec], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe of {workload['name']}/{method} failed:\n{proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["extra"] = r["peak"] - r["baseline"] - (0 if use_out else r["output_bytes"])
    r["ratio"] = r["extra"] / r["output_bytes"]
    return r


def main(argv=None) -> int:
    """Print the extra-memory table; exit status 1 when a scatter/gather/auto call needs > 1x the output
    (and more than ``RESOLUTION`` bytes: tiny outputs are below what RSS can resolve)."""
    workloads = load_workloads()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", nargs="+", default=BUILT_IN, choices=list(workloads), metavar="NAME",
                    help="default: the built-in list; the names of unseen_workloads.json are accepted too")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all four)")
    ap.add_argument("--out", action="store_true", help="also measure with a preallocated out=")
    ap.add_argument("--json", help="write the measurements to this file")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    modes = (False, True) if args.out else (False,)
    mb = 2.0 ** 20
    print(f"{'workload':<16}{'method':<10}{'out=':<6}{'output MB':>10}{'extra MB':>10}{'extra/out':>10}  target")
    rows, worst = [], 0.0
    for name in args.workload:
        for method in methods:
            for use_out in modes:
                r = probe(workloads[name], method, use_out)
                rows.append({"workload": name, "method": method, "use_out": use_out, **r})
                within = r["ratio"] <= 1.0 or r["extra"] < RESOLUTION
                target = ("zero-fill buffer" if method == "zerofill" else
                          "ok" if r["ratio"] <= 1.0 else "ok (< 1 MiB)" if within else "OVER")
                if method != "zerofill" and not within:
                    worst = max(worst, r["ratio"])
                print(f"{name:<16}{method:<10}{'yes' if use_out else 'no':<6}{r['output_bytes'] / mb:>10.1f}"
                      f"{r['extra'] / mb:>10.1f}{r['ratio']:>10.2f}  {target}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 1 if worst > 1.0 else 0


if __name__ == "__main__":
    sys.exit(main())
