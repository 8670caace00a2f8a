"""One-time measured calibration: when the cost model cannot tell its best candidates apart, time them once.

The cost model (``_cost.py``) ranks the variants from the geometry. Its constants were fitted on a few dozen
layers, so on an unseen shape two variants it rates within a factor of ``AMBIGUOUS`` of each other may in fact
differ by 2x. For such a plan, the first ``conv_transpose`` call times each ambiguous candidate on the caller's
own arrays (in blocks of runs, the best of them), keeps the fastest, and records it:

* in memory, so every later call of the plan runs the same variant (results stay bitwise identical from call
  to call and across thread counts: the choice is made once, never per call);
* on disk (``$FASTDECONV_CACHE_DIR/calibration.json``, default ``~/.cache/fastdeconv``), keyed by the geometry,
  dtype, numba's pool size and this machine's CPU, so later processes skip the measurement.

Calls estimated at ``LONG_CALL`` or more get one block each (a warm-up run and one more, both timed: the first
can only be slower); a machine's noise is a smaller part of them, and it lets the budget reach layers of ~50 ms.
Plans whose best estimate is below ``MIN_SECONDS`` (the model's ranking is about per-call overheads there, and
a measurement would cost more than it could save), plans whose two best candidates alone would take more than
``BUDGET`` seconds to measure (further candidates are dropped, slowest estimate first, until the rest fit),
and plans whose variant the caller fixed are not measured. ``FASTDECONV_CALIBRATE=0`` turns measuring off (the
model alone decides; the disk records are then ignored too). :func:`fastdeconv.plan` reports a recorded
measurement when there is one.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from . import _geometry as geo
from ._threads import max_threads

AMBIGUOUS = 1.6      # candidates estimated within this factor of the best are measured
MAX_CANDIDATES = 4
MIN_SECONDS = 2e-4   # best estimate below this: trust the model
BUDGET = 0.2         # seconds the whole measurement may take (estimated): the slowest candidates are dropped
REPEATS = 2          # passes over the candidates, each a block of runs per candidate (see measure)
LONG_CALL = 0.025    # ... but one pass when the best estimate is this long (seconds)
BLOCK_TIME = 0.01    # seconds a block runs after its first run (spinning threads left by others stop)
MAX_RUNS = 25        # ... but at most this many runs
TIE = 1.05           # the model's first choice is kept unless another candidate measured this much faster

_lock = threading.Lock()
_records: dict[str, dict] | None = None


def enabled() -> bool:
    return os.environ.get("FASTDECONV_CALIBRATE", "1") != "0"


def cache_file() -> Path:
    root = os.environ.get("FASTDECONV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fastdeconv")
    return Path(root) / "calibration.json"


def key(plan: geo.Plan) -> str:
    """The record key: everything the measured ranking depends on (geometry, dtype, method, pool, CPU)."""
    axes = ";".join(f"{a.size_in},{a.kernel},{a.stride},{a.dilation},{a.start},{a.size_out}" for a in plan.axes)
    return (f"{_cpu()}|threads={max_threads()}|{plan.dtype}|{plan.method}|n={plan.batch}|cin={plan.c_in}|"
            f"cout={plan.c_out}|g={plan.groups}|{axes}")


def candidates(plan: geo.Plan, ranked: tuple[tuple[str, float], ...]) -> list[str]:
    """The variants worth measuring for ``plan`` (empty: the model's first choice stands)."""
    if not enabled() or plan.variant is not None or len(ranked) < 2:
        return []
    best = ranked[0][1]  # (every ranked variant keeps the memory rule: ``_cost.choose`` ranks no other)
    close = [(name, sec) for name, sec in ranked[:MAX_CANDIDATES] if sec <= AMBIGUOUS * best]

    def cost(entries):  # estimated measuring time (see measure): per pass and candidate, a block
        return repeats(best) * sum(sec + max(sec, BLOCK_TIME) for _, sec in entries)

    while len(close) > 2 and cost(close) > BUDGET:
        close.pop()  # the slowest estimate first
    if len(close) < 2 or best < MIN_SECONDS or cost(close) > BUDGET:
        return []
    return [name for name, _ in close]


def repeats(seconds: float) -> int:
    """Passes over the candidates (a block of runs each), for calls of about ``seconds``."""
    return 1 if seconds >= LONG_CALL else REPEATS


def deciding_record(plan: geo.Plan, names: list[str]) -> dict | None:
    """The stored measurement that decides ``plan`` instead of the model, if any: one whose variant is among
    ``names``, the plan's current candidates (a record of other candidates, e.g. from another budget, is
    ignored)."""
    record = recorded(plan) if names else None
    return record if record is not None and record["variant"] in names else None


def recorded(plan: geo.Plan) -> dict | None:
    """The stored measurement of ``plan`` on this machine, if any (and calibration is enabled)."""
    if not enabled():
        return None
    return _load().get(key(plan))


def measure(plan: geo.Plan, names: list[str], run) -> dict:
    """Time ``run(variant)`` for each candidate, store and return ``{"variant": fastest, "seconds": {...}}``.

    Each candidate runs in blocks: one run that loads its kernels (first block) and absorbs what the previous
    candidate left behind, then runs until they add up to ``BLOCK_TIME``; all are timed and each candidate
    keeps its fastest run. The first pass runs the model's choice (``names[0]``) last, so that whatever another
    library left spinning before this first call slows a challenger, which must then win by more than ``TIE``
    (in one peers.py run onnxruntime's pool made unet_up's calibration keep ``gather-gemm-cols``, 28 ms,
    over the model's ``scatter-gemm``, 25). Short calls get ``REPEATS`` passes over the candidates, the second in
    reverse order (so a drift of the machine's speed hits them alike), calls from ``LONG_CALL`` on one pass. A
    candidate is never timed only right after another: a numba kernel's OpenMP threads spin for some
    milliseconds after a parallel region when another library loaded OpenMP before fastdeconv could make it
    passive (torch does), and a BLAS-backed candidate run right after a numba one measured 5-8 ms instead of
    2.6; another library's pool can still spin after its last call too (onnxruntime's, ~50 ms, once made a
    3 ms candidate measure 7 ms when the whole measurement took 5 ms). ``names[0]`` (the model's choice) stays
    unless another candidate ran more than ``TIE`` times faster: a closer "win" is the machine's noise.
    """
    seconds: dict[str, float] = {}
    passes, done = 1, 0
    order = names[1:] + names[:1]  # the model's choice last: what another library left running hits a challenger
    while done < passes:
        for name in (order if done % 2 == 0 else order[::-1]):
            counted, runs = 0.0, 0
            while runs < 2 or (counted < BLOCK_TIME and runs < MAX_RUNS):
                t0 = time.perf_counter()
                run(name)
                elapsed = time.perf_counter() - t0
                seconds[name] = min(seconds.get(name, elapsed), elapsed)
                counted += elapsed if runs else 0.0
                runs += 1
        if done == 0:
            passes = repeats(min(seconds.values()))
        done += 1
    fastest = min(seconds, key=seconds.get)
    if seconds[names[0]] <= TIE * seconds[fastest]:  # within the noise: the model's first choice stands
        fastest = names[0]
    record = {"variant": fastest, "seconds": seconds}
    _store(key(plan), record)
    return record


def _cpu() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} x{os.cpu_count()}"


def _load() -> dict[str, dict]:
    global _records
    with _lock:
        if _records is None:
            try:
                data = json.loads(cache_file().read_text())
                _records = {k: v for k, v in data.items() if _valid(v)}
            except (OSError, ValueError, AttributeError):
                _records = {}
        return _records


def _valid(record) -> bool:
    """A well-formed record: a variant name among its measured ones, each with a positive time."""
    if not isinstance(record, dict) or not isinstance(record.get("seconds"), dict):
        return False
    times = record["seconds"]
    return (record.get("variant") in times and all(isinstance(k, str) for k in times)
            and all(isinstance(v, (int, float)) and v > 0 for v in times.values()))


def _store(k: str, record: dict) -> None:
    records = _load()
    with _lock:
        records[k] = record
        path = cache_file()
        try:  # atomic replace; a read-only or missing home only loses the disk copy
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(records, f, indent=0, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            pass


def forget() -> None:
    """Drop the in-memory records (the disk file is re-read on next use). For tests."""
    global _records
    with _lock:
        _records = None
