"""The machine profile: the family rates of the cost model (``_model.REFERENCE`` names them), measured here.

``auto`` ranks the variants by estimates built from a handful of speeds of this machine: the BLAS GEMM rate (on
large sides, how it falls along each thin side, how it scales with threads; fp32 and fp64), the streaming copy
bandwidth of a core, the cost of a call into compiled code, and the per-element rates of the numba kernels
(direct multiply-add, col2im add, im2col copy, plane tap, Winograd transform). Everything else in the model is a
fixed ratio within a family (``_model``). The rates come from micro-benchmarks, never from a CPU's name:

* a **coarse** profile (:func:`measure` with ``full=False``, about a tenth of a second): the BLAS and copy rates
  measured; the memory-bound numba kernels' rates scaled from the reference rates by the bandwidth (``_model.READING``),
  the compute-bound ones at their reference rates. It needs no compiled kernel, so it is what a process uses
  when nothing is stored: measured once and stored, so that every later process decides identically;
* a **full** profile (``full=True``: ``python -m fastdeconv machine --measure`` and ``warmup``; one to two
  seconds once the kernels are compiled): the same, then the call cost and each numba family that has a layer
  made almost only of it (``PROBES``) timed on the real kernels, one core; the family's rate is solved from that
  time and the variant's own estimate (which is linear in the family's cost), and the model's rate is the
  reference rate scaled by that reading over the reading of a machine where the reference rates hold
  (``_model.READING``: a probe stays in cache, so its reading is not a workload's rate, but two machines' ratio
  is). It is measured in up to three passes, until two agree on the GEMM and direct rates, each family keeping
  its fastest (``_passes``).

Each number is the fastest of several timed blocks, taken until the two fastest agree (or a few more at most). A profile
is keyed by the CPU model and core count, numba's pool size and the BLAS kernel (threadpoolctl's
``internal_api`` and ``architecture``) and kept in ``profile.json`` in the cache directory through ``_store``
(locked, merged, atomically replaced, every record validated: a hostile file costs a warning, never a wrong
rate). The first recorded profile of a key wins (a process that measured adopts what the file holds); an
explicit re-measurement replaces it. Overrides, first match wins: :func:`set_profile` (``fastdeconv.set_profile``),
then the JSON file named by ``$FASTDECONV_PROFILE`` (the rates, validated), then the stored profile.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np

from . import _model
from . import _store as _files
from ._threads import get_num_threads, max_threads, set_num_threads

FILE_NAME = "profile.json"
ENV = "FASTDECONV_PROFILE"
MAX_KEY = 512
TRUST = 8.0  # a kernel family solved further than this from its coarse rate keeps the coarse one
RANGE = 100.0  # a rate more than this factor from the reference one is not a measurement of a CPU
KINDS = ("coarse", "full")
# families a coarse profile scales with the copy bandwidth (memory-bound adds and copies; as times); the
# compute-bound numba families keep their reference rates until a full profile times them (their speed does not
# follow the BLAS GEMM's: a core whose AVX-512 is double-pumped halves the GEMM, not these loops)
MEMORY = ("col2im_element", "im2col_element")
TIMES = ("call", "col2im_element", "im2col_element", "plane_tap", "winograd_element")  # seconds, not rates
# a full measurement's passes (``_passes``): at most PASSES, none started beyond PASS_BUDGET seconds; two passes
# whose COMPUTE readings agree within STABLE end it
PASSES, PASS_BUDGET, STABLE = 3, 1.8, 0.05
COMPUTE = ("sgemm_peak", "direct_rate")

_lock = threading.RLock()
_state: dict = {}  # "rates", "kind", "source", "key", "seconds": what the model runs on (empty: not loaded yet)
_override: dict | None = None  # set_profile's rates


def key() -> str:
    """The profile's key: CPU model and core count, numba's pool size, the BLAS kernel."""
    return f"{_files.cpu_name()}|threads={max_threads()}|blas={blas_kernel()}"


def blas_kernel() -> str:
    """The loaded BLAS libraries' APIs and kernels (threadpoolctl's ``internal_api``/``architecture``), sorted."""
    from ._blas import blas_controllers

    found = set()
    for c in blas_controllers():
        found.add(f"{getattr(c, 'internal_api', '?')}/{getattr(c, 'architecture', None) or '?'}")
    return ",".join(sorted(found)) or "none"


def check_rates(rates, *, partial: bool = False) -> dict:
    """``rates`` validated into a profile's family rates (ValueError/TypeError naming the field and the rule).

    Every family of ``_model.REFERENCE``: a finite positive number within a factor of ``RANGE`` of the reference
    one (``gemm_half``: three such numbers; ``gemm_threads`` within (0, 2]). ``partial``: missing families
    take the reference value (a synthetic profile that sets a few rates).
    """
    if not isinstance(rates, Mapping):
        raise TypeError(f"profile must be a mapping of family rates, got {type(rates).__name__}")
    unknown = [k for k in rates if k not in _model.REFERENCE]
    if unknown:
        raise ValueError(f"profile has unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(_model.FAMILIES)}")
    missing = [k for k in _model.FAMILIES if k not in rates]
    if missing and not partial:
        raise ValueError(f"profile lacks the field(s) {', '.join(missing)}")
    out = {}
    for name in _model.FAMILIES:
        ref = _model.REFERENCE[name]
        value = rates.get(name, ref)
        if name == "gemm_half":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
                raise ValueError(f"profile['gemm_half'] must be three numbers (M, N, K), got {value!r}")
            out[name] = tuple(_number(f"gemm_half[{i}]", v, 0.5, 4096.0) for i, v in enumerate(value))
        elif name == "gemm_threads":
            out[name] = _number(name, value, 1e-3, 2.0)
        else:
            out[name] = _number(name, value, ref / RANGE, ref * RANGE)
    return out


def _number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"profile[{name!r}] must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"profile[{name!r}] must be finite and within [{low:.3g}, {high:.3g}], got {value!r}")
    return value


def valid_record(k, record) -> bool:
    """A stored profile: a key of ours, a kind, valid rates, a measuring time."""
    if not (isinstance(k, str) and len(k) <= MAX_KEY and isinstance(record, dict)):
        return False
    if record.get("kind") not in KINDS or set(record) - {"kind", "rates", "seconds"}:
        return False
    seconds = record.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e4:
        return False
    try:
        check_rates(record.get("rates"))
    except (TypeError, ValueError):
        return False
    return True


def cache_file():
    return _files.cache_dir() / FILE_NAME


# ------------------------------------------------------------------------------------------------ the active one


def ensure() -> None:
    """Load the profile into the model if this process has not yet (cheap once loaded)."""
    if not _state:
        current()


def current() -> dict:
    """The profile the model runs on: ``{"rates", "kind", "source", "key", "seconds"}`` (a copy).

    ``source``: ``"set_profile"``, ``"$FASTDECONV_PROFILE"``, ``"stored"`` or ``"measured"`` (coarse, in this
    process, then stored). Loads it on first use (single-flight: one thread measures, the others wait).
    """
    with _lock:
        if not _state:
            _load()
        return dict(_state, rates=dict(_state["rates"]))


def _load() -> None:
    k = key()
    if _override is not None:
        return _use(_override, "full", "set_profile", k, 0.0)
    path = os.environ.get(ENV)
    if path:
        rates = _from_file(path)
        if rates is not None:
            return _use(rates, "full", f"${ENV}", k, 0.0)
    record = _files.read_records(cache_file(), valid_record).get(k)
    if record is None:
        record = measure(full=False, store=True)
        source = "measured"
    else:
        source = "stored"
    _use(record["rates"], record["kind"], source, k, record.get("seconds", 0.0))


def _from_file(path: str) -> dict | None:
    """The rates of a profile file (a JSON object of family rates, or :func:`current`'s dict), or None with a
    warning when the file is missing or invalid (the stored profile then stands)."""
    try:
        data, problem = _files.read_file(path, lambda k, v: True)
    except FileNotFoundError:
        data, problem = {}, "it does not exist"
    try:
        if problem is not None:
            raise ValueError(problem)
        return check_rates(data.get("rates", data), partial=True)
    except (TypeError, ValueError) as exc:
        warnings.warn(f"fastdeconv: ignoring ${ENV}={path!r}: {exc}", RuntimeWarning, stacklevel=4)
        return None


def _use(rates, kind: str, source: str, k: str, seconds: float) -> None:
    rates = check_rates(rates, partial=True)
    _model.install(rates)
    _state.clear()
    _state.update(rates=rates, kind=kind, source=source, key=k, seconds=seconds)


def set_profile(rates) -> None:
    """Run the model on ``rates`` (validated; missing families take the reference rates), or on the stored
    profile again (None). The caller clears the caches of choices made before (``fastdeconv.set_profile``)."""
    global _override
    checked = None if rates is None else check_rates(rates.get("rates", rates) if isinstance(rates, Mapping)
                                                     and "rates" in rates else rates, partial=True)
    with _lock:
        _override = checked
        _state.clear()
        _load()


# ------------------------------------------------------------------------------------------------ measuring


def measure(full: bool = True, store: bool = True) -> dict:
    """Measure this machine's profile and return its record ``{"kind", "rates", "seconds"}``.

    ``full``: time the numba kernels too (they are compiled first if needed; that time is not counted).
    ``store``: record it; a full measurement replaces the stored profile of this key, a coarse one is added only
    when none is stored (the first recorded wins, and the record returned is then the stored one). The model keeps
    running on what it ran on: :func:`set_profile` (None) or a new process picks up a new stored profile.
    """
    t0 = time.perf_counter()
    if full:
        rates, kind = _passes(t0), "full"
    else:
        rates, kind = _coarse(), "coarse"
    seconds = time.perf_counter() - t0
    record = {"kind": kind, "rates": _plain(check_rates(rates)), "seconds": round(seconds, 3)}
    if store:
        merged = _files.merge_records(cache_file(), {key(): record}, valid_record, keep_existing=not full)
        record = merged.get(key(), record)
    return record


def _passes(t0: float) -> dict:
    """A full profile, measured in passes until two agree: each pass is a whole coarse and full measurement; a
    pass starts only while the time since ``t0`` plus the last pass's length stays within PASS_BUDGET, and at most
    PASSES run. Each family keeps its fastest reading over the passes (``_fastest``).

    Why more than one: on a shared virtual machine a core can slow down for seconds at a time with no steal time
    reported, compute more than memory. A single pass taken then reads the GEMM and the numba loops up to 1.5x
    slow beside a copy rate that is not, which moves choices between GEMM and non-GEMM variants for as long as the
    profile is kept. The fastest of each family is the reading least made of the moment (as ``_best_time``'s
    fastest block within one reading)."""
    best = None
    for _ in range(PASSES):
        start = time.perf_counter()
        rates = _full(_coarse())
        agreed = best is not None and all(abs(rates[f] / best[f] - 1.0) <= STABLE for f in COMPUTE)
        best = rates if best is None else _fastest(best, rates)
        now = time.perf_counter()
        if agreed or now - t0 + (now - start) > PASS_BUDGET:
            break
    return best


def _fastest(a: dict, b: dict) -> dict:
    """Per family, the faster of two passes' readings (the smaller time, the larger rate). The GEMM's half sides
    and thread efficiency are relative to its own pass's one-core rate, so they come with the faster sgemm."""
    out = dict(b if b["sgemm_peak"] > a["sgemm_peak"] else a)
    for name in _model.FAMILIES:
        if name in ("gemm_half", "gemm_threads", "sgemm_peak"):
            continue
        out[name] = min(a[name], b[name]) if name in TIMES else max(a[name], b[name])
    return out


def _plain(rates: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in rates.items()}


def _best_time(fn, *, min_block: float = 1e-3, blocks: int = 5, max_blocks: int = 9, spread: float = 0.05) -> float:
    """Seconds per call of ``fn``: after one untimed call, blocks of calls (each at least ``min_block`` s); the
    fastest per-call time of ``blocks`` blocks, more (up to ``max_blocks``) while the two fastest differ by more
    than ``spread``. The fastest, not the median: another process on the machine only ever slows a block down, so
    the fastest block is the reading least made of the moment (a profile is kept and decides every later call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, min(1000, int(min_block / once)))
    samples = []
    while len(samples) < max_blocks:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - t0) / reps)
        if len(samples) >= blocks:
            best = sorted(samples)[:2]
            if best[1] <= best[0] * (1 + spread):
                break
    return min(samples)


@contextmanager
def _threads(n: int):
    """fastdeconv's (numba's and BLAS's) thread count at ``n`` meanwhile."""
    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)


