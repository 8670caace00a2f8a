"""The machine profile (``fastdeconv.machine``, ``_profile``): what ``auto`` decides from, measured, stored,
overridable; choices that follow synthetic profiles (never this host's speeds); variants pinned by name."""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _api, _model, _profile
from fastdeconv.tools.cli import main as cli

GEMM = {"scatter-gemm", "scatter-gemm-rows", "gather-gemm", "gather-gemm-rows", "gather-gemm-cols",
        "gather-winograd"}
NUMBA = {"scatter-direct", "gather-direct", "gather-plane"}
REF = _model.REFERENCE
# a fast BLAS against slow numba kernels, and the reverse (rates within the range a profile may hold)
FAST_GEMM = {"sgemm_peak": REF["sgemm_peak"] * 30, "dgemm_peak": REF["dgemm_peak"] * 30,
             "direct_rate": REF["direct_rate"] / 30, "plane_tap": REF["plane_tap"] * 30}
SLOW_GEMM = {"sgemm_peak": REF["sgemm_peak"] / 30, "dgemm_peak": REF["dgemm_peak"] / 30,
             "direct_rate": REF["direct_rate"] * 30, "plane_tap": REF["plane_tap"] / 30,
             "col2im_element": REF["col2im_element"] * 30, "im2col_element": REF["im2col_element"] * 30}
LAYERS = [  # (x shape, weight shape, geometry): small, but enough work that the kernels' rates decide
    ((4, 64, 8, 8), (64, 32, 4, 4), {"stride": 2, "padding": 1}),  # DCGAN-like block
    ((2, 16, 32, 32), (16, 3, 4, 4), {"stride": 2, "padding": 1}),  # RGB output
    ((2, 32, 256), (32, 16, 6), {"stride": 2, "padding": 2}),  # 1-D GAN-like
]


@pytest.fixture
def reset_profile():
    yield
    fd.set_profile(None)  # the test session's profile again (conftest: the reference rates)


@pytest.mark.parametrize("layer", LAYERS, ids=["dcgan", "rgb", "1d"])
def test_the_choice_follows_the_profile_with_the_forced_variants_bits(layer, reset_profile):
    x_shape, w_shape, kw = layer
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    picks = {}
    for name, rates, family in (("fast GEMM", FAST_GEMM, GEMM), ("slow GEMM", SLOW_GEMM, NUMBA)):
        fd.set_profile(rates)
        choice = fd.plan(x_shape, w_shape, **kw)
        assert choice.variant in family, f"{name}: {choice}"
        y = fd.conv_transpose(x, w, **kw)
        assert _api.prepared(_plan(x, w, kw)).variant == choice.variant
        assert np.array_equal(y, fd.conv_transpose(x, w, method=choice.variant, **kw))  # the forced variant's bits
        picks[name] = choice.variant
    assert picks["fast GEMM"] != picks["slow GEMM"]
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, **kw), rtol=1e-4, atol=1e-4)


def _plan(x, w, kw):
    from fastdeconv import _geometry as geo

    return geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, kw.get("stride", 1), kw.get("padding", 0))


def test_the_same_profile_gives_the_same_choice(reset_profile):
    x_shape, w_shape, kw = LAYERS[0]
    fd.set_profile(FAST_GEMM)
    first = fd.plan(x_shape, w_shape, **kw)
    fd.set_profile(SLOW_GEMM)
    fd.set_profile(dict(FAST_GEMM))
    again = fd.plan(x_shape, w_shape, **kw)
    assert (first.variant, first.estimates) == (again.variant, again.estimates)


