"""The measured choice (``_calibrate``): one decision per key and process, shared safely through the disk."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import tolerance, within
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _api, _calibrate, _compiled, _cost, variants
from fastdeconv import _geometry as geo
from fastdeconv.tools.cli import main as cli

# a small 2x up-convolution (21 -> 40 channels): the model rates several variants within 1.6x of each other
X_SHAPE, W_SHAPE, GEOMETRY = (1, 21, 32, 32), (21, 40, 3, 3), {"stride": 2, "padding": 1}
TIMEOUT = 60.0


def _reset():
    _calibrate.forget()
    fd.clear_caches()


@pytest.fixture
def calibrating(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTDECONV_CALIBRATE", "1")
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    _reset()
    yield tmp_path
    _reset()


@pytest.fixture
def all_ready(monkeypatch):
    """Every candidate counts as compiled (the tests that measure on purpose compile them)."""
    monkeypatch.setattr(variants, "ready", lambda variant, dtype: True)


def _plan():
    return geo.make_plan(X_SHAPE, W_SHAPE, np.dtype(np.float32), np.dtype(np.float32), GEOMETRY["stride"],
                         GEOMETRY["padding"], 0, 1, 1)


def _names():
    return _calibrate.candidates(_plan(), _cost.choose(_plan()).estimates)


def _inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal(X_SHAPE).astype(np.float32), rng.standard_normal(W_SHAPE).astype(np.float32)


def _within(fn, *args):
    """``fn(*args)``; fail instead of hanging the suite."""
    return within(TIMEOUT, fn, *args)[0]


def _fake_clock(monkeypatch, pace):
    """perf_counter advanced only by the fake runs: ``pace(variant)`` seconds each."""
    clock = [0.0]
    monkeypatch.setattr(_calibrate.time, "perf_counter", lambda: clock[0])
    return lambda v: clock.__setitem__(0, clock[0] + pace(v))


def test_the_example_is_ambiguous(calibrating):
    assert len(_names()) >= 2


def test_a_first_call_measures_nothing_and_runs_the_models_pick(calibrating, monkeypatch, all_ready):
    """``auto`` is deterministic: a call that did not ask to tune decides from the model alone (no timing, no
    record), however close the candidates are rated, through a one-off call and an operator alike."""
    monkeypatch.setattr(_calibrate, "measure", lambda *a: pytest.fail("a first call measured"))
    before = _calibrate.measurements
    x, w = _inputs()
    y = fd.conv_transpose(x, w, **GEOMETRY)
    op_y = fd.ConvTranspose(w, **GEOMETRY)(x)
    assert np.array_equal(y, op_y)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, **GEOMETRY), **tolerance(np.float32))
    assert _api.prepared(_plan()).variant == _names()[0] == fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY).variant
    assert not (calibrating / "calibration.json").exists() and _calibrate.measurements == before


def test_tuning_measures_keeps_the_fastest_and_stores_it(calibrating, monkeypatch, all_ready):
    names = _names()
    slowest_first = {name: 1.0 + i for i, name in enumerate(reversed(names))}  # the model's last is "fastest"

    def fake_measure(plan, candidates, run):
        for name in candidates:
            run(name)  # every candidate really runs (and writes the whole output)
        return {"variant": names[-1], "seconds": {n: slowest_first[n] for n in candidates}, "model": names[0]}

    monkeypatch.setattr(_calibrate, "measure", fake_measure)
    x, w = _inputs()
    y = fd.ConvTranspose(w, tune=True, **GEOMETRY)(x)  # measuring is a request (FFTW's MEASURE)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, **GEOMETRY), **tolerance(np.float32))
    assert _api.prepared(_plan()).variant == names[-1]  # a one-off call follows the process's decision
    # later calls: no measurement, same variant, bitwise the same result
    monkeypatch.setattr(_calibrate, "measure", lambda *a: pytest.fail("measured twice"))
    assert np.array_equal(fd.conv_transpose(x, w, **GEOMETRY), fd.conv_transpose(x, w, **GEOMETRY))
    # plan() reports the measurement; the record is on disk and read back by a fresh process
    choice = fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY)
    assert choice.variant == names[-1] and "measured fastest" in choice.reason
    stored = json.loads((calibrating / "calibration.json").read_text())
    assert stored[_calibrate.key(_plan())]["variant"] == names[-1]
    _reset()
    assert _api.prepared(_plan()).variant == names[-1] and not _api.prepared(_plan()).decided
    assert _calibrate.decide(_plan(), _cost.choose(_plan()).estimates, run=lambda v: pytest.fail("ran")) == names[-1]


def test_real_measurement_runs_every_candidate(calibrating, all_ready):
    x, w = _inputs()
    y = fd.ConvTranspose(w, tune=True, **GEOMETRY)(x)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, **GEOMETRY), **tolerance(np.float32))
    record = _calibrate.recorded(_plan())
    names = _names()
    seconds = record["seconds"]
    assert set(seconds) == set(names) and record["model"] == names[0]
    assert record["rounds"] in (_calibrate.ROUNDS, _calibrate.LONG_ROUNDS)
    assert sum(record["wins"].values()) <= record["rounds"]
    fastest = min(seconds, key=seconds.get)  # or, within a measured tie, the model's first choice
    assert record["variant"] == fastest or (record["variant"] == names[0] and (
        seconds[names[0]] <= _calibrate.TIE * seconds[fastest] or 2 * record["wins"][fastest] <= record["rounds"]))
    assert all(sec > 0 for sec in record["seconds"].values())
    assert _api.prepared(_plan()).variant == record["variant"]


def test_disabled_and_corrupt_cache(calibrating, monkeypatch):
    (calibrating / "calibration.json").write_text("{not json")
    _calibrate.forget()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _calibrate.recorded(_plan()) is None  # a corrupt file is ignored, then replaced on the next store
        key = _calibrate.key(_plan())
        for bad in ({"variant": "scatter-gemm", "seconds": [1]}, {"variant": "nope", "seconds": {"scatter-gemm": 1.0}},
                    {"variant": "scatter-gemm", "seconds": {"scatter-gemm": -1}}, ["scatter-gemm"],
                    {"variant": ["x"], "seconds": {"x": 1.0}}, {"variant": "scatter-gemm", "seconds": {"scatter-gemm":
                                                                                                      float("inf")}},
                    {"variant": "scatter-gemm", "seconds": {"scatter-gemm": True}}):
            (calibrating / "calibration.json").write_text(json.dumps({key: bad}))
            _reset()
            assert _calibrate.recorded(_plan()) is None, bad
            assert fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY).variant == _cost.choose(_plan()).variant
    monkeypatch.setenv("FASTDECONV_CALIBRATE", "0")
    assert _calibrate.candidates(_plan(), _cost.choose(_plan()).estimates) == []
    x, w = _inputs()
    fd.conv_transpose(x, w, **GEOMETRY)
    assert _api.prepared(_plan()).variant == _cost.choose(_plan()).variant


def test_tiny_and_fixed_plans_are_not_measured(calibrating):
    tiny = geo.make_plan((1, 4, 3, 3), (4, 2, 3, 3), np.dtype(np.float32), np.dtype(np.float32), 2, 1, 1, 1, 1)
    assert _calibrate.candidates(tiny, _cost.choose(tiny).estimates) == []
    fixed = geo.make_plan(X_SHAPE, W_SHAPE, np.dtype(np.float32), np.dtype(np.float32), 2, 1, 0, 1, 1)
    pinned = geo.make_request("scatter-gemm")
    assert _calibrate.candidates(fixed, _cost.choose(fixed, pinned).estimates, pinned) == []
    assert _calibrate.decide(fixed, _cost.choose(fixed, pinned).estimates, run=lambda v: pytest.fail("ran"),
                             request=pinned) == "scatter-gemm"


def test_budget_drops_the_slowest_candidates_first(calibrating):
    plan = _plan()
    b = _calibrate.BUDGET / (2 * _calibrate.ROUNDS)  # measuring time of candidates whose estimates sum to b
    ranked = (("scatter-direct", 0.3 * b), ("gather-direct", 0.4 * b), ("scatter-gemm", 0.45 * b))
    assert _calibrate.candidates(plan, ranked) == ["scatter-direct", "gather-direct"]  # 1.15 b: the third goes
    assert _calibrate.candidates(plan, ranked[:2]) == ["scatter-direct", "gather-direct"]  # 0.7 b fits
    over = (("scatter-direct", 0.3 * _calibrate.BUDGET), ("gather-direct", 0.35 * _calibrate.BUDGET))
    assert _calibrate.candidates(plan, over) == []  # the two best alone would take too long


def test_long_calls_get_fewer_rounds_of_one_run(calibrating):
    """From LONG_CALL on: LONG_ROUNDS rounds, a block is one run after the first round; the order rotates, the
    model's pick last in the first round; layers of ~50 ms still fit the budget."""
    plan = _plan()
    long = _calibrate.LONG_CALL
    assert _calibrate.rounds(long) == _calibrate.LONG_ROUNDS and _calibrate.rounds(0.5 * long) == _calibrate.ROUNDS
    half = _calibrate.BUDGET / (_calibrate.LONG_ROUNDS + 1)
    ranked = (("scatter-gemm", 0.45 * half), ("gather-gemm", 0.5 * half))
    assert _calibrate.candidates(plan, ranked) == ["scatter-gemm", "gather-gemm"]
    calls = []
    record = _calibrate.measure(plan, ["scatter-gemm", "gather-gemm"], lambda v: (calls.append(v), time.sleep(long)))
    g, s = "gather-gemm", "scatter-gemm"  # blocks of two in the first round (its first run loads the kernel)
    assert calls == [g, g, s, s] + [s, g] + [g, s]
    assert record["rounds"] == _calibrate.LONG_ROUNDS