def _gemm_rate(m: int, n: int, k: int, dtype=np.float32) -> float:
    """FLOP/s of ``np.matmul`` (the BLAS the GEMM variants call) on (m x k) @ (k x n) at the current threads."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = np.empty((m, n), dtype)
    seconds = _best_time(lambda: np.matmul(a, b, out=c))
    return 2.0 * m * n * k / seconds


_BIG, _WIDE = 256, 1024  # GEMM sides: (M, N, K) = (_BIG, _WIDE, _BIG) as the variants' GEMMs (a long pixel side)
_THIN = (16, 32, 64)  # the thin sides of the half-rate probes (one side at a time; the median of their readings)
_COPY_BYTES = 32 << 20  # far beyond a last-level cache: the copy streams from memory


def _half(thin_rate: float, big_rate: float, side: int) -> float:
    """The half side ``h`` of ``side / (side + h)`` from the rates at a thin ``side`` and on _BIG sides."""
    q = min(thin_rate / big_rate, 0.999)
    return float(min(4096.0, max(0.5, side * (1 - q) / q)))


def _halves(big: float) -> tuple[float, float, float]:
    """The (M, N, K) half sides: per side, the median of its readings at the _THIN sizes (one reading moves by
    2x between processes; three thin sizes, each a different share of the rate, make it steadier)."""
    out = []
    for axis in range(3):
        readings = []
        for side in _THIN:
            sides = [_BIG, _WIDE, _BIG]
            sides[axis] = side
            readings.append(_half(_gemm_rate(*sides), big, side))
        out.append(float(np.median(readings)))
    return tuple(out)


def _coarse() -> dict:
    """The BLAS and copy rates measured; the numba kernels' rates scaled from the reference by them."""
    ref = _model.REFERENCE
    with _threads(1):
        big = _gemm_rate(_BIG, _WIDE, _BIG)
        halves = _halves(big)
        dgemm = _gemm_rate(_BIG, _BIG, _BIG, np.float64)
        side = 2 * _BIG
        one = _gemm_rate(side, side, side)
        bandwidth = _copy_rate()
    pool = max_threads()
    if pool > 1:
        # the best of three tries: another process holding a core for a while halves one reading, not three
        parallel = 0.0
        for _ in range(3):
            with _threads(pool):
                parallel = max(parallel, _gemm_rate(side, side, side))
            if parallel >= 0.9 * pool * one:
                break
        # (at most perfect scaling; at least a quarter of it: a busy machine's reading is not the CPU's)
        gemm_threads = min(1.0, max(0.25, parallel / (pool * one)))
    else:
        gemm_threads = 1.0
    rates = dict(ref, sgemm_peak=max(big, one), dgemm_peak=dgemm, gemm_threads=gemm_threads)
    rates["gemm_half"] = _model.scaled("gemm_half", halves)
    memory = bandwidth / _model.READING["bandwidth"]
    for name in ("bandwidth", *MEMORY):  # (memory-bound: times shrink as the bandwidth grows)
        rates[name] = ref[name] * memory if name == "bandwidth" else ref[name] / memory
    return _clamped(rates)


