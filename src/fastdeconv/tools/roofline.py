"""The roofline of the machine fastdeconv runs on: its fp32 GEMM peak and its streaming copy bandwidth.

``compare`` reports each engine's time as a percentage of ``max(flops / peak, bytes / bandwidth)``. Both roofs
are measured here, on this host, at the thread count in use (a hard-coded figure from another machine would
make "% roof" meaningless elsewhere): the peak is the best of a few large ``sgemm`` calls of the BLAS
fastdeconv's kernels call (SciPy's, limited to ``threads`` through threadpoolctl), the bandwidth the best of a
few copies of a 32 MiB array split among ``threads`` Python threads (NumPy releases the GIL while copying),
counting the bytes read and written. The measurement takes well under a second and is cached per CPU model
and thread count in ``cache_dir() / "roofline.json"`` (shared by processes through :mod:`fastdeconv._store`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._store import cpu_name

FILE_NAME = "roofline.json"
_GEMM_SIDE = 1024  # 2.1 GFLOP a call: long enough to reach the BLAS peak, short enough to repeat
_COPY_BYTES = 32 << 20  # far beyond any last-level cache, so the copy streams from memory
_GEMM_SECONDS = 0.35  # measuring time of each roof (plus one warm-up call each)
_COPY_SECONDS = 0.2
_lock = threading.Lock()
_memo: dict[str, dict] = {}


def _valid(key, value) -> bool:
    """A record read from disk is used only if it is a well-formed measurement (the file may be hostile)."""
    if not isinstance(key, str) or not isinstance(value, dict):
        return False
    for field, upper in (("peak_gflops", 1e7), ("stream_gbs", 1e5)):
        v = value.get(field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < upper) or not math.isfinite(v):
            return False
    return isinstance(value.get("threads"), int) and value["threads"] >= 1


def _threads_in_use(threads: int | None) -> int:
    from .._threads import get_num_threads, max_threads

    if threads is None:
        return get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int or None, got {threads!r}")
    if not 1 <= int(threads) <= max_threads():
        raise ValueError(f"threads must be between 1 and NUMBA_NUM_THREADS = {max_threads()}, got {threads}")
    return int(threads)


def measure_peak_gflops(threads: int, seconds: float = _GEMM_SECONDS) -> float:
    """Best fp32 GEMM rate (GFLOP/s) of SciPy's BLAS on ``threads`` threads, over about ``seconds``."""
    import threadpoolctl
    from scipy.linalg import blas

    n = _GEMM_SIDE
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    c = np.zeros((n, n), np.float32, order="F")
    best = math.inf
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        blas.sgemm(1.0, a, b, beta=0.0, c=c, overwrite_c=True)  # warm-up: starts the BLAS threads
        end = time.perf_counter() + seconds
        for i in range(50):
            t0 = time.perf_counter()
            blas.sgemm(1.0, a, b, beta=0.0, c=c, overwrite_c=True)
            t1 = time.perf_counter()
            best = min(best, t1 - t0)
            if t1 > end and i >= 2:
                break
    return 2.0 * n**3 / best / 1e9


def measure_stream_gbs(threads: int, seconds: float = _COPY_SECONDS) -> float:
    """Best copy bandwidth (GB/s, bytes read + written) of ``threads`` threads copying a 32 MiB array."""
    count = _COPY_BYTES // 4
    src = np.ones(count, np.float32)
    dst = np.zeros(count, np.float32)  # touched once here, so page faults are not timed
    bounds = np.linspace(0, count, threads + 1).astype(np.int64)
    parts = [(dst[lo:hi], src[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    best = math.inf
    with ThreadPoolExecutor(max_workers=threads) as pool:
        def copy_all():
            if threads == 1:
                np.copyto(dst, src)
            else:
                list(pool.map(lambda p: np.copyto(*p), parts))
        copy_all()
        end = time.perf_counter() + seconds
        for i in range(50):
            t0 = time.perf_counter()
            copy_all()
            t1 = time.perf_counter()
            best = min(best, t1 - t0)
            if t1 > end and i >= 2:
                break
    return 2.0 * _COPY_BYTES / best / 1e9


def roofline(threads: int | None = None, refresh: bool = False) -> dict:
    """This machine's fp32 GEMM peak and streaming bandwidth at ``threads`` threads (measured once, cached).

    Parameters
    ----------
    threads : int, optional
        Thread count (default: fastdeconv's current one, :func:`fastdeconv.get_num_threads`).
    refresh : bool
        Measure again even when a measurement of this CPU and thread count is recorded.

    Returns
    -------
    dict
        ``peak_gflops`` (best ``sgemm`` of 1024-square float32 matrices, GFLOP/s), ``stream_gbs`` (best
        multi-threaded copy of 32 MiB, bytes read + written, GB/s), ``cpu`` (model and core count),
        ``threads``, and ``source``: ``"measured"`` in this call, else ``"cached"``. A measurement taken while
        the load average is above half the cores is kept in this process only (``source`` says so), so that
        a later, quieter process measures again instead of inheriting roofs that read low.

    Raises
    ------
    TypeError
        ``threads`` is not an int.
    ValueError
        ``threads`` is outside ``[1, NUMBA_NUM_THREADS]``.
    """
    from .._store import cache_dir, merge_records, read_records

    threads = _threads_in_use(threads)
    cpu = cpu_name()
    key = f"{cpu}|threads={threads}"
    with _lock:
        if not refresh:
            if key in _memo:
                return dict(_memo[key], source="cached")
            record = read_records(cache_dir() / FILE_NAME, _valid).get(key)
            if record is not None:
                _memo[key] = {"peak_gflops": float(record["peak_gflops"]), "stream_gbs": float(record["stream_gbs"]),
                              "cpu": cpu, "threads": threads}
                return dict(_memo[key], source="cached")
        quiet = _quiet()
        value = {"peak_gflops": round(measure_peak_gflops(threads), 1),
                 "stream_gbs": round(measure_stream_gbs(threads), 1), "cpu": cpu, "threads": threads}
        _memo[key] = value
        if not quiet:  # other work was running: the roofs may read low; keep them for this process only
            return dict(value, source="measured (other work was running: not cached)")
        merge_records(cache_dir() / FILE_NAME, {key: value}, _valid, keep_existing=not refresh)
        return dict(value, source="measured")


def _quiet() -> bool:
    """Whether the machine looks idle enough to record a measurement for later processes (load average below
    half the cores; True where the load average is not available)."""
    try:
        return os.getloadavg()[0] < 0.5 * (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return True