def test_short_calls_run_in_blocks_in_rotating_rounds(calibrating, monkeypatch):
    """Short calls: ROUNDS rounds, each candidate once per round (a block of runs lasting BLOCK_TIME after its
    first), the order rotated by one per round."""
    calls = []
    monkeypatch.setattr(_calibrate, "BLOCK_TIME", 4.0)  # (exact binary fractions: no rounding in the sums)
    monkeypatch.setattr(_calibrate, "LONG_CALL", 100.0)
    tick = _fake_clock(monkeypatch, lambda v: 1.0)
    names = ["scatter-gemm", "gather-gemm", "gather-gemm-cols"]
    record = _calibrate.measure(_plan(), names, lambda v: (calls.append(v), tick(v)))
    per_block = 1 + 4  # the first run, then runs until BLOCK_TIME
    blocks = [calls[i] for i in range(0, len(calls), per_block)]
    assert len(calls) == per_block * len(names) * _calibrate.ROUNDS
    assert all(calls[i:i + per_block] == [calls[i]] * per_block for i in range(0, len(calls), per_block))
    order = names[1:] + names[:1]
    assert blocks == [v for r in range(_calibrate.ROUNDS) for v in order[r % 3:] + order[:r % 3]]
    assert record["variant"] == "scatter-gemm" and record["wins"] == dict.fromkeys(names, 0)  # all equal: a tie


