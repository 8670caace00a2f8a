"""Threads: set_num_threads / get_num_threads, NUMBA_NUM_THREADS, bitwise reproducibility, concurrent calls."""

import contextlib
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from conftest import METHODS, tolerance
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _geometry as geo
from fastdeconv import _threads

# (x shape, weight shape, geometry): 1-D, 2-D and 3-D, groups, dilation, asymmetric pads, big enough that the
# output is split into several tiles per thread
GEOMETRIES = [
    ((2, 6, 300), (6, 4, 5), {"stride": 3, "padding": 2, "dilation": 2, "output_padding": 1}),
    ((2, 8, 17, 19), (8, 3, 4, 3), {"stride": (2, 3), "padding": ((1, 0), (2, 1)), "groups": 2}),
    ((1, 4, 5, 6, 7), (4, 5, 3, 2, 3), {"stride": (1, 2, 2), "padding": 1, "dilation": (2, 1, 1)}),
    ((3, 16, 12, 12), (16, 8, 4, 4), {"stride": 2, "padding": 1}),
    # channel-heavy: the BLAS (GEMM) variants, whose BLAS thread count follows set_num_threads too
    ((2, 128, 8, 8), (128, 64, 2, 2), {"stride": 2}),
    ((1, 96, 5, 7), (96, 48, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
]


@pytest.fixture
def restore_threads():
    yield
    fd.set_num_threads(_threads.max_threads())


def _inputs(x_shape, w_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", range(len(GEOMETRIES)))
def test_bitwise_identical_across_calls_and_thread_counts(geometry, dtype, restore_threads):
    x_shape, w_shape, kw = GEOMETRIES[geometry]
    x, w = _inputs(x_shape, w_shape, dtype)
    bias = np.linspace(-1, 1, w_shape[1] * kw.get("groups", 1)).astype(dtype)
    counts = sorted({1, _threads.max_threads()})
    expected = conv_transpose_ref(x, w, bias, **kw)
    for method in METHODS:
        results = []
        for n in counts:
            fd.set_num_threads(n)
            assert fd.get_num_threads() == n
            results += [fd.conv_transpose(x, w, bias, method=method, **kw) for _ in range(2)]
        np.testing.assert_allclose(results[0], expected, **tolerance(dtype))
        for r in results[1:]:
            assert r.dtype == results[0].dtype
            assert np.array_equal(r, results[0]), f"{method}: not bitwise identical across calls/thread counts"


def test_concurrent_calls_from_python_threads():
    jobs = []
    for i, (x_shape, w_shape, kw) in enumerate(GEOMETRIES):
        for dtype in (np.float32, np.float64):
            x, w = _inputs(x_shape, w_shape, dtype, seed=i)
            for method in METHODS:
                jobs.append((x, w, kw, method, fd.conv_transpose(x, w, method=method, **kw)))
    barrier = threading.Barrier(4)

    def run(job):
        x, w, kw, method, expected = job
        try:
            barrier.wait(timeout=10)  # the first four calls start together
        except threading.BrokenBarrierError:
            pass
        return [np.array_equal(fd.conv_transpose(x, w, method=method, **kw), expected) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(run, jobs * 2))
    assert all(all(o) for o in outcomes)


def _blas_counts():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


def _in_other_thread(fn):
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def test_blas_single_threaded_inside_a_call_from_any_python_thread(restore_threads):
    """A call's GEMMs run with one BLAS thread whichever Python thread makes it: threadpoolctl lets only the first
    thread that set a process-wide BLAS pool set it again, so a call from a second thread ran its GEMMs on the
    BLAS's own threads, whose split changes the bits on some BLAS kernels (OpenBLAS's Haswell one)."""
    from fastdeconv import _blas

    fd.set_num_threads(_threads.max_threads())  # the main thread sets the BLAS pool first

    def inside():
        with _blas.single_threaded_blas():
            return _blas_counts()

    assert all(n == 1 for n in inside())
    assert all(n == 1 for n in _in_other_thread(inside))
    assert all(n == _threads.max_threads() for n in _blas_counts())  # restored after


def test_set_num_threads_from_another_python_thread_reaches_blas(restore_threads):
    fd.set_num_threads(_threads.max_threads())
    _in_other_thread(lambda: fd.set_num_threads(1))
    assert all(n == 1 for n in _blas_counts())


def test_concurrent_conv_and_backward_calls_from_python_threads():
    """``conv`` and the gradients run their GEMMs on the worker pool too: same bits from any thread, at once."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 32, 9, 10)).astype(np.float32)
    w = rng.standard_normal((32, 24, 3, 3)).astype(np.float32)
    y = fd.conv_transpose(x, w, stride=2, padding=1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    jobs = [lambda: (fd.conv(y, w, stride=2, padding=1),),
            lambda: fd.conv_transpose_backward(gy, x, w, stride=2, padding=1)]
    expected = [job() for job in jobs]

    def same(i):
        return all(np.array_equal(a, b) for a, b in zip(jobs[i % 2](), expected[i % 2]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(same, range(16)))


def test_setting_holds_in_other_python_threads(restore_threads):
    fd.set_num_threads(1)
    seen = {}

    def worker():
        seen["get"] = fd.get_num_threads()
        _threads.apply_num_threads()
        seen["numba"] = numba.get_num_threads()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"get": 1, "numba": 1}


def test_blas_threads_follow(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fd.set_num_threads(1)
    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(n == 1 for n in blas)
    fd.set_num_threads(_threads.max_threads())
    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert all(n == _threads.max_threads() for n in blas)


def test_each_blas_is_primed_once_in_as_many_threads_at_once_as_the_pool_has(monkeypatch):
    from fastdeconv import _blas
    runs, lock = [], threading.Lock()

    def product(name):
        def run():
            start = time.perf_counter()
            time.sleep(0.01)
            with lock:
                runs.append((name, threading.get_ident(), start, time.perf_counter()))
        return run

    monkeypatch.setattr(_blas, "_products", lambda: [product("numpy"), product("scipy")])
    monkeypatch.setattr(_blas, "_controllers", [])
    first = _blas.blas_controllers()
    workers = numba.config.NUMBA_NUM_THREADS
    for name in ("numpy", "scipy"):
        mine = [r for r in runs if r[0] == name]
        assert len(mine) == workers * _blas.PRIMER_REPEATS
        assert len({r[1] for r in mine}) == workers
        # the threads' first products overlap: each holds a BLAS buffer of its own meanwhile
        firsts = [min((r for r in mine if r[1] == t), key=lambda r: r[2]) for t in {r[1] for r in mine}]
        assert max(r[2] for r in firsts) < min(r[3] for r in firsts)
    assert _blas.blas_controllers() == first
    _blas.blas_controllers(refresh=True)
    assert len(runs) == 2 * workers * _blas.PRIMER_REPEATS  # once per process, not per look-up


def test_the_primers_scipy_sgemm_computes_the_product():
    from fastdeconv import _blas
    sgemm = _blas._scipy_sgemm()
    assert sgemm is not None
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_allclose(_blas.scipy_sgemm_product(sgemm, a, b), a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, exc, words", [
    (0, ValueError, "between 1 and NUMBA_NUM_THREADS"),
    (-2, ValueError, "between 1 and NUMBA_NUM_THREADS"),
    (10_000, ValueError, "between 1 and NUMBA_NUM_THREADS"),
    (1.0, TypeError, "n must be an int"),
    ("2", TypeError, "n must be an int"),
    (True, TypeError, "n must be an int"),
    (None, TypeError, "n must be an int"),
])
def test_set_num_threads_validates(bad, exc, words, restore_threads):
    before = fd.get_num_threads()
    with pytest.raises(exc, match=words):
        fd.set_num_threads(bad)
    assert fd.get_num_threads() == before


def test_numpy_int_accepted(restore_threads):
    fd.set_num_threads(np.int64(1))
    assert fd.get_num_threads() == 1 and numba.get_num_threads() == 1


def test_numba_num_threads_environment_is_obeyed():
    code = (
        "import numpy as np, numba, fastdeconv as fd\n"
        "assert fd.get_num_threads() == 1 and numba.get_num_threads() == 1\n"
        "try:\n    fd.set_num_threads(2)\nexcept ValueError as e:\n    print('refused', e)\n"
        "x = np.ones((1, 2, 5, 5)); w = np.ones((2, 3, 3, 3))\n"
        "print(fd.conv_transpose(x, w, stride=2).sum())\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "refused n must be between 1 and NUMBA_NUM_THREADS = 1" in proc.stdout
    assert float(proc.stdout.split()[-1]) == 2 * 3 * 25 * 9


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or _threads.max_threads() < 2, reason="needs two CPUs and CPU affinity")
@pytest.mark.parametrize("refuse", [False, True])
def test_workers_kept_off_the_callers_cpu_during_a_call_only(refuse, monkeypatch):
    """During a parallel call (while the narrowing is on: after a late worker) the pool's workers may not run on
    the caller's CPU; afterwards their affinity is what it was, and where the OS refuses the change, the call
    still runs every chunk."""
    from fastdeconv import _runtime

    fd.set_num_threads(2)
    _runtime.run_parallel(lambda chunks: list(chunks), [0, 1])  # the pool's threads exist
    monkeypatch.setattr(_runtime, "_narrow_until", [time.monotonic() + 3600])
    if refuse:
        def refused(*args):
            raise PermissionError("affinity refused")
        monkeypatch.setattr(_runtime.os, "sched_setaffinity", refused)
    seen, done = [], []
    caller = []
    barrier = threading.Barrier(2, timeout=30)

    def work(chunks):
        mine = threading.get_native_id()
        if mine != caller[0]:
            seen.append((os.sched_getaffinity(0), _runtime.current_cpu()))
        barrier.wait()  # both threads inside the call at once
        done.extend(chunks)

    caller.append(threading.get_native_id())
    here = _runtime.current_cpu()
    before = {tid: os.sched_getaffinity(tid) for tid in _runtime._pool_tids}
    try:
        _runtime.run_parallel(work, list(range(6)))
    finally:
        fd.set_num_threads(_threads.max_threads())
    assert sorted(done) == list(range(6))
    assert len(seen) == 1
    mask, cpu = seen[0]
    if not refuse and here >= 0:
        assert here not in mask and cpu != here
    assert {tid: os.sched_getaffinity(tid) for tid in _runtime._pool_tids} == before
    assert not _runtime._narrowed


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or _threads.max_threads() < 2, reason="needs two CPUs and CPU affinity")
def test_a_late_worker_turns_the_narrowing_on_for_a_while(monkeypatch):
    """Workers are narrowed only for a while after one started late (queued behind the caller): with prompt
    hand-offs no call changes an affinity (two changes per pool thread and the migrations they cause cost more
    than many small calls' work); a late start turns the narrowing on for NARROW_FOR seconds."""
    from fastdeconv import _runtime

    fd.set_num_threads(2)
    try:
        monkeypatch.setattr(_runtime, "_narrow_until", [0.0])
        monkeypatch.setattr(_runtime, "LATE_WORKER", 3600.0)  # never late
        calls = []
        monkeypatch.setattr(_runtime, "_workers_off", lambda cpu: calls.append(cpu) or contextlib.nullcontext())
        for _ in range(5):
            _runtime.run_parallel(lambda chunks: list(chunks), [0, 1, 2, 3])
        assert calls == [] and _runtime._narrow_until[0] == 0.0
        monkeypatch.setattr(_runtime, "LATE_WORKER", -1.0)  # every start is late
        _runtime.run_parallel(lambda chunks: list(chunks), [0, 1, 2, 3])
        assert calls == [] and _runtime._narrow_until[0] > time.monotonic() + 0.5 * _runtime.NARROW_FOR
        _runtime.run_parallel(lambda chunks: list(chunks), [0, 1, 2, 3])
        assert len(calls) == 1  # narrowed while on
        monkeypatch.setattr(_runtime, "_narrow_until", [time.monotonic() - 1])  # the while is over
        monkeypatch.setattr(_runtime, "LATE_WORKER", 3600.0)
        _runtime.run_parallel(lambda chunks: list(chunks), [0, 1, 2, 3])
        assert len(calls) == 1
    finally:
        fd.set_num_threads(_threads.max_threads())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or _threads.max_threads() < 2, reason="needs two CPUs and CPU affinity")
def test_overlapping_calls_restore_the_workers_masks_once_the_last_ends():
    """Calls from several Python threads overlap: the first narrows the pool's threads, the last to end restores
    the masks they had before, whatever the order."""
    from fastdeconv import _runtime

    fd.set_num_threads(2)
    try:
        _runtime.run_parallel(lambda chunks: list(chunks), [0, 1])
    finally:
        fd.set_num_threads(_threads.max_threads())
    tids = list(_runtime._pool_tids)
    before = {tid: os.sched_getaffinity(tid) for tid in tids}
    cpus = sorted(os.sched_getaffinity(0))
    first = _runtime._workers_off(cpus[0])
    second = _runtime._workers_off(cpus[1])
    first.__enter__()
    narrowed = {tid: os.sched_getaffinity(tid) for tid in tids}
    assert all(cpus[0] not in m for m in narrowed.values())
    second.__enter__()
    assert {tid: os.sched_getaffinity(tid) for tid in tids} == narrowed
    first.__exit__(None, None, None)  # the first call ends before the second
    assert {tid: os.sched_getaffinity(tid) for tid in tids} == narrowed
    second.__exit__(None, None, None)
    assert {tid: os.sched_getaffinity(tid) for tid in tids} == before
    assert not _runtime._narrowed


@pytest.mark.skipif(not hasattr(os, "fork") or _threads.max_threads() < 2, reason="needs fork and two threads")
def test_parallel_call_in_a_forked_child():
    """A child forked after parallel calls (multiprocessing's default start method on Linux) gets a pool of its
    own: the parent's worker threads do not exist there, and waiting for them would hang."""
    code = (
        "import multiprocessing as mp, numpy as np, fastdeconv as fd\n"
        "fd.set_num_threads(2)\n"
        "x = np.ones((2, 64, 6, 6), np.float32); w = np.ones((64, 32, 4, 4), np.float32)\n"
        "y = fd.conv_transpose(x, w, stride=2, method='scatter')\n"
        "def child(q):\n"
        "    q.put(bool((fd.conv_transpose(x, w, stride=2, method='scatter') == y).all()))\n"
        "ctx = mp.get_context('fork'); q = ctx.Queue(); p = ctx.Process(target=child, args=(q,), daemon=True)\n"
        "p.start(); print('child', q.get(timeout=60))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "child True" in proc.stdout


# A forked child computes after each kernel ran in its parent: every variant forced (at a size that runs in
# parallel), the forward convolution (direct and GEMM), the gradients, zero_fill and the zero-fill route.
FORK_SCRIPT = r"""
import multiprocessing as mp, sys
import numpy as np
import fastdeconv as fd
from fastdeconv import _api, _cost, _geometry as geo
from fastdeconv import variants as registry

fd.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 8, 64, 64)).astype(np.float32)
w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
xc = rng.standard_normal((2, 3, 200, 200)).astype(np.float32)
wc = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
xg = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)
wg = rng.standard_normal((32, 64, 3, 3)).astype(np.float32)
plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 1, 1, 0, 1, 1)
variants = list(_cost.estimate(plan, 2))
# the channels-last variants: channel-rich NHWC data, and one channel (the channels-first kernels, same bytes)
xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
x1 = rng.standard_normal((2, 96, 96, 1)).astype(np.float32)
w1 = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
# the 1-D wide-stride variant (learned overlap-add): a plan of its own
xo = rng.standard_normal((1, 64, 40)).astype(np.float32)
wo = rng.standard_normal((64, 1, 128)).astype(np.float32)
wide_jobs = {"scatter-gemm-phases": geo.make_plan(xo.shape, wo.shape, xo.dtype, wo.dtype, 32, 48, 0, 1, 1)}
# ... and one output channel, read in place: channel-rich NHWC data to one channel, the overlap-add's NHWC twin
w_one = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
xol = np.ascontiguousarray(np.moveaxis(xo, 1, -1))
cl_cases = [(a, b, s, pad, m) for a, b, s, pad in ((xl, w, 1, 1), (x1, w1, 2, 1), (xl, w_one, 1, 1), (xol, wo, 32, 48))
            for m in ("auto", "scatter", "gather", "zerofill")]
cl_jobs = {}
for a, b, s, pad, m in cl_cases:
    p = geo.make_plan(a.shape, b.shape, a.dtype, b.dtype, s, pad, 0, 1, 1,
                      options=geo.PlanOptions(data_format="channels_last"))
    for name in registry.names(baseline=True, layout="channels_last"):
        record = registry.get(name)
        if name not in cl_jobs and record.applies(p) and record.candidate_for(p, m) and (
                record.baseline or record.estimate(p, 2) is not None):
            cl_jobs[name] = (p, a, b)


def job(name):
    if name in cl_jobs:
        p, a, b = cl_jobs[name]
        y = np.empty(p.out_shape, np.float32)
        _api.execute(p, a, b, None, y, request=geo.make_request(name))
        return y
    if name in wide_jobs:
        p = wide_jobs[name]
        y = np.empty(p.out_shape, np.float32)
        _api.execute(p, xo, wo, None, y, request=geo.make_request(name))
        return y
    if name in variants:
        y = np.empty(plan.out_shape, np.float32)
        _api.execute(plan, x, w, None, y, request=geo.make_request(name))
        return y
    if name == "zerofill":
        return fd.conv_transpose(xc, wc, stride=2, padding=1, method="zerofill")
    if name == "conv":
        return fd.conv(xc, wc, padding=1)
    if name == "conv-gemm":
        return fd.conv(xg, wg, padding=1)
    if name == "conv-depthwise":
        return fd.conv(x, wg[:8, :1], stride=2, padding=1, groups=8)
    if name == "backward":
        return np.concatenate([a.ravel() for a in fd.conv_transpose_backward(
            fd.conv_transpose(xc, wc, stride=2, padding=1), xc, wc, stride=2, padding=1)])
    if name == "zero_fill":
        return fd.zero_fill(xc, 2, 1)
    raise ValueError(name)


def child(name, parent):
    return name, bool(np.array_equal(job(name), parent))


if __name__ == "__main__":
    names = variants + list(cl_jobs) + list(wide_jobs) + ["zerofill", "conv", "conv-gemm", "conv-depthwise",
                                                          "backward", "zero_fill"]
    assert set(registry.VARIANTS) <= set(names), names
    ctx = mp.get_context("fork")
    for name in names:
        parent = job(name)  # the kernels of this job ran in the parent: now a child must compute
        with ctx.Pool(1) as pool:
            print(*pool.apply_async(child, (name, parent)).get(timeout=float(sys.argv[1])), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or _threads.max_threads() < 2, reason="needs fork and two threads")
def test_forked_pool_computes_after_every_kernel_ran_in_the_parent(tmp_path):
    """A fork-based multiprocessing.Pool after each variant, conv, the gradients and zero_fill ran in the parent:
    its worker returns the parent's bits (before, the first parallel numba kernel in the parent left a child to
    be terminated by numba's OpenMP layer at its first one, and the Pool waited forever)."""
    script = tmp_path / "fork_after_kernels.py"
    script.write_text(FORK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), "120"], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.split("\n")
    assert "Terminating" not in proc.stderr
    done = dict(line.split() for line in lines if line.strip())
    assert len(done) >= 14 and set(done.values()) == {"True"}, proc.stdout


@pytest.mark.skipif(_threads.max_threads() < 2, reason="needs two threads")
def test_chunked_task_runs_give_the_serial_bits_from_concurrent_threads(monkeypatch, restore_threads):
    """The kernels that split their tasks (direct forms, conv's correlation, the weight gradient, zero_fill) run
    them in chunks on fastdeconv's pool, any number of Python threads at once: small thresholds force many
    chunks on small layers, and every result equals the one-thread (all tasks in one call) bits."""
    from fastdeconv import _tasks
    from fastdeconv._kernels.gather import gather_serial
    from fastdeconv._kernels.scatter import scatter_serial
    from fastdeconv._tasks import gather, scatter
    from fastdeconv._tiling import tile_for

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 13, 17)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 4)).astype(np.float32)
    wc = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    kw = {"stride": (2, 3), "padding": ((1, 0), (2, 1)), "groups": 2}
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, kw["stride"], kw["padding"], 0, 2, 1)
    x5, w5 = x.reshape(2, 6, 1, 13, 17), w.reshape(6, 5, 1, 3, 4)
    bias = rng.standard_normal(10).astype(np.float32)
    args = (plan.groups, plan.arrays("stride"), plan.arrays("dilation"), plan.arrays("start"), tile_for(plan))

    def direct(kernel):
        y = np.full((2, 10, 1) + plan.out_shape[2:], np.nan, np.float32)
        kernel(x5, w5, bias, y, *args)
        return y

    jobs = {
        "scatter": (lambda: direct(scatter), lambda: direct(scatter_serial)),
        "gather": (lambda: direct(gather), lambda: direct(gather_serial)),
        "conv": (lambda: fd.conv(x, wc, stride=(1, 2), padding=1, groups=2), None),
        "backward": (lambda: fd.conv_transpose_backward(fd.conv_transpose(x, w, **kw), x, w, **kw)[1], None),
        "zero_fill": (lambda: fd.zero_fill(x, (2, 3), 1), None),
    }
    fd.set_num_threads(1)
    expected = {name: (serial or run)() for name, (run, serial) in jobs.items()}
    fd.set_num_threads(2)
    monkeypatch.setattr(_tasks, "SERIAL_WORK", 0)
    monkeypatch.setattr(_tasks, "CHUNK_WORK", 1)
    chunked, original = [], _tasks.run_parallel

    def counted(work, tasks):
        chunked.append(len(tasks))
        original(work, tasks)

    monkeypatch.setattr(_tasks, "run_parallel", counted)
    barrier = threading.Barrier(4)

    def run(name):
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass
        return [np.array_equal(jobs[name][0](), expected[name]) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = dict(zip(list(jobs) * 2, pool.map(run, list(jobs) * 2)))
    assert all(all(o) for o in outcomes.values()), outcomes
    assert len(chunked) >= 30 and min(chunked) >= 2  # every call went through the pool, in several chunks
    assert not any(np.isnan(expected[name]).any() for name in ("scatter", "gather"))



POOL_SIZE_SCRIPT = r"""
import dataclasses, sys
import numpy as np
import fastdeconv as fd
from fastdeconv import _api, _cost, _forward, _geometry as geo, _threads

assert _threads.max_threads() == int(sys.argv[2])
rng = np.random.default_rng(0)
out = {}
LAYERS = [((4, 128, 8, 8), (128, 64, 4, 4), 2, 1), ((1, 64, 32, 32), (64, 3, 4, 4), 2, 1),
          ((2, 8, 64, 64), (8, 4, 3, 3), 1, 1), ((1, 16, 48, 48), (16, 1, 4, 4), 2, 1)]
for i, (xs, ws, s, p) in enumerate(LAYERS):
    groups = xs[1] if ws[1] == 1 else 1
    for dt in (np.float32, np.float64):
        x = rng.standard_normal(xs).astype(dt)
        w = rng.standard_normal(ws).astype(dt)
        plan = geo.make_plan(xs, ws, x.dtype, w.dtype, s, p, 0, groups, 1)
        for v in _cost.estimate(plan, 1):
            y = np.empty(plan.out_shape, plan.dtype)
            _api.execute(plan, x, w, None, y, request=geo.make_request(v))
            out[f"{i} {dt.__name__} {v}"] = y
        out[f"{i} {dt.__name__} zerofill"] = fd.conv_transpose(x, w, stride=s, padding=p, groups=groups,
                                                                method="zerofill")
        g = np.linspace(-1, 1, int(np.prod(plan.out_shape)), dtype=dt).reshape(plan.out_shape)
        gx, gw, _ = fd.conv_transpose_backward(g, x, w, stride=s, padding=p, groups=groups)
        out[f"{i} {dt.__name__} backward"] = np.concatenate([gx.ravel(), gw.ravel()])
        if groups == 1:  # a stride-1 layer conv_transpose runs with Winograd takes that BLAS-backed form
            wc = np.ascontiguousarray(w.swapaxes(0, 1))
            cplan = _forward.make_conv_plan(x.shape, wc.shape, x.dtype, wc.dtype, 1, 1)
            out[f"{i} {dt.__name__} conv"] = fd.conv(x, wc, padding=1)
            out[f"{i} {dt.__name__} route"] = np.array(_forward.as_transposed(cplan) is not None)
        out[f"{i} {dt.__name__} zero_fill"] = fd.zero_fill(x, s, p)
np.savez(sys.argv[1], **out)
"""

# sums in an order fixed by the shapes alone: the same bits whatever numba's pool size
POOL_EXACT = ("scatter-direct", "gather-direct", "gather-plane", "zerofill", "backward", "conv", "zero_fill")


@pytest.mark.skipif(_threads.max_threads() < 2, reason="needs two threads")
def test_numba_kernels_give_the_same_bits_under_every_pool_size(tmp_path):
    """Processes started with NUMBA_NUM_THREADS=1 and 2 (an operator unpickled elsewhere, a Dask worker): the
    numba-kernel variants, conv, the gradients and zero_fill agree bitwise; the BLAS-backed variants, whose
    chunks follow the pool size, agree to rounding (what README and docs/variants.md promise), and so does a
    stride-1 conv that runs as conv_transpose's Winograd form."""
    script = tmp_path / "pool_size.py"
    script.write_text(POOL_SIZE_SCRIPT)
    results = {}
    for n in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(n), "FASTDECONV_CALIBRATE": "0"}
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / f"pool{n}.npz"), str(n)], env=env,
                              capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        results[n] = np.load(tmp_path / f"pool{n}.npz")
    assert set(results[1].files) == set(results[2].files)
    exact = [k for k in results[1].files if k.split()[-1] in POOL_EXACT]
    assert {k.split()[-1] for k in exact} == set(POOL_EXACT)
    # (the planner ranks Winograd for the pool size, so whether a conv takes that route may change with it)
    winograd = {k.rsplit(" ", 1)[0] for r in results.values() for k in r.files if k.endswith(" route") and r[k]}
    for k in results[1].files:
        a, b = results[1][k], results[2][k]
        if k.endswith(" route"):
            continue
        if k in exact and not (k.endswith(" conv") and k.rsplit(" ", 1)[0] in winograd):
            assert a.dtype == b.dtype and np.array_equal(a, b), k
        else:
            np.testing.assert_allclose(b, a, err_msg=k, **tolerance(a.dtype))


