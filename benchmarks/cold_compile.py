"""Cold first calls: each built-in workload's first call in a fresh process with empty numba and fastdeconv caches.

For every workload of ``fastdeconv/workloads.json`` (float32, PyTorch geometry) this starts a fresh interpreter
with ``NUMBA_CACHE_DIR`` and ``FASTDECONV_CACHE_DIR`` pointing at new empty directories and reports:

- ``import``: seconds for ``import fastdeconv._api`` (numba included);
- ``first``: seconds of the first ``conv_transpose`` call (compilation, calibration and the call itself);
- the variant the call ran;
- per numba dispatcher compiled during the call, its compile time (numba's ``numba:compile`` events; a callee
  compiled from inside its caller's compilation is listed nested under it, its time is part of the caller's);
- the 1-minute load average before and after the child ran (the machine may be shared: read the figures with it).

Usage::

    python benchmarks/cold_compile.py [--threads 2] [--json out.json] [workload ...]

The issue's target is ``first`` <= 5 s on every workload on a 2-core machine with 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOADS_FILE = Path(__file__).resolve().parents[1] / "src" / "fastdeconv" / "workloads.json"

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import fastdeconv._api as api
import fastdeconv._geometry as geo
t_import = time.perf_counter() - t0

from numba.core import event

w = json.loads(sys.argv[1])
compiles = []  # (depth, name, signature, seconds, start offset)
stack = []

class Listener(event.Listener):
    def on_start(self, ev):
        stack.append(time.perf_counter())
    def on_end(self, ev):
        start = stack.pop()
        d = ev.data.get("dispatcher")
        name = getattr(getattr(d, "py_func", None), "__qualname__", repr(d))
        module = getattr(getattr(d, "py_func", None), "__module__", "")
        args = ev.data.get("args")
        compiles.append((len(stack), module.rsplit(".", 1)[-1] + "." + name, str(args),
                         time.perf_counter() - start, start - t_call0))

rank = len(w["spatial"])
rng = np.random.default_rng(0)
x = rng.standard_normal((w["N"], w["C_in"], *w["spatial"]), dtype=np.float32)
wt = rng.standard_normal((w["C_in"], w["C_out"] // w["groups"]) + (w["kernel"],) * rank, dtype=np.float32)
kw = dict(stride=w["stride"], padding=w["padding"], output_padding=w["output_padding"], groups=w["groups"],
          dilation=w["dilation"])
listener = Listener()
event.register("numba:compile", listener)
t_call0 = time.perf_counter()
api.conv_transpose(x, wt, **kw)
t_first = time.perf_counter() - t_call0
t1 = time.perf_counter()
api.conv_transpose(x, wt, **kw)
t_second = time.perf_counter() - t1
plan = geo.make_plan(x.shape, wt.shape, x.dtype, wt.dtype, w["stride"], w["padding"], w["output_padding"],
                     w["groups"], w["dilation"], None, "auto", None, None)
variant = api._prepared(plan).variant
print(json.dumps({"import": t_import, "first": t_first, "second": t_second, "variant": variant,
                  "compiles": compiles}))
"""


def load() -> float:
    return os.getloadavg()[0]


def measure(w: dict, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as numba_cache, tempfile.TemporaryDirectory() as fd_cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=numba_cache, FASTDECONV_CACHE_DIR=fd_cache,
                   NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        before = load()
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(w)], env=env, capture_output=True,
                              text=True, check=False)
        after = load()
    if proc.returncode != 0:
        raise RuntimeError(f"{w['name']}: child failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(name=w["name"], load_before=before, load_after=after)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="workloads (default: all built-in ones)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--detail", action="store_true", help="list every compile, nested ones included")
    args = parser.parse_args(argv)
    with open(WORKLOADS_FILE, encoding="utf-8") as fh:
        workloads = {w["name"]: w for w in json.load(fh)["workloads"]}
    names = args.names or list(workloads)
    unknown = [n for n in names if n not in workloads]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)}; known: {', '.join(workloads)}")
    results = []
    print(f"{'workload':<16}{'import s':>9}{'first s':>9}{'2nd s':>8}  {'variant':<18}{'load':>11}  compiled")
    for name in names:
        r = measure(workloads[name], args.threads)
        results.append(r)
        top = [c for c in r["compiles"] if c[0] == 0 or args.detail]
        listed = ", ".join(f"{'  ' * c[0]}{c[1]} {c[3]:.2f}" for c in top)
        print(f"{name:<16}{r['import']:>9.2f}{r['first']:>9.2f}{r['second']:>8.3f}  {r['variant']:<18}"
              f"{r['load_before']:>5.2f}/{r['load_after']:<5.2f}  {listed}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