@pytest.mark.parametrize("slower, kept", [(1.02, "scatter-gemm"), (1.5, "gather-gemm")])
def test_a_measured_tie_keeps_the_models_choice(calibrating, monkeypatch, slower, kept):
    """The model's first candidate stays unless another one measured more than TIE faster."""
    pace = {"scatter-gemm": 1e-3 * slower, "gather-gemm": 1e-3}
    tick = _fake_clock(monkeypatch, pace.get)
    record = _calibrate.measure(_plan(), ["scatter-gemm", "gather-gemm"], tick)
    assert record["variant"] == kept
    assert record["seconds"] == pytest.approx(pace)
    assert record["wins"] == {"scatter-gemm": 0, "gather-gemm": _calibrate.ROUNDS}


def test_a_faster_median_without_a_majority_of_rounds_is_a_tie():
    names = ["scatter-gemm", "gather-gemm"]
    # the challenger's median is 3x better, but it wins only one round in five: noise, the model's pick stays
    times = {"scatter-gemm": [0.5, 0.5, 3.0, 3.0, 3.0], "gather-gemm": [1.0, 1.0, 1.0, 10.0, 10.0]}
    record = _calibrate.verdict(names, times)
    assert record["variant"] == "scatter-gemm" and record["wins"] == {"scatter-gemm": 4, "gather-gemm": 1}
    assert record["seconds"] == {"scatter-gemm": 3.0, "gather-gemm": 1.0}
    # a majority and a clear margin: the challenger
    times = {"scatter-gemm": [2.0, 2.0, 2.0, 0.5, 0.5], "gather-gemm": [1.0, 1.0, 1.0, 1.0, 1.0]}
    assert _calibrate.verdict(names, times)["variant"] == "gather-gemm"
    # a majority but within TIE: the model's pick
    times = {"scatter-gemm": [1.04] * 5, "gather-gemm": [1.0] * 5}
    assert _calibrate.verdict(names, times)["variant"] == "scatter-gemm"