@pytest.mark.skipif(_threads.max_threads() < 2, reason="needs two threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_and_gradients_same_bits_for_every_thread_count(dtype, restore_threads):
    """conv's and the gradients' GEMM path (channel-rich layers) runs single-threaded BLAS on products of fixed
    shapes: set_num_threads does not change a bit (before, it ran BLAS on set_num_threads' thread count, and
    OpenBLAS's multi-threaded kernels summed some products in another order)."""
    rng = np.random.default_rng(1)
    layers = [((4, 32, 20, 20), (48, 32, 3, 3), {"stride": 2, "padding": 1}),
              ((2, 64, 16, 16), (32, 64, 3, 3), {"padding": 1}),
              ((3, 32, 9, 11), (32, 16, 3, 3), {"stride": (1, 2), "padding": 1, "groups": 2}),
              ((1, 4, 40, 40), (4, 4, 3, 3), {"padding": 1})]  # (direct kernels)
    for xs, ws, kw in layers:
        x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
        results = []
        for n in (1, _threads.max_threads(), 1):
            fd.set_num_threads(n)
            y = fd.conv(x, w, **kw)  # y is the transposed convolution's input, w its weight
            shape = geo.make_plan(y.shape, w.shape, y.dtype, w.dtype, kw.get("stride", 1), kw["padding"], 0,
                                  kw.get("groups", 1), 1).out_shape
            g = np.linspace(-1, 1, math.prod(shape), dtype=dtype).reshape(shape)
            results.append([y, *fd.conv_transpose_backward(g, y, w, **kw)])
        for got in results[1:]:
            for a, b in zip(results[0], got):
                assert a.dtype == b.dtype and np.array_equal(a, b), (xs, ws, kw)