def _copy_rate() -> float:
    """Bytes/s (read + written) of one core copying a 32 MiB array."""
    count = _COPY_BYTES // 4
    src = np.ones(count, np.float32)
    dst = np.zeros(count, np.float32)  # touched here: page faults are not timed
    seconds = _best_time(lambda: np.copyto(dst, src), min_block=0.0, blocks=3, max_blocks=5)
    return 2.0 * _COPY_BYTES / seconds


def _clamped(rates: dict) -> dict:
    """Each family within the range a profile may hold (a measurement that went wrong stays plausible)."""
    out = dict(rates)
    for name in _model.FAMILIES:
        ref = _model.REFERENCE[name]
        if name == "gemm_half":
            out[name] = tuple(min(4096.0, max(0.5, float(h))) for h in rates[name])
        elif name != "gemm_threads":
            out[name] = min(ref * RANGE * 0.99, max(ref / RANGE * 1.01, float(rates[name])))
    return out


# (family, variant, x shape, weight shape, geometry): a float32 layer whose time on one core is almost all made of
# the family, a millisecond or more (so that the fixed costs of a call are a small part of it). Only families
# that have such a layer are timed: solving a family that is a small part of a probe's time (col2im beside its
# GEMM) subtracts two close numbers, and read 0.09 to 0.85 ns for the same col2im in three runs; those families
# keep their coarse rates.
PROBES = (
    ("direct_rate", "scatter-direct", (1, 32, 32, 128), (32, 16, 3, 3), {"padding": 1}),
    # (the plane family's terms are 4/5 of its estimate: its solved rate held within 12% of what five larger
    # layers' times solve to, on a host where the reference rate is 2.5x too fast for them; layers under a
    # millisecond read less)
    ("plane_tap", "gather-plane", (1, 32, 64, 64), (32, 16, 3, 3), {"padding": 1}),
)