def test_a_record_of_a_non_candidate_decides_nothing(calibrating):
    """plan() reports, and a call runs, a recorded variant only when it is among the plan's current candidates."""
    choice = _cost.choose(_plan())
    names = _names()
    outsider = next(v for v, _ in choice.estimates if v not in names)
    _calibrate.store(_calibrate.key(_plan()), {"variant": outsider, "seconds": {outsider: 1e-6, names[0]: 1.0}})
    _reset()
    assert _calibrate.deciding_record(_plan(), names) is None
    assert fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY).variant == choice.variant
    assert _api.prepared(_plan()).variant == choice.variant and not _api.prepared(_plan()).decided


def test_racing_threads_make_one_calibration_and_get_one_result(calibrating, monkeypatch, all_ready):
    """8 threads make the first call at once, through two tuning operators (the plain and the general input
    path): one measurement, one variant, one result bit for bit."""
    names = _names()
    real, calls = _calibrate.measure, []

    def counting(plan, candidates, run):
        calls.append(threading.get_ident())
        time.sleep(0.05)  # (the others arrive while it measures)
        record = real(plan, candidates, run)
        return dict(record, variant=names[-1])  # not the model's pick: a second decider would differ

    monkeypatch.setattr(_calibrate, "measure", counting)
    x, w = _inputs()
    barrier, results = threading.Barrier(8), [None] * 8
    ops = [fd.ConvTranspose(w, stride=2, padding=1, tune=True), fd.ConvTranspose(w, stride=[2, 2], padding=1,
                                                                                 tune=True)]

    def call(i):
        barrier.wait()
        results[i] = ops[i % 2](x if i % 4 < 2 else list(x))  # (a list of arrays: the general input path)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert len(calls) == 1
    assert all(np.array_equal(r, results[0]) for r in results)
    assert _calibrate.decisions()[_calibrate.key(_plan())][0] == names[-1]
    assert _api.prepared(_plan()).variant == names[-1]
    np.testing.assert_allclose(results[0], conv_transpose_ref(x, w, **GEOMETRY), **tolerance(np.float32))


def test_a_failed_measurement_hands_over(calibrating):
    """A decider whose run raises decides nothing: the next caller decides."""
    ranked = _cost.choose(_plan()).estimates

    def boom(variant):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _calibrate.decide(_plan(), ranked, run=boom)
    assert _calibrate.decisions() == {}
    assert _calibrate.decide(_plan(), ranked) == ranked[0][0]


def test_readiness_skips_an_uncompiled_candidate(calibrating, monkeypatch):
    names = _names()
    ran = []
    tick = _fake_clock(monkeypatch, lambda v: 1e-3 if v == names[0] else 1e-4)
    variant = _calibrate.decide(_plan(), _cost.choose(_plan()).estimates, run=lambda v: (ran.append(v), tick(v)),
                                ready=lambda v: v != names[1])
    assert names[1] not in ran and names[0] in ran
    record = _calibrate.decisions()[_calibrate.key(_plan())][1]
    assert names[1] in record["skipped"] and variant == record["variant"]
    assert not (calibrating / "calibration.json").exists()  # a partial measurement decides this process only
    # with only the model's pick ready: nothing is measured, the model's pick is kept
    _reset()
    ran.clear()
    assert _calibrate.decide(_plan(), _cost.choose(_plan()).estimates, run=lambda v: ran.append(v),
                             ready=lambda v: v == names[0]) == names[0]
    assert ran == []


