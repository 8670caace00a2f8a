"""The compare tool behind ``python -m fastdeconv compare``: every form side by side with other engines.

For each workload (a geometry from ``workloads.json``, or an ad-hoc ``--shape``) and each engine (the
fastdeconv methods, and whichever of torch / onnxruntime / tensorflow / jax are importable) it reports the
median per-call time over interleaved rounds (a drift of the machine's speed hits every engine alike),
GFLOP/s of the direct definition (``2 * MACs``, the same count for every form, so zerofill's multiplications
by inserted zeros do not count as work), the percentage of this machine's roofline
``max(flops / peak, bytes / bandwidth)``, the speedup over the fastest peer, and the largest error against
an independent float64 NumPy reference (:func:`reference`).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import _geometry as geo
from .engines import load_peers, set_threads
from .workloads import (
    Workload,
    make_inputs,
    max_rel_error,
    parse_shape,
    reference,
)

METHODS = ("scatter", "gather", "zerofill", "auto")
PEERS = ("torch", "ort", "tf", "jax")
QUICK_PEERS = ("torch", "ort", "jax")  # tensorflow is left out: importing it alone takes longer than the rest
PEERS_INSTALL = "pip install torch==2.13.0 onnxruntime onnx jax"
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
_PRECOMPILE_BYTES = 64 << 20  # workloads run ahead in the compiling workers only below this size
# relative numba compile time (seconds on one core, roughly) of each variant's kernels: the pool starts with
# the heaviest, so that the workers finish together (the direct variants have a tiny, a serial and a parallel
# kernel each)
_COMPILE_WEIGHT = {"scatter-direct": 7, "gather-plane": 6, "gather-direct": 5, "gather-winograd": 4.5,
                   "gather-gemm-cols": 3, "scatter-gemm-rows": 3, "gather-gemm-rows": 3, "gather-gemm": 3,
                   "zerofill": 2.5, "scatter-gemm": 2}




def _fastdeconv(method: str):
    from .._api import conv_transpose

    def make(x, w, wl):
        kw = wl.kwargs()
        return lambda: conv_transpose(x, w, method=method, **kw)
    return make


def auto_choice(wl: Workload) -> str | None:
    """The form ``method="auto"`` picks for a workload, when the package can say (else None)."""
    import fastdeconv

    try:
        if hasattr(fastdeconv, "plan"):
            chosen = fastdeconv.plan(wl.x_shape, wl.w_shape, **wl.kwargs())
            for attr in ("variant", "method"):
                value = chosen.get(attr) if isinstance(chosen, dict) else getattr(chosen, attr, None)
                if isinstance(value, str):
                    return value
        from .._api import choose_method

        return choose_method(wl.plan)
    except Exception:  # purely informative: never let it break a comparison
        return None


# --------------------------------------------------------------------------- compiling ahead


def variants_needed(wl: Workload, methods: Sequence[str]) -> list[str]:
    """The variants a comparison of ``wl`` will run: each form's pick, and for ``auto`` also the candidates its
    first call may time (the one-time calibration)."""
    from .. import _cost

    needed = []
    for method in methods:
        plan = geo.make_plan(wl.x_shape, wl.w_shape, np.float32, np.float32, wl.stride, wl.padding,
                             wl.output_padding, wl.groups, wl.dilation)
        choice = _cost.choose(plan, geo.make_request(method))
        needed.append(choice.variant)
        if method == "auto":
            try:
                from .. import _calibrate

                needed += list(_calibrate.candidates(plan, choice.estimates))
            except Exception:  # only a hint of what to compile ahead: the call itself stays correct
                pass
    return list(dict.fromkeys(needed))


def _compile_variant(variant: str, specs: list[str]) -> None:
    """Worker: run ``variant`` once on each workload (by ``--shape`` spec), so that numba compiles and caches
    exactly the kernels the comparison will load."""
    from .warmup import forced

    for spec in specs:
        wl = parse_shape(spec)
        x, w = make_inputs(wl)
        forced(variant, x, w, wl.kwargs())


def start_compiling(workloads: Sequence[Workload], methods: Sequence[str], jobs: int | None = None):
    """Compile the variants the comparison needs in worker processes (numba compiles on one core; this uses
    all of them), writing numba's on-disk cache; returns the pool's futures (empty when not worth it).

    Nothing is timed in the workers; when the cache is already warm they only load it.
    """
    jobs = jobs or os.cpu_count() or 1
    by_variant: dict[str, list[str]] = {}
    for wl in sorted(workloads, key=lambda w: w.nbytes()):
        for variant in variants_needed(wl, methods):
            specs = by_variant.setdefault(variant, [])
            if variant != "zerofill" or not specs:  # its kernels do not depend on the shape: the smallest one
                specs.append(wl.describe() + f",name={wl.name}")
    if jobs < 2 or len(by_variant) < 2:
        return None, []
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .warmup import worker_init

    pool = ProcessPoolExecutor(max_workers=min(jobs, len(by_variant)), initializer=worker_init,
                               mp_context=multiprocessing.get_context("spawn"))
    # the variants with the most kernels first, so that the workers finish together
    order = sorted(by_variant, key=lambda v: -_COMPILE_WEIGHT.get(v, 1))
    return pool, [pool.submit(_compile_variant, v, by_variant[v]) for v in order]


def finish_compiling(pool, futures) -> None:
    """Wait for :func:`start_compiling`'s workers (a failure there is not fatal: the call compiles itself); an
    interrupt meanwhile stops them at once (``_interrupts.stop_workers``) and is raised."""
    if pool is None:
        return
    from .. import _interrupts

    try:
        for _ in _interrupts.results_as_completed(futures):
            pass
    except BaseException:
        _interrupts.stop_workers(pool)
        raise
    pool.shutdown()


# --------------------------------------------------------------------------- timing


def measure(fns: dict[str, Callable[[], object]], budget: float, rounds: int) -> dict[str, float]:
    """Median seconds per call of each callable over ``rounds`` interleaved batches.

    Each callable has already been called once (warm-up). A batch repeats a call so that the batch lasts
    about ``budget / rounds`` seconds; a call slower than ``budget`` is timed once, not ``rounds`` times.
    """
    per: dict[str, list[float]] = {name: [] for name in fns}
    batch: dict[str, int] = {}
    for name, f in fns.items():
        t0 = time.perf_counter()
        f()
        one = max(time.perf_counter() - t0, 1e-7)
        batch[name] = max(1, int(budget / rounds / one))
        if one > budget:
            per[name].append(one)
    for _ in range(rounds):
        for name, f in fns.items():
            if per[name] and batch[name] == 1 and per[name][0] > budget:
                continue
            t0 = time.perf_counter()
            for _ in range(batch[name]):
                f()
            per[name].append((time.perf_counter() - t0) / batch[name])
    return {name: statistics.median(v) for name, v in per.items()}


class _Progress:
    """A progress bar on stderr: tqdm, else rich, else plain lines (disabled when not wanted)."""

    def __init__(self, total: int, enabled: bool):
        self.kind, self.total, self.done = "off", total, 0
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self.bar, self.kind = tqdm(total=total, file=sys.stderr, leave=False, unit="engine"), "tqdm"
            return
        except ImportError:
            pass
        try:
            from rich.progress import Progress

            self.bar, self.kind = Progress(transient=True), "rich"
            self.bar.start()
            self.task = self.bar.add_task("compare", total=total)
            return
        except ImportError:
            self.kind = "plain"

    def step(self, label: str) -> None:
        self.done += 1
        if self.kind == "tqdm":
            self.bar.set_description(label)
            self.bar.update(1)
        elif self.kind == "rich":
            self.bar.update(self.task, advance=1, description=label)
        elif self.kind == "plain":
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        if self.kind == "tqdm":
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.kind in ("tqdm", "rich"):
            self.bar.close() if self.kind == "tqdm" else self.bar.stop()


# --------------------------------------------------------------------------- the comparison


@dataclass
class Options:
    """Settings of one comparison (the CLI's flags)."""

    methods: Sequence[str] = METHODS
    peers: Sequence[str] = PEERS
    threads: int | None = None
    budget: float = 1.0  # seconds of timing per engine and workload
    rounds: int = 5
    peak_gflops: float | None = None  # None: this machine's, measured once (``tools.roofline``)
    stream_gbs: float | None = None
    check: bool = True
    progress: bool = True
    roof_source: str = ""  # where the roofs came from (filled in by ``compare``)
    # compile the needed kernels in worker processes first (all cores). Off by default: spawned workers import
    # the caller's ``__main__``, which must then be guarded by ``if __name__ == "__main__"`` (the CLI's is)
    precompile: bool = False


def _with_roofline(opts: Options, threads: int) -> Options:
    """``opts`` with both roofs filled in: the given ones, else this machine's (measured once, then cached)."""
    from dataclasses import replace

    from .roofline import cpu_name, roofline

    peak, stream = opts.peak_gflops, opts.stream_gbs
    if peak is None or stream is None:
        roof = roofline(threads)
        how = "measured earlier, cached" if roof["source"] == "cached" else roof["source"].replace("measured",
                                                                                                "measured now", 1)
        source = f"{roof['cpu']} (roofline {how}"
        peak = roof["peak_gflops"] if peak is None else peak
        stream = roof["stream_gbs"] if stream is None else stream
        source += ", partly overridden)" if opts.peak_gflops or opts.stream_gbs else ")"
    else:
        source = f"{cpu_name()} (roofline given)"
    return replace(opts, peak_gflops=float(peak), stream_gbs=float(stream), roof_source=source)


def roofline_seconds(wl: Workload, peak_gflops: float, stream_gbs: float) -> float:
    """``max(flops / peak, bytes / bandwidth)``: no engine can beat it on this machine."""
    return max(wl.flops / (peak_gflops * 1e9), wl.nbytes() / (stream_gbs * 1e9))


def compare(workloads: Sequence[Workload], opts: Options, write: Callable[[str], None] | None = None) -> dict:
    """Time every method and peer on every workload; print the table as it goes; return the results.

    Parameters
    ----------
    workloads : sequence of Workload
    opts : Options
    write : callable, optional
        Receives each table line (default: print to stdout, above the progress bar).

    Returns
    -------
    dict
        JSON-ready: ``machine`` (threads, peaks, versions), ``skipped_peers``, ``results`` (one entry per
        workload with ``engines`` -> seconds, gflops, roofline_pct, speedup_vs_best_peer, max_rel_err, ok),
        and ``geomean_speedup`` per method over the workloads that had a peer.
    """
    if not workloads:
        raise ValueError("workloads must not be empty")
    bad = [m for m in opts.methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be among {', '.join(METHODS)}; got {', '.join(bad)}")
    bad = [p for p in opts.peers if p not in PEERS]
    if bad:
        raise ValueError(f"peers must be among {', '.join(PEERS)}; got {', '.join(bad)}")
    threads = set_threads(opts.threads)
    opts = _with_roofline(opts, threads)  # first: measuring it needs the cores to itself
    # numba compiles the kernels the comparison needs on every core while the peers load (only workloads small
    # enough to run in a worker)
    small = [wl for wl in workloads if wl.nbytes() < _PRECOMPILE_BYTES]
    pool, futures = start_compiling(small, opts.methods) if opts.precompile else (None, [])
    try:
        makers = {f"fd:{m}": _fastdeconv(m) for m in opts.methods}
        peer_makers, skipped = load_peers(opts.peers, threads)
    except BaseException:  # a Ctrl-C above all: the workers stop now, not after their compilations
        if pool is not None:
            from .. import _interrupts

            _interrupts.stop_workers(pool)
        raise
    finish_compiling(pool, futures)
    makers.update(peer_makers)
    engines = list(makers)
    progress = _Progress(len(workloads) * len(engines), opts.progress and len(workloads) * len(engines) > 1)
    out = write or progress.write
    for name, why in skipped.items():
        out(f"# peer {name} skipped ({why})")
    if any(why.startswith(("ModuleNotFoundError", "ImportError")) for why in skipped.values()):
        out(f"# to time the other engines too: {PEERS_INSTALL}")
    load = _load_average()
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        out(f"# load average {load:.1f} on {os.cpu_count()} cores: other work is running, timings are noisy")
    out(f"# {threads} thread(s) on {opts.roof_source}; roofline = max(flops / {opts.peak_gflops:g} GFLOP/s, "
        f"bytes / {opts.stream_gbs:g} GB/s); speedup = fastest peer time / engine time; "
        f"err = max|y - ref| / max|ref| vs float64 NumPy")
    out(_header())
    results = []
    try:
        for wl in workloads:
            results.append(_compare_one(wl, makers, opts, progress, out))
    finally:
        progress.close()
    geomean = {}
    for m in opts.methods:
        sp = [r["engines"][f"fd:{m}"]["speedup_vs_best_peer"] for r in results
              if r["engines"].get(f"fd:{m}", {}).get("speedup_vs_best_peer")]
        if sp:
            geomean[m] = math.exp(sum(map(math.log, sp)) / len(sp))
    if geomean:
        out("geomean speedup over the fastest peer: " + ", ".join(f"{m} {_ratio(v)}" for m, v in geomean.items())
            + f" ({len(results)} workload(s))")
    wrong = [f"{r['workload']['name']}/{e}" for r in results for e, v in r["engines"].items() if v["ok"] is False]
    failures = [f for f in wrong if "/fd:" in f]  # a peer's disagreement is reported, not fastdeconv's failure
    out("correctness: " + ("not checked (--no-check)" if not opts.check else
                           "all engines agree with the reference" if not wrong else "MISMATCH in " + ", ".join(wrong)))
    return {"machine": _machine(threads, opts), "skipped_peers": skipped, "results": results,
            "geomean_speedup": geomean, "ok": not failures}


def _header() -> str:
    return (f"{'workload':<16}{'engine':<12}{'time ms':>10}{'GFLOP/s':>10}{'% roof':>8}{'speedup':>9}"
            f"{'err':>10}  check")


def _compare_one(wl: Workload, makers: dict, opts: Options, progress: _Progress, out) -> dict:
    x, w = make_inputs(wl)
    ref = reference(x, w, wl) if opts.check else None
    tol = RTOL[np.dtype(np.float32)]
    fns, info = {}, {}
    for name, make in makers.items():
        progress.step(f"{wl.name} {name}")
        entry = {"seconds": None, "gflops": None, "roofline_pct": None, "speedup_vs_best_peer": None,
                 "max_rel_err": None, "ok": None, "note": ""}
        info[name] = entry
        try:
            f = make(x, w, wl)
            if f is None:
                entry["note"] = "unsupported geometry"
                continue
            y = f()  # warm-up: compiles / loads the numba cache, builds the peer's graph
            if ref is not None:
                err = max_rel_error(y, ref)
                entry["max_rel_err"], entry["ok"] = err, bool(err <= tol)
            fns[name] = f
        except Exception as exc:
            entry["note"] = f"error {type(exc).__name__}: {str(exc)[:80]}"
            entry["ok"] = False if name.startswith("fd:") else None
    times = measure(fns, opts.budget, opts.rounds) if fns else {}
    roof = roofline_seconds(wl, opts.peak_gflops, opts.stream_gbs)
    peer_times = [t for name, t in times.items() if not name.startswith("fd:")]
    best_peer = min(peer_times) if peer_times else None
    choice = auto_choice(wl) if "fd:auto" in makers else None
    for name, t in times.items():
        entry = info[name]
        entry.update(seconds=t, gflops=wl.flops / t / 1e9, roofline_pct=100.0 * roof / t,
                     speedup_vs_best_peer=(best_peer / t) if best_peer else None)
    if choice:
        info["fd:auto"]["note"] = (info["fd:auto"]["note"] + f" picks {choice}").strip()
    for name, e in info.items():
        out(_row(wl.name, name, e))
    best = min(peer_times) if peer_times else None
    best_name = next((n for n, t in times.items() if t == best and not n.startswith("fd:")), None)
    return {"workload": wl.to_dict(), "geometry": wl.describe(), "gflop": wl.flops / 1e9, "bytes": wl.nbytes(),
            "roofline_seconds": roof, "best_peer": best_name, "engines": info}


def _row(workload: str, engine: str, e: dict) -> str:
    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"
    check = {True: "ok", False: "FAIL", None: "-"}[e["ok"]]
    line = (f"{workload:<16}{engine:<12}{num(e['seconds'] and e['seconds'] * 1e3, '.3f'):>10}"
            f"{num(e['gflops'], '.1f'):>10}{num(e['roofline_pct'], '.1f'):>8}"
            f"{_ratio(e['speedup_vs_best_peer']):>9}"
            f"{num(e['max_rel_err'], '.1e'):>10}  {check}")
    return line + (f"  {e['note']}" if e["note"] else "")


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x" if v >= 0.1 else f"{v:.3f}x"


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _machine(threads: int, opts: Options) -> dict:
    import numba

    from .._store import cpu_name

    versions = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for mod in ("torch", "onnxruntime", "tensorflow", "jax"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    return {"threads": threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "load_average_at_end": _load_average(),
            "peak_gflops": opts.peak_gflops, "stream_gbs": opts.stream_gbs, "roofline_source": opts.roof_source,
            "cpu": cpu_name(), "versions": versions,
            "budget_seconds": opts.budget, "rounds": opts.rounds}


# --------------------------------------------------------------------------- the chart


def plot(result: dict, path: str) -> None:
    """A grouped bar chart of % of roofline per workload and engine (log scale), saved as PNG.

    Parameters
    ----------
    result : dict
        What :func:`compare` returned.
    path : str
        Output file (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    engines = [e for e in rows[0]["engines"]] if rows else []
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 2.0 + 0.25 * len(rows) * len(engines))), 5.0))
    width = 0.8 / max(1, len(engines))
    for j, engine in enumerate(engines):
        xs, hs = [], []
        for i, r in enumerate(rows):
            pct = r["engines"].get(engine, {}).get("roofline_pct")
            if pct:
                xs.append(i + (j - (len(engines) - 1) / 2) * width)
                hs.append(pct)
        ax.bar(xs, hs, width, label=engine)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [r["workload"]["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("% of roofline (higher is better)")
    m = result["machine"]
    ax.set_title(f"conv_transpose, {m['threads']} thread(s): roofline max(flops/{m['peak_gflops']:g} GFLOP/s, "
                 f"bytes/{m['stream_gbs']:g} GB/s)", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