def _full(rates: dict) -> dict:
    """``rates`` (coarse) with the call cost and each numba family measured on the real kernels, one core."""
    from . import _geometry as geo
    from . import variants

    rates = dict(rates)
    probes = []
    for family, name, x_shape, w_shape, kw in PROBES:
        plan = geo.make_plan(x_shape, w_shape, np.float32, np.float32, kw.get("stride", 1), kw.get("padding", 0),
                             0, 1, 1)
        rng = np.random.default_rng(0)
        x5 = rng.standard_normal((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes)).astype(np.float32)
        w5 = rng.standard_normal((plan.c_in, plan.c_out) + tuple(a.kernel for a in plan.axes)).astype(np.float32)
        y5 = np.empty((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes), np.float32)
        bias = np.zeros(plan.c_out, np.float32)
        if not variants.get(name).applies(plan):  # (a variant list changed by a test: keep the coarse rate)
            continue
        variants.forced(name, plan, x5, w5, bias, y5)  # compiles or loads the kernels: not timed
        probes.append((family, name, plan, (x5, w5, bias, y5)))
    installed = dict(_state.get("rates") or _model.REFERENCE)
    try:
        with _threads(1):
            rates["call"] = _call_cost()
            solved = dict(rates)
            for family, name, plan, arrays in probes:
                seconds = _best_time(lambda n=name, p=plan, a=arrays: variants.forced(n, p, *a))
                value = _solve(solved, family, variants.get(name), plan, seconds)
                if value is not None:  # (None: the probe's time is not made of this family; the coarse rate stays)
                    solved[family] = value
                    rates[family] = _model.scaled(family, value)
            rates["call"] = _model.scaled("call", solved["call"] if "call" in solved else rates["call"])
    finally:
        _model.install(check_rates(installed, partial=True))  # the model runs on what it ran on
    return _clamped(rates)