def test_compiled_probe():
    from numba import njit

    @njit(cache=False)
    def twice(a):
        return a * 2

    assert not _compiled.ready([twice], np.float32)
    twice(np.ones(2, np.float32))
    assert _compiled.ready([twice], np.float32) and not _compiled.ready([twice], np.float64)
    assert not _compiled.ready([len], np.float32) and not _compiled.ready(None, np.float32)
    assert _compiled.groups_ready([(len, twice)], np.float32)
    assert variants.ready("nope", np.float32) is False


def test_run_none_fixes_the_models_pick(calibrating):
    ranked = _cost.choose(_plan()).estimates
    assert _calibrate.decide(_plan(), ranked, run=None) == ranked[0][0]
    assert _calibrate.decide(_plan(), ranked, run=lambda v: pytest.fail("measured after a fixed pick")) == ranked[0][0]
    assert not (calibrating / "calibration.json").exists()  # in memory only


def test_dask_first_then_in_memory_is_bitwise_equal(calibrating, monkeypatch, all_ready):
    da = pytest.importorskip("dask.array")
    import fastdeconv.dask as fdd

    monkeypatch.setattr(_calibrate, "measure", lambda *a: pytest.fail("the in-memory call measured after Dask"))
    x, w = _inputs()
    lazy = fdd.conv_transpose(da.from_array(x, chunks=x.shape), w, **GEOMETRY)
    plans = [task[5] for task in dict(lazy.__dask_graph__()).values()
             if isinstance(task, tuple) and len(task) > 3 and isinstance(task[3], geo.Plan)]
    first = lazy.compute(scheduler="synchronous")
    assert np.array_equal(first, fd.conv_transpose(x, w, **GEOMETRY))
    assert plans and {p.variant for p in plans} == {_api.prepared(_plan()).variant}


CHILD = """
import sys, time
import numpy as np
from fastdeconv import _calibrate
from fastdeconv import _geometry as geo
me = int(sys.argv[1])
ranked = (("scatter-gemm", 1e-3), ("gather-gemm", 1.1e-3))
def plan(cin):
    return geo.make_plan((1, cin, 8, 8), (cin, 4, 3, 3), np.dtype(np.float32), np.dtype(np.float32), 2, 1, 0, 1, 1)
def run(v):  # every process finds "its" variant clearly faster
    time.sleep(2e-4 if v == ranked[me % 2][0] else 1e-3)
for j in range(5):
    _calibrate.decide(plan(100 + 10 * me + j), ranked, run)
print(_calibrate.decide(plan(7), ranked, run))
"""