def test_set_profile_validates(reset_profile):
    before = fd.machine.profile()["rates"]
    with pytest.raises(ValueError, match="unknown field.*'cpu_speed'"):
        fd.set_profile({"cpu_speed": 1.0})
    with pytest.raises(ValueError, match="'sgemm_peak'.*finite"):
        fd.set_profile({"sgemm_peak": -1.0})
    with pytest.raises(ValueError, match="'bandwidth'"):
        fd.set_profile({"bandwidth": float("nan")})
    with pytest.raises(TypeError, match="'call'.*number"):
        fd.set_profile({"call": True})
    with pytest.raises(ValueError, match="gemm_half"):
        fd.set_profile({"gemm_half": (1.0, 2.0)})
    with pytest.raises(TypeError, match="rates must be a mapping"):
        fd.set_profile([1, 2])
    assert fd.machine.profile()["rates"] == before  # a refused profile changes nothing
    fd.set_profile(fd.machine.profile())  # profile()'s own dict is accepted
    assert fd.machine.profile()["source"] == "set_profile"


def test_coarse_profile_is_measured_once_stored_and_adopted(monkeypatch, tmp_path, reset_profile):
    monkeypatch.delenv("FASTDECONV_PROFILE")
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    try:
        fd.set_profile(None)
        info = fd.machine.profile()
        assert info["source"] == "measured" and info["kind"] == "coarse" and info["seconds"] < 5
        rates = info["rates"]
        assert rates["sgemm_peak"] > 1e8 and rates["bandwidth"] > 1e8 and all(h > 0 for h in rates["gemm_half"])
        stored = json.loads((tmp_path / "profile.json").read_text())
        assert list(stored) == [_profile.key()] and _profile.valid_record(_profile.key(), stored[_profile.key()])
        assert "blas=" in _profile.key() and "threads=" in _profile.key()
        fd.set_profile(None)  # as a new process: reads the stored profile, measures nothing
        monkeypatch.setattr(_profile, "measure", lambda **kw: pytest.fail("measured again"))
        again = fd.machine.profile()
        assert again["source"] == "stored" and again["rates"] == rates
        # a hostile stored record is ignored with a warning (and measured again), never used
        monkeypatch.undo()
        monkeypatch.delenv("FASTDECONV_PROFILE")
        monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
        bad = dict(stored[_profile.key()], rates=dict(rates, sgemm_peak=1e30))
        (tmp_path / "profile.json").write_text(json.dumps({_profile.key(): bad}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fd.set_profile(None)
        assert fd.machine.profile()["rates"]["sgemm_peak"] < 1e20
        assert any("invalid record" in str(w.message) or "ignoring" in str(w.message) for w in caught)
    finally:
        monkeypatch.undo()


def test_the_environment_names_a_profile_file(monkeypatch, tmp_path, reset_profile):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"sgemm_peak": 123e9}))
    monkeypatch.setenv("FASTDECONV_PROFILE", str(path))
    fd.set_profile(None)
    info = fd.machine.profile()
    assert info["source"] == "$FASTDECONV_PROFILE" and info["rates"]["sgemm_peak"] == 123e9
    assert _model.GEMM_PEAK == 123e9  # the model runs on it
    path.write_text(json.dumps({"sgemm_peak": "fast"}))
    with pytest.warns(RuntimeWarning, match="ignoring \\$FASTDECONV_PROFILE"):
        fd.set_profile(None)


def test_full_measurement_and_the_cli(monkeypatch, tmp_path, capsys, reset_profile):
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    solved, real_solve = [], _profile._solve
    monkeypatch.setattr(_profile, "_solve", lambda rates, family, *a: solved.append(family)
                        or real_solve(rates, family, *a))
    record = _profile.measure(full=True, store=True)
    assert sorted(set(solved)) == sorted({"direct_rate", "plane_tap"})  # every probe's family, gather-plane's too
    assert record["kind"] == "full" and _profile.valid_record(_profile.key(), record)
    assert record["rates"]["call"] > 0 and record["rates"]["direct_rate"] > 0
    assert _model.GEMM_PEAK == fd.machine.profile()["rates"]["sgemm_peak"]  # measuring left the model as it was
    assert cli(["machine", "--show"]) == 0
    out = capsys.readouterr().out
    for family in _model.FAMILIES:
        assert family in out


