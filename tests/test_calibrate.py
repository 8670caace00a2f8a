"""The one-time measured calibration of ambiguous choices (``_calibrate``)."""

import dataclasses
import itertools
import json
import time

import numpy as np
import pytest
from conftest import tolerance
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _api, _calibrate, _cost
from fastdeconv import _geometry as geo

# a small 2x up-convolution (21 -> 40 channels): the model rates several variants within 1.6x of each other
X_SHAPE, W_SHAPE, GEOMETRY = (1, 21, 32, 32), (21, 40, 3, 3), {"stride": 2, "padding": 1}


@pytest.fixture
def calibrating(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTDECONV_CALIBRATE", "1")
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    _calibrate.forget()
    _api._prepared.cache_clear()
    _api._FAST.clear()
    yield tmp_path
    _calibrate.forget()
    _api._prepared.cache_clear()
    _api._FAST.clear()


def _plan():
    return geo.make_plan(X_SHAPE, W_SHAPE, np.dtype(np.float32), np.dtype(np.float32), GEOMETRY["stride"],
                         GEOMETRY["padding"], 0, 1, 1)


def _inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal(X_SHAPE).astype(np.float32), rng.standard_normal(W_SHAPE).astype(np.float32)


def test_the_example_is_ambiguous(calibrating):
    assert len(_calibrate.candidates(_plan(), _cost.choose(_plan()).estimates)) >= 2


def test_first_call_measures_keeps_the_fastest_and_stores_it(calibrating, monkeypatch):
    names = _calibrate.candidates(_plan(), _cost.choose(_plan()).estimates)
    slowest_first = {name: 1.0 + i for i, name in enumerate(reversed(names))}  # the model's last is "fastest"
    timings = {}

    def fake_measure(plan, candidates, run):
        for name in candidates:
            run(name)  # every candidate really runs (and writes the whole output)
        timings.update({name: slowest_first[name] for name in candidates})
        record = {"variant": min(timings, key=timings.get), "seconds": timings}
        _calibrate._store(_calibrate.key(plan), record)
        return record

    monkeypatch.setattr(_calibrate, "measure", fake_measure)
    x, w = _inputs()
    y = fd.conv_transpose(x, w, **GEOMETRY)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, **GEOMETRY), **tolerance(np.float32))
    assert _api._prepared(_plan()).variant == names[-1]
    # later calls: no measurement, same variant, bitwise the same result
    monkeypatch.setattr(_calibrate, "measure", lambda *a: pytest.fail("measured twice"))
    assert np.array_equal(fd.conv_transpose(x, w, **GEOMETRY), fd.conv_transpose(x, w, **GEOMETRY))
    # plan() reports the measurement; the record is on disk and read back by a fresh process
    choice = fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY)
    assert choice.variant == names[-1] and "measured fastest" in choice.reason
    stored = json.loads((calibrating / "calibration.json").read_text())
    assert stored[_calibrate.key(_plan())]["variant"] == names[-1]
    _calibrate.forget()
    _api._prepared.cache_clear()
    _api._FAST.clear()
    assert _api._prepared(_plan()).variant == names[-1] and not _api._prepared(_plan()).pending


def test_real_measurement_runs_every_candidate(calibrating):
    x, w = _inputs()
    y = fd.conv_transpose(x, w, **GEOMETRY)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, **GEOMETRY), **tolerance(np.float32))
    record = _calibrate.recorded(_plan())
    names = _calibrate.candidates(_plan(), _cost.choose(_plan()).estimates)
    seconds = record["seconds"]
    assert set(seconds) == set(names)
    fastest = min(seconds, key=seconds.get)  # or, within a measured tie, the model's first choice
    assert record["variant"] == fastest or (record["variant"] == names[0]
                                            and seconds[names[0]] <= _calibrate.TIE * seconds[fastest])
    assert all(sec > 0 for sec in record["seconds"].values())


def test_disabled_and_corrupt_cache(calibrating, monkeypatch):
    (calibrating / "calibration.json").write_text("{not json")
    _calibrate.forget()
    assert _calibrate.recorded(_plan()) is None  # a corrupt file is ignored, then replaced on the next store
    key = _calibrate.key(_plan())
    for bad in ({"variant": "scatter-gemm", "seconds": [1]}, {"variant": "nope", "seconds": {"scatter-gemm": 1.0}},
                {"variant": "scatter-gemm", "seconds": {"scatter-gemm": -1}}, ["scatter-gemm"]):
        (calibrating / "calibration.json").write_text(json.dumps({key: bad}))
        _calibrate.forget()
        assert _calibrate.recorded(_plan()) is None, bad
        assert fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY).variant == _cost.choose(_plan()).variant
    monkeypatch.setenv("FASTDECONV_CALIBRATE", "0")
    assert _calibrate.candidates(_plan(), _cost.choose(_plan()).estimates) == []
    x, w = _inputs()
    fd.conv_transpose(x, w, **GEOMETRY)
    assert _api._prepared(_plan()).variant == _cost.choose(_plan()).variant