def test_spawned_processes_share_the_cache(calibrating):
    """4 processes deciding 5 plans each and one plan together: no record lost, one decision for the shared plan."""
    env = dict(os.environ, PYTHONPATH=str(Path(fd.__file__).parent.parent), FASTDECONV_CALIBRATE="1",
               FASTDECONV_CACHE_DIR=str(calibrating))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(i)], env=env, stdout=subprocess.PIPE, text=True)
             for i in range(4)]
    try:
        outputs = [p.communicate(timeout=180)[0].strip() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * 4
    records = json.loads((calibrating / "calibration.json").read_text())
    assert len(records) == 21 and all(_calibrate.valid_record(k, r) for k, r in records.items())
    shared = next(r for k, r in records.items() if "cin=7|" in k)
    assert set(outputs) == {shared["variant"]}  # the first recorded decision won in every process


@pytest.mark.parametrize("case", ["wrong schema", "deep nesting", "fifo", "directory", "binary", "huge"])
def test_corrupt_cache_never_raises_or_hangs(calibrating, monkeypatch, case):
    path = calibrating / "calibration.json"
    key = _calibrate.key(_plan())
    if case == "wrong schema":
        path.write_text(json.dumps({key: {"variant": ["x"], "seconds": {"x": 1.0}}}))
    elif case == "deep nesting":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "directory":
        path.mkdir()
    elif case == "binary":
        path.write_bytes(os.urandom(4096))
    else:
        path.write_text(json.dumps({key: {"variant": "scatter-gemm", "seconds": {"scatter-gemm": 1.0}},
                                    "pad": "x" * (1 << 21)}))
    ranked = _cost.choose(_plan()).estimates
    names = _names()
    tick = _fake_clock(monkeypatch, lambda v: 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _within(_calibrate.current, _plan(), ranked) == (ranked[0][0], None)
        assert _within(_calibrate.decide, _plan(), ranked, tick) in names
        assert _within(lambda: fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY)).variant in names
    if case != "directory":  # the bad file was replaced by a good one
        assert _calibrate.recorded(_plan())["variant"] in names


def test_public_calibration_api(calibrating, monkeypatch, tmp_path_factory):
    import fastdeconv.calibration as cal

    assert fd.calibration is cal and cal.show() == {} and cal.cache_file() == calibrating / "calibration.json"
    ranked = _cost.choose(_plan()).estimates
    tick = _fake_clock(monkeypatch, lambda v: 1e-3)
    _calibrate.decide(_plan(), ranked, tick)
    shown = cal.show()
    assert list(shown) == [_calibrate.key(_plan())] and shown[_calibrate.key(_plan())]["variant"] == ranked[0][0]
    out = tmp_path_factory.mktemp("export") / "wisdom.json"
    assert cal.export(out) == 1
    cal.clear()
    assert cal.show() == {} and _calibrate.decisions() == {}
    assert cal.import_(out) == 1 and cal.show() == shown
    assert cal.import_(out) == 0  # already recorded
    bad = out.parent / "bad.json"
    bad.write_text("[1]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="not a calibration file"):
            cal.import_(bad)
    with pytest.raises(FileNotFoundError):
        cal.import_(out.parent / "missing.json")
    with pytest.raises(TypeError, match="path must be"):
        cal.export(3)
    monkeypatch.undo()
    monkeypatch.setenv("FASTDECONV_CALIBRATE", "1")
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(calibrating))
    assert cal.remeasure((1, 4, 3, 3), (4, 2, 3, 3), stride=2, padding=1) is None  # tiny: nothing to measure
    with pytest.raises(ValueError):
        cal.remeasure((1, 4, 3, 3), (5, 2, 3, 3))
    with pytest.raises(TypeError, match="dtype must be"):
        cal.remeasure((1, 4, 3, 3), (4, 2, 3, 3), dtype="not a dtype")


def test_remeasure_replaces_the_record(calibrating, monkeypatch):
    import fastdeconv.calibration as cal

    names = _names()
    _calibrate.store(_calibrate.key(_plan()), {"variant": names[-1], "seconds": {n: 1.0 for n in names}})
    record = cal.remeasure(X_SHAPE, W_SHAPE, **GEOMETRY)
    assert set(record["seconds"]) == set(names)
    assert _calibrate.recorded(_plan()) == record


def test_cli_calibrate(calibrating, monkeypatch, capsys, tmp_path_factory):
    ranked = _cost.choose(_plan()).estimates
    tick = _fake_clock(monkeypatch, lambda v: 1e-3)
    _calibrate.decide(_plan(), ranked, tick)
    assert cli(["calibrate"]) == 0 and cli(["calibrate", "--show"]) == 0
    out = capsys.readouterr().out
    assert "1 recorded choice(s)" in out and _calibrate.key(_plan()) in out
    wisdom = tmp_path_factory.mktemp("cli") / "w.json"
    assert cli(["calibrate", "--export", str(wisdom)]) == 0 and len(json.loads(wisdom.read_text())) == 1
    assert cli(["calibrate", "--clear"]) == 0 and not json.loads((calibrating / "calibration.json").read_text())
    assert cli(["calibrate", "--import", str(wisdom)]) == 0
    assert "imported 1 new record(s)" in capsys.readouterr().out
    for argv, flag in ((["calibrate", "--import", str(wisdom.parent / "nope.json")], "--import"),
                       (["calibrate", "--export", str(wisdom.parent / "no" / "dir.json")], "--export")):
        with pytest.raises(SystemExit) as exc:
            cli(argv)
        assert exc.value.code == 2 and flag in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["calibrate", "--show", "--clear"])
    assert exc.value.code == 2