def test_no_constant_names_a_vendor_or_a_host():
    src = Path(fd.__file__).parent
    pattern = re.compile(r"GenuineIntel|AuthenticAMD|avx512|skylakex|cooperlake|sapphirerapids|EPYC|Xeon",
                         re.IGNORECASE)
    hits = [f"{p.relative_to(src)}:{i}" for p in src.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_method_pins_a_variant_by_name():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    kw = {"stride": 2, "padding": 1}
    ref = conv_transpose_ref(x, w, **kw)
    for name in ("scatter-gemm", "gather-direct", "gather-gemm"):
        assert fd.plan(x.shape, w.shape, method=name, **kw).variant == name
        y = fd.conv_transpose(x, w, method=name, **kw)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        assert np.array_equal(y, fd.ConvTranspose(w, method=name, **kw)(x))
    # Winograd needs kernel % stride == 0: refused with the applicable variants listed
    with pytest.raises(ValueError, match="'gather-winograd' does not apply.*variants that apply: scatter-direct"):
        fd.conv_transpose(x, w, method="gather-winograd", **kw)
    with pytest.raises(ValueError, match="or a variant's name"):
        fd.conv_transpose(x, w, method="scatter_gemm", **kw)


def test_variants_lists_every_variant():
    listed = fd.variants()
    names = [v["name"] for v in listed]
    assert names == list(fd.variants.VARIANTS) and "scatter-gemm" in names
    assert all(v["form"] in ("scatter", "gather", "zerofill") and v["description"] for v in listed)
    assert {v["data_format"] for v in listed} == {"channels_first", "channels_last"}
    assert [v["name"] for v in listed if v["baseline"] and v["data_format"] == "channels_first"] == ["zerofill"]


def test_a_variant_only_an_operator_can_run_is_pinned_there_and_refused_one_off():
    """Winograd on a weight-heavy layer (its transformed weights 2x the output: only an operator keeps them)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 64, 4, 4)).astype(np.float32)
    w = rng.standard_normal((64, 32, 4, 4)).astype(np.float32)
    kw = {"stride": 2, "padding": 1}
    with pytest.raises(ValueError, match="does not apply to a one-off call .*an operator"):
        fd.conv_transpose(x, w, method="gather-winograd", **kw)
    with pytest.raises(ValueError, match="does not apply to a one-off call"):
        fd.plan(x.shape, w.shape, method="gather-winograd", **kw)
    op = fd.ConvTranspose(w, method="gather-winograd", **kw)
    np.testing.assert_allclose(op(x), conv_transpose_ref(x, w, **kw), rtol=1e-4, atol=1e-4)
    assert op.plan(x.shape).variant == "gather-winograd"


def test_cli_tune(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        cli(["tune"])
    assert exc.value.code == 2 and "--workload NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["tune", "--workload", "no_such_layer"])
    assert cli(["tune", "--workload", "seed000_tiny"]) == 0
    assert "seed000_tiny: nothing to measure" in capsys.readouterr().out


def test_gemm_half_sides_are_a_median_of_three_thin_sizes_and_stay_near_the_reference(monkeypatch):
    """One thin-side reading of a GEMM's half side moved by 2x between processes: the profile takes the median of
    the readings at three thin sizes, and the model keeps each side within HALF_SPREAD of the reference's."""
    big = 100e9
    # rates that read half sides 4, 40 and 10 at the three thin sizes of one axis (the others at the peak)
    wanted = dict(zip(_profile._THIN, (4.0, 40.0, 10.0)))

    def rate(m, n, k, dtype=np.float32):
        side = min(m, n, k)
        if side not in wanted or (m, n, k).count(side) != 1 or m != side:
            return big * 0.9999
        return big * side / (side + wanted[side])

    monkeypatch.setattr(_profile, "_gemm_rate", rate)
    halves = _profile._halves(big)
    assert halves[0] == pytest.approx(10.0) and halves[1] == halves[2] == 0.5
    reference, reading = _model.REFERENCE["gemm_half"], _model.READING["gemm_half"]
    assert _model.scaled("gemm_half", reading) == pytest.approx(reference)
    far = _model.scaled("gemm_half", tuple(q * 100 for q in reading))
    near = _model.scaled("gemm_half", tuple(q / 100 for q in reading))
    assert far == pytest.approx(tuple(r * _model.HALF_SPREAD for r in reference))
    assert near == pytest.approx(tuple(r / _model.HALF_SPREAD for r in reference))


def test_conv_routes_come_from_the_profile_whatever_call_comes_first(tmp_path):
    """In a fresh process whose profile (a file, fast GEMM) makes the GEMM form win, conv's first decision loads
    the profile before it reads an estimate: the same route whether conv or conv_transpose is planned first (the
    route was the reference rates' when conv came first)."""
    import subprocess
    import sys

    path = tmp_path / "fast.json"
    path.write_text(json.dumps(FAST_GEMM))
    code = ("import fastdeconv as fd\n"
            "if {first!r}: fd.plan((8, 128, 16, 16), (128, 64, 4, 4), stride=2, padding=1)\n"
            "print(fd.plan((8, 128, 16, 16), (64, 128, 4, 4), op='conv', stride=2, padding=1).variant)\n")
    env = dict(os.environ, FASTDECONV_PROFILE=str(path), FASTDECONV_CALIBRATE="0")
    routes = [subprocess.run([sys.executable, "-c", code.format(first=first)], capture_output=True, text=True,
                             env=env, check=True).stdout.strip() for first in (False, True)]
    assert routes == ["gemm", "gemm"]


def test_conv_routes_follow_the_profile(reset_profile):
    """conv's route comes from the profile in force, as conv_transpose's choice does: a change of profile moves
    it and a change back restores it (its decisions are memoised per model generation), and the result is the
    route's."""
    x_shape, w_shape, kw = (8, 128, 16, 16), (64, 128, 4, 4), {"stride": 2, "padding": 1}
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    routes, outputs = [], []
    for rates in (SLOW_GEMM, FAST_GEMM, SLOW_GEMM):
        fd.set_profile(rates)
        routes.append(fd.plan(x_shape, w_shape, op="conv", **kw).variant)
        outputs.append(fd.conv(x, w, **kw))
    assert routes == ["s2d-winograd", "gemm", "s2d-winograd"]
    np.testing.assert_array_equal(outputs[0], outputs[2])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)


