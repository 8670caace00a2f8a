"""First-call time of every built-in workload in a fresh process: cold (empty numba cache) and after warmup.

    python benchmarks/first_call.py                       # warmup, then the warm table (a few minutes)
    python benchmarks/first_call.py --cold --json fc.json # also each workload from an empty numba cache
    python benchmarks/first_call.py --cold --sets all     # also benchmarks/unseen and channel-rich workloads

fastdeconv's modules are compiled to bytecode first, as an installed copy's are. Each row runs a new interpreter
that imports fastdeconv and makes one ``conv_transpose(method="auto")`` call of the workload (float32; ``--sets``:
the package's ``workloads.json``, or also the benchmarks' unseen and channel-rich sets), so the first call includes
whatever a user's first call pays: importing numba and the package's modules (``import fastdeconv`` itself loads
neither), loading (or compiling) the kernels; ``import`` is numpy's and fastdeconv's import before it. ``--cold``
gives each workload its own empty ``NUMBA_CACHE_DIR`` and cache directory (the coarse machine profile is measured in
that first call); the warm rows share the numba cache and the machine profile that ``python -m fastdeconv warmup``
(timed too) filled and measured. The *floor* is what numba itself costs in a fresh process before any fastdeconv
code runs: importing numpy and numba and the first call of a trivial kernel from numba's cache (numba's first
compile or load imports its registries and scipy.linalg), the median of five interpreters. A cold row lists the
kernels its call compiled with numba's compile time of each (``--detail``: also those compiled from inside another's
compile, whose time is part of the outer one). This is a benchmark script, not a test: the numbers depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import fastdeconv as fd
from fastdeconv.tools import workloads as wls
wl = wls.Workload.from_dict(json.loads(sys.argv[1]))
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x = rng.standard_normal(wl.x_shape, dtype=np.float32)
w = rng.standard_normal(wl.w_shape, dtype=np.float32)
t2 = time.perf_counter()
from numba.core import event  # (numba's import belongs to the first call: ``import fastdeconv`` does not load it)
compiles, stack = [], []  # (nesting depth, module.function, seconds) of every numba compile, in order

class Listener(event.Listener):
    def on_start(self, ev):
        stack.append(time.perf_counter())
    def on_end(self, ev):
        func = getattr(ev.data.get("dispatcher"), "py_func", None)
        name = f"{getattr(func, '__module__', '').rsplit('.', 1)[-1]}.{getattr(func, '__qualname__', '?')}"
        compiles.append((len(stack) - 1, name, time.perf_counter() - stack.pop()))

event.register("numba:compile", Listener())
fd.conv_transpose(x, w, **wl.kwargs())
t3 = time.perf_counter()
fd.conv_transpose(x, w, **wl.kwargs())
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_call": t3 - t2, "second_call": t4 - t3, "compiles": compiles,
                  "variant": fd.plan(wl.x_shape, wl.w_shape, **wl.kwargs()).variant}))
"""


def _cached_kernels(numba_cache: str) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(numba_cache) for f in files if f.endswith(".nbc")}


_FLOOR = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
from numba import njit

@njit(cache=True)
def total(a):
    s = 0.0
    for v in a:
        s += v
    return s