def _call_cost() -> float:
    """Seconds of one call into a compiled numba kernel from Python (a one-multiply-add direct call)."""
    from . import _geometry as geo
    from .variants._direct import direct_call

    plan = geo.make_plan((1, 1, 1), (1, 1, 1), np.float32, np.float32)
    kernel, args = direct_call(plan, "scatter")
    x5, w5 = np.ones((1, 1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1, 1), np.float32)
    y5, b = np.empty((1, 1, 1, 1, 1), np.float32), np.zeros(1, np.float32)
    return _best_time(lambda: kernel(x5, w5, b, y5, *args))


def _solve(rates: dict, family: str, variant, plan, seconds: float) -> float | None:
    """The family rate at which ``variant``'s one-core estimate of ``plan`` equals ``seconds``: the estimate is
    ``A + B * u``, linear in the family's cost ``u`` (a time, or the inverse of a rate), found from two
    evaluations; None when no plausible rate explains the time (see ``TRUST``)."""
    def estimate(u: float) -> float:
        value = 1.0 / u if family not in TIMES else u
        _model.install(check_rates(_clamped(dict(rates, **{family: value}))))
        return variant.estimate(plan, 1)

    u0 = rates[family] if family in TIMES else 1.0 / rates[family]
    c1, c2 = estimate(u0), estimate(2 * u0)
    slope = (c2 - c1) / u0
    if not slope > 0:
        return None
    u = (seconds - (c1 - slope * u0)) / slope
    if not u0 / TRUST <= u <= u0 * TRUST:  # the family is not what the time is made of: keep the coarse rate
        return None
    return u if family in TIMES else 1.0 / u