def test_a_full_measurement_keeps_each_familys_fastest_pass_and_stops_when_two_agree(monkeypatch):
    """A pass taken while another tenant holds the core's sibling reads the GEMM and the numba loops slow beside a
    copy rate that is not: the full profile takes passes until two agree and keeps each family's fastest."""
    fast = dict(REF, gemm_threads=0.9, gemm_half=(10.0, 20.0, 12.0))
    slow = dict(fast, sgemm_peak=fast["sgemm_peak"] / 1.5, direct_rate=fast["direct_rate"] / 1.5,
                gemm_threads=1.0, gemm_half=(30.0, 30.0, 30.0), call=fast["call"] * 1.5,
                bandwidth=fast["bandwidth"] * 1.1)
    script = [slow, fast, dict(fast, call=fast["call"] * 0.9), slow]
    monkeypatch.setattr(_profile, "_coarse", lambda: {})
    monkeypatch.setattr(_profile, "_full", lambda rates: dict(script.pop(0)))
    got = _profile._passes(time.perf_counter())
    assert len(script) == 1  # slow, fast (disagree), fast again (agrees): three passes
    assert got["sgemm_peak"] == fast["sgemm_peak"] and got["direct_rate"] == fast["direct_rate"]
    assert got["gemm_half"] == fast["gemm_half"] and got["gemm_threads"] == fast["gemm_threads"]  # the fast pass's
    assert got["bandwidth"] == slow["bandwidth"]  # each family its own fastest
    assert got["call"] == pytest.approx(fast["call"] * 0.9)
    script[:] = [fast, dict(fast), slow]
    _profile._passes(time.perf_counter())
    assert len(script) == 1  # two passes that agree end it
    script[:] = [slow, fast, fast]
    monkeypatch.setattr(_profile, "PASS_BUDGET", 0.0)
    assert _profile._passes(time.perf_counter())["sgemm_peak"] == slow["sgemm_peak"]
    assert len(script) == 2  # no pass beyond the budget