def test_tiny_and_fixed_plans_are_not_measured(calibrating):
    tiny = geo.make_plan((1, 4, 3, 3), (4, 2, 3, 3), np.dtype(np.float32), np.dtype(np.float32), 2, 1, 1, 1, 1)
    assert _calibrate.candidates(tiny, _cost.choose(tiny).estimates) == []
    fixed = geo.make_plan(X_SHAPE, W_SHAPE, np.dtype(np.float32), np.dtype(np.float32), 2, 1, 0, 1, 1)
    fixed = dataclasses.replace(fixed, variant="scatter-gemm")
    assert _calibrate.candidates(fixed, _cost.choose(fixed).estimates) == []


def test_budget_drops_the_slowest_candidates_first(calibrating):
    plan = _plan()
    b = _calibrate.BUDGET / (2 * _calibrate.REPEATS)  # measuring time of candidates whose estimates sum to b
    ranked = (("scatter-direct", 0.3 * b), ("gather-direct", 0.4 * b), ("scatter-gemm", 0.45 * b))
    assert _calibrate.candidates(plan, ranked) == ["scatter-direct", "gather-direct"]  # 1.15 b: the third goes
    assert _calibrate.candidates(plan, ranked[:2]) == ["scatter-direct", "gather-direct"]  # 0.7 b fits
    over = (("scatter-direct", 0.3 * _calibrate.BUDGET), ("gather-direct", 0.35 * _calibrate.BUDGET))
    assert _calibrate.candidates(plan, over) == []  # the two best alone would take too long (even run twice)


def test_long_calls_get_one_timed_run(calibrating):
    """From LONG_CALL on, one block per candidate (its warm-up run, then one more right after it, so that no
    candidate is timed only right after another): layers of ~50 ms still fit the budget."""
    plan = _plan()
    long = _calibrate.LONG_CALL
    assert _calibrate.repeats(long) == 1 and _calibrate.repeats(0.5 * long) == _calibrate.REPEATS
    half = _calibrate.BUDGET / 2
    ranked = (("scatter-gemm", 0.45 * half), ("gather-gemm", 0.5 * half))
    assert _calibrate.candidates(plan, ranked) == ["scatter-gemm", "gather-gemm"]
    calls = []
    _calibrate.measure(plan, ["scatter-gemm", "gather-gemm"], lambda v: (calls.append(v), time.sleep(long)))
    assert calls == ["gather-gemm"] * 2 + ["scatter-gemm"] * 2  # one pass of blocks, the model's choice last


def test_short_calls_run_in_blocks_two_passes_in_turn(calibrating):
    """Short calls: per candidate a block of runs lasting BLOCK_TIME after its first, then a second pass in
    reverse order."""
    calls = []
    pace = 0.25 * _calibrate.BLOCK_TIME
    _calibrate.measure(_plan(), ["scatter-gemm", "gather-gemm"], lambda v: (calls.append(v), time.sleep(pace)))
    blocks = [(name, sum(1 for _ in group)) for name, group in itertools.groupby(calls)]
    # passes B A (the model's choice A last), then A B: the two middle blocks run back to back
    assert [name for name, _ in blocks] == ["gather-gemm", "scatter-gemm", "gather-gemm"]
    assert all(n >= 5 for _, n in blocks)  # 1 + BLOCK_TIME / pace, at least


@pytest.mark.parametrize("slower, kept", [(1.02, "scatter-gemm"), (1.5, "gather-gemm")])
def test_a_measured_tie_keeps_the_models_choice(calibrating, monkeypatch, slower, kept):
    """The model's first candidate stays unless another one measured more than TIE faster."""
    pace = {"scatter-gemm": 1e-3 * slower, "gather-gemm": 1e-3}
    clock = [0.0]

    def tick():
        return clock[0]

    monkeypatch.setattr(_calibrate.time, "perf_counter", tick)
    record = _calibrate.measure(_plan(), ["scatter-gemm", "gather-gemm"],
                                lambda v: clock.__setitem__(0, clock[0] + pace[v]))
    assert record["variant"] == kept
    assert record["seconds"] == pytest.approx(pace)


def test_a_record_of_a_non_candidate_decides_nothing(calibrating):
    """plan() reports, and a call runs, a recorded variant only when it is among the plan's current candidates."""
    choice = _cost.choose(_plan())
    names = _calibrate.candidates(_plan(), choice.estimates)
    outsider = next(v for v, _ in choice.estimates if v not in names)
    _calibrate._store(_calibrate.key(_plan()), {"variant": outsider, "seconds": {outsider: 1e-6, names[0]: 1.0}})
    _calibrate.forget()
    assert _calibrate.deciding_record(_plan(), names) is None
    assert fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY).variant == choice.variant
    assert _api._prepared(_plan()).variant == choice.variant and _api._prepared(_plan()).pending == names