total(np.ones(8))
print(time.perf_counter() - t0)
"""

_HERE = os.path.dirname(os.path.abspath(__file__))
SETS = {"built-in": os.path.join(_HERE, os.pardir, "src", "fastdeconv", "workloads.json"),
        "unseen": os.path.join(_HERE, "unseen_workloads.json"),
        "channel-rich": os.path.join(_HERE, "channel_rich_workloads.json")}


def _workloads(sets: str) -> dict[str, dict]:
    """name -> workload (the workloads.json form) of the chosen sets: "built-in", or "all" three."""
    out = {}
    for name, path in SETS.items():
        if sets == "all" or name == "built-in":
            with open(path, encoding="utf-8") as fh:
                out.update((d["name"], d) for d in json.load(fh)["workloads"])
    return out


def _floor(directory: str, runs: int = 5) -> float:
    """Median seconds of numba's own first-use cost in a fresh interpreter (``_FLOOR``), its kernel cached."""
    script = os.path.join(directory, "floor_probe.py")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(_FLOOR)
    env = {**os.environ, "NUMBA_CACHE_DIR": os.path.join(directory, "numba")}
    subprocess.run([sys.executable, script], env=env, check=True, capture_output=True, timeout=600)  # (compiles)
    times = sorted(float(subprocess.run([sys.executable, script], env=env, check=True, capture_output=True,
                                        text=True, timeout=600).stdout) for _ in range(runs))
    return times[len(times) // 2]


def _bytecode() -> None:
    """Compile fastdeconv's modules to bytecode, as installing a package does (pip writes the ``.pyc`` files): an
    editable checkout run with ``PYTHONDONTWRITEBYTECODE`` (or read-only) would otherwise compile every module's
    source again in each first call timed here, which no installed copy does."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("fastdeconv")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            compileall.compile_dir(location, quiet=1)


def _run_child(workload: dict, numba_cache: str, calib_cache: str) -> dict:
    """One fresh interpreter's first call; ``compiled`` lists the kernels it had to compile (new cache files)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": numba_cache, "FASTDECONV_CACHE_DIR": calib_cache}
    before = _cached_kernels(numba_cache)
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(workload)], capture_output=True, text=True,
                          env=env, timeout=1800)
    if proc.returncode:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise RuntimeError(f"{workload['name']}: {last}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["compiled"] = sorted(os.path.basename(p).split("-")[0] for p in _cached_kernels(numba_cache) - before)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="also time each workload from an empty numba cache")
    parser.add_argument("--no-warm", action="store_true", help="skip warmup and the warm table")
    parser.add_argument("--workload", nargs="+", default=None, help="workloads by name (default: every one of --sets)")
    parser.add_argument("--sets", choices=("built-in", "all"), default="built-in",
                        help="the package's workloads, or also benchmarks/unseen and channel-rich (default built-in)")
    parser.add_argument("--detail", action="store_true",
                        help="in the cold rows, list the kernels compiled inside other kernels' compiles too")
    parser.add_argument("--json", help="write the table to this JSON file")
    args = parser.parse_args(argv)

    known = _workloads(args.sets)
    names = args.workload or list(known)
    result = {"host": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                       "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
              "command": "python benchmarks/first_call.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": {}}
    _bytecode()
    with tempfile.TemporaryDirectory(prefix="fd-first-call-") as tmp:
        if args.cold:
            for name in names:
                numba_cache = tempfile.mkdtemp(dir=tmp)
                row = _run_child(known[name], numba_cache, tempfile.mkdtemp(dir=tmp))
                result["rows"].setdefault(name, {})["cold"] = row
                listed = ", ".join(f"{'  ' * depth}{kernel} {seconds:.2f}" for depth, kernel, seconds
                                   in row["compiles"] if depth == 0 or args.detail)
                print(f"cold  {name:<16} first call {row['first_call']:7.2f} s  ({row['variant']}; import "
                      f"{row['import']:.2f} s, second call {row['second_call'] * 1e3:.1f} ms; compiled: "
                      f"{listed})", flush=True)
        if not args.no_warm:
            numba_cache = tempfile.mkdtemp(dir=tmp)
            warm_cache = tempfile.mkdtemp(dir=tmp)  # the machine profile warmup measures (no tuned decisions)
            env = {**os.environ, "NUMBA_CACHE_DIR": numba_cache, "FASTDECONV_CACHE_DIR": warm_cache}
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fastdeconv", "warmup", "--no-progress"], env=env, check=True,
                           timeout=3600)
            result["warmup_seconds"] = time.perf_counter() - t0
            print(f"warmup (float32, float64): {result['warmup_seconds']:.1f} s", flush=True)
            result["numba_floor"] = _floor(tempfile.mkdtemp(dir=tmp))
            print(f"floor (numpy + numba imported, a trivial cached kernel's first call): "
                  f"{result['numba_floor']:.2f} s", flush=True)
            for name in names:
                row = _run_child(known[name], numba_cache, warm_cache)
                result["rows"].setdefault(name, {})["warm"] = row
                print(f"warm  {name:<16} first call {row['first_call']:7.2f} s, with import "
                      f"{row['import'] + row['first_call']:.2f} s  ({row['variant']}; import "
                      f"{row['import']:.2f} s, second call {row['second_call'] * 1e3:.1f} ms; compiled: "
                      f"{', '.join(row['compiled']) or 'nothing'})", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
