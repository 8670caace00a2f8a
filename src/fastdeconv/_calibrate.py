"""The variant a plan runs in this process: the cost model's pick, or the wisdom recorded for it.

The cost model (``_cost.py``) ranks the variants from the geometry, the dtype, the thread count and the machine
profile (``_profile``): that alone decides ``auto`` (FFTW's ESTIMATE), so the same profile gives the same
choice, hence the same bits, in every thread and process. Measuring whole layers is a request (FFTW's MEASURE):
an operator made with ``tune=True``, ``python -m fastdeconv tune`` or :func:`fastdeconv.calibration.remeasure`
time the candidates the model rates within a factor of ``AMBIGUOUS`` of each other and keep the fastest -- when
the measurement is consistent -- as wisdom in the calibration file; recorded wisdom (tuned, or imported) decides
the plans it names, in every process. Nothing else is timed: a call that did not ask to tune (``run=None``)
never measures.

One decision per key (geometry, dtype, method, numba's pool size, CPU) and process, made by :func:`decide`:

* single-flight: the first caller decides; concurrent callers of the same key wait for that decision; every
  later caller, through any path (hot, general, Dask, compat, an operator), gets the same variant, so results
  are bitwise the same whatever thread made the call and in whatever order;
* across processes (``$FASTDECONV_CACHE_DIR/calibration.json``, default ``~/.cache/fastdeconv``; written
  through ``_store``: locked, merged, atomically replaced, read defensively): the first recorded decision
  wins, a process that finds a record adopts it, and a process that measured merges its record without
  overwriting one another process wrote meanwhile, then adopts whatever the file holds;
* a caller that cannot measure (``run=None``, e.g. the Dask twin, which never holds the whole array) with
  nothing recorded fixes the model's pick for the process (in memory only): an in-memory call made later runs
  that variant too;
* bounded: a process keeps its ``MAX_DECISIONS`` most recent decisions (and the cache file its newest records,
  ``_store``). A layer whose decision was forgotten that long ago decides again on its next call, adopting the
  disk's record when there is one; prepared calls and operators keep the variant they run meanwhile.

Noise: candidates are timed in ``ROUNDS`` interleaved rounds (each candidate once per round, in rotating order,
the model's pick last in the first round so that whatever another library left running slows a challenger);
per round a candidate runs a block (a first run that absorbs what the previous candidate left behind -- numba's
or BLAS's threads spinning after a parallel region -- then runs until ``BLOCK_TIME``) and keeps its fastest run.
A challenger replaces the model's pick only when it wins a majority of the rounds *and* its median beats the
model's median by ``TIE``; anything less is a tie, and a tie keeps the model's pick. The record holds the
medians and the rounds won.

Readiness: compiling a kernel takes seconds and timing it milliseconds, so a candidate whose kernels are not
compiled in this process nor in numba's on-disk cache (``ready(variant)`` false) is not measured; the model's
pick always runs. A measurement that skipped a candidate decides this process only (it is not recorded, so a
later process with a warm numba cache measures them all).

Not measured: plans whose best estimate is below ``MIN_SECONDS`` (the model's ranking is about per-call
overheads there), plans whose two best candidates alone would take more than ``BUDGET`` seconds to measure
(further candidates are dropped, slowest estimate first, until the rest fit), and plans whose variant the
caller fixed. ``FASTDECONV_CALIBRATE=0`` turns measuring off (the model alone decides; the disk records are
then ignored too). :func:`fastdeconv.plan` reports the decision (:func:`current`); the public inspection,
re-measurement, export and import are in :mod:`fastdeconv.calibration`.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import _geometry as geo
from . import _store as _files
from ._threads import max_threads

AMBIGUOUS = 1.6      # candidates estimated within this factor of the best are measured
MAX_CANDIDATES = 4
MIN_SECONDS = 2e-4   # best estimate below this: trust the model
BUDGET = 0.4         # seconds the whole measurement may take (estimated): the slowest candidates are dropped
ROUNDS = 5           # interleaved rounds, each candidate once per round (a block of runs, see measure)
LONG_ROUNDS = 3      # ... for calls of LONG_CALL or more, whose blocks are one run after the first round
LONG_CALL = 0.025    # seconds: a machine's noise is a small part of such a call
BLOCK_TIME = 0.005   # seconds a short call's block runs after its first run
MAX_RUNS = 25        # ... but at most this many runs
TIE = 1.05           # a challenger must beat the model's pick's median by this factor (and win most rounds)
FILE_NAME = "calibration.json"
MAX_KEY = 512        # characters: a longer key is not one of ours
MAX_DECISIONS = 4096  # decisions a process keeps (the oldest forgotten first)

Decision = tuple[str, "dict | None"]

_lock = threading.Lock()
_decided: dict[str, Decision] = {}           # key -> (variant, record or None: the model's pick)
_deciding: dict[str, threading.Event] = {}   # key -> set when its decider is done (decided or failed)
_owner: dict[str, int] = {}                  # key -> thread deciding it
measurements = 0                             # measurements made by this process (tests count them)


def enabled() -> bool:
    return os.environ.get("FASTDECONV_CALIBRATE", "1") != "0"


def cache_file() -> Path:
    return _files.cache_dir() / FILE_NAME


def variant_names() -> frozenset[str]:
    """The variant names a record may hold (the registry's)."""
    from . import variants

    return frozenset(variants.VARIANTS)


def key(plan: geo.Plan, request: geo.Request = geo.AUTO, own: bool = False) -> str:
    """The record key: everything the measured ranking depends on (geometry, dtype, requested form, pool, CPU).

    ``own``: an operator's own decision (its ranking with the packed weights kept, see ``_api.decide_variant``),
    recorded apart from the one-off calls' as the form followed by ``+kept`` (the key's format on disk).
    """
    axes = ";".join(f"{a.size_in},{a.kernel},{a.stride},{a.dilation},{a.start},{a.size_out}" for a in plan.axes)
    method = request.method + ("+kept" if own else "")
    return (f"{_files.cpu_name()}|threads={max_threads()}|{plan.dtype}|{method}|n={plan.batch}|cin={plan.c_in}|"
            f"cout={plan.c_out}|g={plan.groups}|{axes}" + ("|channels_last" if plan.channels_last else ""))


def valid_record(k, record) -> bool:
    """A well-formed record: known variant names, finite positive times, the kept variant among the measured."""
    names = variant_names()
    if not (isinstance(k, str) and len(k) <= MAX_KEY and isinstance(record, dict)):
        return False
    seconds = record.get("seconds")
    if not (isinstance(seconds, dict) and seconds and record.get("variant") in seconds
            and isinstance(record["variant"], str)):
        return False
    if not all(isinstance(n, str) and n in names and _positive(t) for n, t in seconds.items()):
        return False
    wins, rounds = record.get("wins", {}), record.get("rounds", 1)
    if not (type(rounds) is int and 1 <= rounds <= 1000 and isinstance(wins, dict)):
        return False
    if not all(n in seconds and type(w) is int and 0 <= w <= rounds for n, w in wins.items()):
        return False
    return record.get("model", record["variant"]) in seconds


def candidates(plan: geo.Plan, ranked: tuple[tuple[str, float], ...], request: geo.Request = geo.AUTO) -> list[str]:
    """The variants worth measuring for ``plan``, the model's pick first (empty: the model's pick stands)."""
    if not enabled() or request.variant is not None or len(ranked) < 2:
        return []
    best = ranked[0][1]  # (every ranked variant keeps the memory rule: ``_cost.choose`` ranks no other)
    close = [(name, sec) for name, sec in ranked[:MAX_CANDIDATES] if sec <= AMBIGUOUS * best]

    def cost(entries):  # estimated measuring time (see measure): per round and candidate, a block
        if best >= LONG_CALL:
            return (LONG_ROUNDS + 1) * sum(sec for _, sec in entries)  # (the first round: blocks of two)
        return ROUNDS * sum(sec + max(sec, BLOCK_TIME) for _, sec in entries)

    while len(close) > 2 and cost(close) > BUDGET:
        close.pop()  # the slowest estimate first
    if len(close) < 2 or best < MIN_SECONDS or cost(close) > BUDGET:
        return []
    return [name for name, _ in close]


def rounds(seconds: float) -> int:
    """Interleaved rounds for calls of about ``seconds``."""
    return LONG_ROUNDS if seconds >= LONG_CALL else ROUNDS


def decide(plan: geo.Plan, ranked: tuple[tuple[str, float], ...], run: Callable[[str], None] | None = None,
           ready: Callable[[str], bool] | None = None, *, request: geo.Request = geo.AUTO, own: bool = False) -> str:
    """THE variant for ``plan`` in this process (see the module docstring).

    Parameters
    ----------
    plan : Plan
        The call's plan.
    ranked : tuple of (str, float)
        The model's ranking, cheapest first (``_cost.choose(plan).estimates``).
    run : callable, optional
        ``run(variant)`` runs one call of ``variant`` on the caller's arrays; None: cannot measure now.
    ready : callable, optional
        ``ready(variant)``: its kernels load without compiling; None: all are ready.
    request : Request
        What the call asked for (a pinned variant is not decided: it runs).
    own : bool
        An operator's own decision, recorded apart (:func:`key`).

    Returns
    -------
    str
    """
    if not ranked:
        raise ValueError("ranked must hold at least one (variant, seconds) pair")
    model = ranked[0][0]
    if not enabled() or request.variant is not None or len(ranked) < 2:
        return model  # nothing to decide: the model's pick is a function of the plan
    k = key(plan, request, own)
    hit = _decided.get(k)
    if hit is not None:
        return hit[0]
    me = threading.get_ident()
    while True:
        with _lock:
            hit = _decided.get(k)
            if hit is not None:
                return hit[0]
            event = _deciding.get(k)
            if event is None:
                event = _deciding[k] = threading.Event()
                _owner[k] = me
                break
            if _owner.get(k) == me:  # re-entered from this thread's own measurement run
                return model
        event.wait()  # another thread decides; if it failed (its run raised), the next loop takes over
    try:
        decision = _decide(plan, ranked, k, run, ready, request)
        with _lock:
            _decided[k] = decision
            while len(_decided) > MAX_DECISIONS:
                del _decided[next(iter(_decided))]  # the oldest (dicts keep their insertion order)
        return decision[0]
    finally:
        with _lock:
            _deciding.pop(k, None)
            _owner.pop(k, None)
        event.set()


def current(plan: geo.Plan, ranked: tuple[tuple[str, float], ...], *, request: geo.Request = geo.AUTO,
            own: bool = False) -> Decision:
    """What a call of ``plan`` would run now, without deciding: ``(variant, record or None)``.

    The decision of this process if made, else a deciding record on disk, else the model's pick (None).
    """
    if not ranked:
        raise ValueError("ranked must hold at least one (variant, seconds) pair")
    model = ranked[0][0]
    if not enabled() or request.variant is not None or len(ranked) < 2:
        return model, None
    k = key(plan, request, own)
    hit = _decided.get(k)
    if hit is not None:
        return hit
    names = candidates(plan, ranked, request)
    record = _files.read_records(cache_file(), valid_record).get(k) if names else None
    if record is not None and _decides(record, names):
        return record["variant"], record
    return model, None


def _decide(plan, ranked, k, run, ready, request) -> Decision:
    global measurements
    model = ranked[0][0]
    names = candidates(plan, ranked, request)
    if not names:
        return model, None
    path = cache_file()
    record = _files.read_records(path, valid_record).get(k)
    if record is not None and _decides(record, names):
        return record["variant"], record  # another process decided first: adopt it
    if run is None:
        return model, None
    measured = [n for n in names if n == model or _ready(ready, n)]
    if len(measured) < 2:
        return model, None
    record = measure(plan, measured, run)
    measurements += 1
    if len(measured) < len(names):  # a partial measurement decides this process only
        record["skipped"] = [n for n in names if n not in measured]
        return record["variant"], record
    merged = _files.merge_records(path, {k: record}, valid_record, keep_existing=True)
    adopted = merged.get(k)
    if adopted is not None and _decides(adopted, names):
        record = adopted  # the first recorded decision wins (possibly another process's, made meanwhile)
    return record["variant"], record


def _decides(record: dict, names: list[str]) -> bool:
    """A record decides a plan only when it keeps one of the plan's current candidates (a record of another
    budget, model or version keeps a variant this plan may not even allow)."""
    return record["variant"] in names


def _ready(ready, name: str) -> bool:
    if ready is None:
        return True
    try:
        return bool(ready(name))
    except Exception:  # a probe that fails answers "not ready": only a measurement is skipped
        return False


def measure(plan: geo.Plan, names: list[str], run: Callable[[str], None]) -> dict:
    """Time ``run(variant)`` for each of ``names`` (the model's pick first) and return the record.

    ``{"variant": kept, "seconds": {name: median}, "wins": {name: rounds won}, "rounds": n, "model": names[0]}``.
    Rounds: each candidate once, in an order rotated by one per round (the model's pick last in the first), so a
    drift of the machine's speed hits all of them alike. Per round a candidate runs a block and keeps its
    fastest run: at least two runs and until ``BLOCK_TIME`` after the first (the first absorbs what the
    previous candidate left running: numba's OpenMP threads spin for a few milliseconds after a parallel region
    when another library made them active, a BLAS pool likewise; in the first round it also loads the kernel);
    after the first round a run of ``LONG_CALL`` or more is a block alone (those milliseconds are a small part
    of it), and when the first round's fastest candidate took that long there are ``LONG_ROUNDS`` rounds. The
    verdict is :func:`verdict`'s. Nothing is stored here.
    """
    order = names[1:] + names[:1]
    times: dict[str, list[float]] = {name: [] for name in names}
    total, done = ROUNDS, 0
    while done < total:
        shift = done % len(order)
        for name in order[shift:] + order[:shift]:
            times[name].append(_block(run, name, first=done == 0))
        if done == 0:
            total = rounds(min(ts[0] for ts in times.values()))
        done += 1
    return verdict(names, times)


def verdict(names: list[str], times: dict[str, list[float]]) -> dict:
    """The record of a measurement: ``times[name][i]`` is ``name``'s time in round ``i``; ``names[0]`` is the
    model's pick. A round's fastest candidate wins it (equal times: nobody); a challenger is kept only when it
    has the fastest median, wins a majority of the rounds and beats the model's median by ``TIE``."""
    model, total = names[0], len(times[names[0]])
    wins = dict.fromkeys(names, 0)
    for i in range(total):
        best = min(times[name][i] for name in names)
        leaders = [name for name in names if times[name][i] == best]
        if len(leaders) == 1:
            wins[leaders[0]] += 1
    medians = {name: statistics.median(times[name]) for name in names}
    fastest = min(names, key=lambda name: medians[name])  # (equal medians: the earlier in the model's ranking)
    kept = fastest
    if fastest != model and not (2 * wins[fastest] > total and medians[model] > TIE * medians[fastest]):
        kept = model  # within the noise, or not consistent: a tie keeps the model's pick
    return {"variant": kept, "seconds": medians, "wins": wins, "rounds": total, "model": model}


def _block(run, name: str, first: bool) -> float:
    """The fastest of a block of runs of ``name`` (see measure)."""
    fastest, counted, runs = math.inf, 0.0, 0
    while runs < 2 or (counted < BLOCK_TIME and runs < MAX_RUNS):
        t0 = time.perf_counter()
        run(name)
        elapsed = time.perf_counter() - t0
        fastest = min(fastest, elapsed)
        counted += elapsed if runs else 0.0
        runs += 1
        if elapsed >= LONG_CALL and not first:
            break  # a long call: one run is the block (but the first round's first run may load the kernel)
    return max(fastest, 1e-9)  # (a clock that did not move still gives a positive time)


def recorded(plan: geo.Plan, request: geo.Request = geo.AUTO) -> dict | None:
    """The valid record of ``plan`` on disk (or None; None too when calibration is disabled)."""
    if not enabled():
        return None
    return _files.read_records(cache_file(), valid_record).get(key(plan, request))


def deciding_record(plan: geo.Plan, names: list[str], request: geo.Request = geo.AUTO) -> dict | None:
    """The record on disk that decides ``plan`` (one that keeps one of ``names``, its current candidates)."""
    record = recorded(plan, request) if names else None
    return record if record is not None and _decides(record, names) else None


def forget() -> None:
    """Drop this process's decisions (the disk is read again on the next decision). For tests and ``clear``."""
    with _lock:
        _decided.clear()


def decisions() -> dict[str, Decision]:
    """A copy of this process's decisions, by key."""
    with _lock:
        return dict(_decided)


def store(k: str, record: dict, replace: bool = True) -> dict:
    """Write ``record`` under ``k`` on disk (replacing any record when ``replace``); return what is recorded."""
    return _files.merge_records(cache_file(), {k: record}, valid_record, keep_existing=not replace)


def _positive(t) -> bool:
    return isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0