def test_compiled_probe_reads_numbas_disk_cache(tmp_path):
    """A kernel compiled by another process into numba's cache is ready here without compiling it."""
    (tmp_path / "h2_probe_mod.py").write_text("from numba import njit\n\n\n@njit(cache=True)\n"
                                              "def triple(a):\n    return a * 3\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    subprocess.run([sys.executable, "-c", "import numpy as np, h2_probe_mod as m; m.triple(np.ones(2, np.float64))"],
                   env=env, check=True, timeout=120)
    sys.path.insert(0, str(tmp_path))
    try:
        import h2_probe_mod as m

        assert m.triple.signatures == []  # nothing compiled in this process
        assert _compiled.ready([m.triple], np.float64) and not _compiled.ready([m.triple], np.float32)
        assert m.triple.signatures == []  # the probe compiled nothing
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("h2_probe_mod", None)


def test_compile_beside_compiles_in_a_child_into_the_cache(tmp_path):
    """``_compiled.compile_beside_all`` compiles a kernel for the given numba types in another process:
    afterwards it is available here (from numba's cache) without having been compiled here; a kernel already
    available starts no child."""
    (tmp_path / "h3_beside_mod.py").write_text("from numba import njit\n\n\n@njit(cache=True)\n"
                                               "def double(a):\n    return a * 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import h3_beside_mod as m
        from numba import typeof

        args = (np.ones(3, np.float32),)
        signature = tuple(typeof(a) for a in args)
        assert not _compiled.available(m.double, signature)
        beside = _compiled.compile_beside_all(((m.double, signature),))
        assert beside._proc is not None  # a child was started
        beside.wait()
        assert m.double.signatures == [] and _compiled.available(m.double, signature)
        assert _compiled.compile_beside_all(((m.double, signature),))._proc is None  # available: nothing to do
        assert np.array_equal(m.double(*args), np.full(3, 2, np.float32))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("h3_beside_mod", None)


def test_compile_split_compiles_the_beside_callees_in_a_child(tmp_path):
    """``_compiled.compile_split``: the ``beside`` callees compile in a child into numba's cache, the ``here`` ones
    in this process, then the kernel, whose compile loads the child's callee instead of compiling it again."""
    (tmp_path / "h4_split_mod.py").write_text(
        "from numba import njit\n\n\n@njit(cache=True)\ndef inner(a):\n    return a * 2\n\n\n"
        "@njit(cache=True)\ndef near(a):\n    return a + 1\n\n\n"
        "@njit(cache=True)\ndef outer(a):\n    return inner(a) + near(a)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import h4_split_mod as m
        from numba import typeof
        from numba.core import event

        sig = (typeof(np.ones(3, np.float32)),)
        compiled = []

        class Listener(event.Listener):
            def on_start(self, ev):
                name = ev.data["dispatcher"].py_func.__name__
                if name in ("inner", "near", "outer"):  # (not numba's own overloads)
                    compiled.append(name)

            def on_end(self, ev):
                pass

        with event.install_listener("numba:compile", Listener()):
            _compiled.compile_split(m.outer, sig, here=((m.near, sig),), beside=((m.inner, sig),))
        assert compiled == ["near", "outer"]  # inner came from the child's cache entry
        assert _compiled.available(m.inner, sig) and _compiled.available(m.outer, sig)
        assert np.array_equal(m.outer(np.ones(3, np.float32)), np.full(3, 4, np.float32))
        compiled.clear()
        _compiled.compile_split(m.outer, sig, here=((m.near, sig),), beside=((m.inner, sig),))
        assert compiled == []  # available: nothing to do
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("h4_split_mod", None)


def test_the_decision_table_is_bounded_oldest_out(calibrating, monkeypatch):
    monkeypatch.setattr(_calibrate, "MAX_DECISIONS", 3)
    ranked = _cost.choose(_plan()).estimates
    plans = [dataclasses.replace(_plan(), batch=n) for n in range(1, 6)]
    for plan in plans:
        assert _calibrate.decide(plan, ranked, run=None) == ranked[0][0]
    assert list(_calibrate.decisions()) == [_calibrate.key(p) for p in plans[-3:]]


def _records(prefix: str, count: int) -> dict:
    """``count`` valid calibration records (a layer fed many shapes), ~350 bytes each on disk."""
    names = sorted(_calibrate.variant_names())[:3]
    return {f"{_calibrate.key(_plan())}|{prefix}{i:05d}": {"variant": names[0], "seconds": dict.fromkeys(names, 1e-3),
                                                          "wins": dict.fromkeys(names, 1), "rounds": 5,
                                                          "model": names[0]}
            for i in range(count)}


def test_imports_past_the_cap_keep_the_newest_records(calibrating, tmp_path_factory):
    """Files of 1,600 records imported one after the other (the issue's sequence): the cache stays readable and
    keeps the newest records; before, it passed 1 MiB at the third import and the fourth replaced it with its own
    1,600 records only."""
    import fastdeconv.calibration as cal
    from fastdeconv import _store

    folder = tmp_path_factory.mktemp("imports")
    counts = []
    for b in range(4):
        part = folder / f"part{b}.json"
        part.write_text(json.dumps(_records(f"b{b}-", 1600)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing on the way is dropped unannounced
            cal.import_(part)
        size = cal.cache_file().stat().st_size
        records = _store.read_records(cal.cache_file(), _calibrate.valid_record)
        assert size <= _store.MAX_BYTES and set(_records(f"b{b}-", 1600)) <= set(records)
        counts.append(len(records))
    assert counts[0] == 1600 and min(counts[1:]) > 1600, counts
    # an export of a full cache is a file import_ reads back
    out = folder / "wisdom.json"
    assert cal.export(out) == counts[-1] and out.stat().st_size <= _store.MAX_BYTES
    cal.clear()
    assert cal.import_(out) == counts[-1]


@pytest.mark.parametrize("kind", ["fifo", "directory", "link to fifo", "link to directory", "dangling link"])
def test_export_refuses_anything_but_a_regular_file_or_a_new_name(calibrating, monkeypatch, capsys,
                                                                   tmp_path_factory, kind):
    import fastdeconv.calibration as cal

    ranked = _cost.choose(_plan()).estimates
    _calibrate.decide(_plan(), ranked, _fake_clock(monkeypatch, lambda v: 1e-3))
    folder = tmp_path_factory.mktemp("special")
    os.mkfifo(folder / "fifo")
    (folder / "dir").mkdir()
    target = {"fifo": None, "directory": None, "link to fifo": folder / "fifo", "link to directory": folder / "dir",
              "dangling link": folder / "nowhere" / "x.json"}[kind]
    path = folder / {"fifo": "fifo", "directory": "dir"}.get(kind, "link")
    if target is not None:
        path.symlink_to(target)
    with pytest.raises(ValueError, match="path .* is"):
        cal.export(path)
    with pytest.raises(SystemExit) as exc:
        cli(["calibrate", "--export", str(path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--export" in err and len(err.strip().splitlines()) == 1, err
    assert (folder / "fifo").is_fifo() and (folder / "dir").is_dir() and not (folder / "nowhere").exists()
    assert path.is_symlink() == (target is not None)
    link = folder / "to-regular"
    link.symlink_to(folder / "regular.json")
    (folder / "regular.json").write_text("{}")
    assert cli(["calibrate", "--export", str(link)]) == 0  # through a link to a regular file: the link stays
    assert link.is_symlink() and len(json.loads((folder / "regular.json").read_text())) == 1


@pytest.mark.parametrize("content", ["[1]", "not json", "", '{"k": {"variant": "nope"}}'])
def test_cli_import_of_a_bad_file_is_one_line_and_exit_2(calibrating, capsys, tmp_path_factory, content):
    bad = tmp_path_factory.mktemp("bad") / "bad.json"
    bad.write_text(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # (on the command line a warning is printed with its source line)
        with pytest.raises(SystemExit) as exc:
            cli(["calibrate", "--import", str(bad)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--import" in err and "not a calibration file" in err
    assert len(err.strip().splitlines()) == 1 and "Warning" not in err, err
    assert [str(w.message) for w in caught] == []


def test_cli_import_via_a_subprocess_prints_one_line(calibrating, tmp_path_factory):
    """The real command line: no RuntimeWarning with its source line before the error."""
    bad = tmp_path_factory.mktemp("bad") / "bad.json"
    bad.write_text("[1, 2]")
    env = dict(os.environ, PYTHONPATH=str(Path(fd.__file__).parent.parent))
    proc = subprocess.run([sys.executable, "-m", "fastdeconv", "calibrate", "--import", str(bad)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "not a calibration file" in proc.stderr and "Warning" not in proc.stderr
