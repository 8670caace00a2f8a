"""The compare tool: ``python -m fastdeconv compare`` (argument handling, table, JSON, the reference)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from reference import conv_transpose_ref

from fastdeconv.tools import compare as cmp
from fastdeconv.tools import engines
from fastdeconv.tools import workloads as wls
from fastdeconv.tools.cli import main


def test_quick_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main(["compare", "--quick", "--workload", wls.QUICK_WORKLOAD, "--peers", "none", "--json", str(path)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith(wls.QUICK_WORKLOAD)]
    assert [r.split()[1] for r in rows] == [f"fd:{m}" for m in cmp.METHODS]
    assert all(r.split()[7] == "ok" for r in rows), text
    assert "all engines agree with the reference" in text
    result = json.loads(path.read_text())
    assert result["ok"] is True and result["machine"]["threads"] >= 1
    (entry,) = result["results"]
    assert entry["workload"]["name"] == wls.QUICK_WORKLOAD
    wl = wls.builtin_workloads()[wls.QUICK_WORKLOAD]
    assert entry["gflop"] == pytest.approx(wl.flops / 1e9)
    for m in cmp.METHODS:
        e = entry["engines"][f"fd:{m}"]
        assert e["seconds"] > 0 and e["max_rel_err"] < 1e-4 and e["ok"] is True
        assert e["gflops"] == pytest.approx(wl.flops / e["seconds"] / 1e9)
        assert e["roofline_pct"] == pytest.approx(100 * entry["roofline_seconds"] / e["seconds"])
        assert e["speedup_vs_best_peer"] is None  # no peers were asked for


def test_shape_run_with_methods(tmp_path, capsys):
    path = tmp_path / "shape.json"
    spec = "name=odd,n=2,cin=4,cout=6,in=5x7,k=3x2,s=2x3,p=1x0,op=1x2,g=2"
    code = main(["compare", "--shape", spec, "--methods", "gather,scatter", "--peers", "none",
                 "--budget", "0.02", "--rounds", "2", "--json", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("odd ")] == ["fd:gather", "fd:scatter"]
    result = json.loads(path.read_text())
    assert result["results"][0]["workload"]["kernel"] == [3, 2]
    assert result["results"][0]["geometry"] == "n=2,cin=4,cout=6,in=5x7,k=3x2,s=2x3,p=1x0,op=1x2,g=2,d=1x1"


def test_parse_shape_fields_and_defaults():
    wl = wls.parse_shape("n=2, cin=4, cout=6, in=5x7x3, k=3x2x1, s=2, p=1x0x0, op=1x0x0, g=2, d=1x2x1")
    assert (wl.n, wl.c_in, wl.c_out, wl.groups) == (2, 4, 6, 2)
    assert wl.spatial == (5, 7, 3) and wl.kernel == (3, 2, 1) and wl.stride == (2, 2, 2)
    assert wl.padding == (1, 0, 0) and wl.output_padding == (1, 0, 0) and wl.dilation == (1, 2, 1)
    assert wl.out_shape == (2, 6, 10, 15, 5)
    d = wls.parse_shape("cin=3,in=10")
    assert (d.n, d.c_out, d.kernel, d.stride, d.padding, d.dilation, d.groups) == (1, 3, (3,), (1,), (0,), (1,), 1)
    assert wls.parse_shape(d.describe()).describe() == d.describe()


@pytest.mark.parametrize("spec, words", [
    ("cin=4", "in= is required"),
    ("in=8x8", "cin= is required"),
    ("cin=4,in=8,k=a", "must be an int"),
    ("cin=4,in=8,foo=1", "key=value"),
    ("cin=4,in=8,cin=5", "given twice"),
    ("cin=4,in=8", None),
    ("cin=4,in=8,s=2,op=2", "output_padding"),
    ("cin=4,in=8x8,k=3x3x3", "kernel"),
    ("cin=6,cout=4,in=8,g=4", "groups"),
    ("cin=4,in=8,n=2x2", "one int"),
    ("cin=4,in=8,p=9", "output size"),
    ("", "non-empty"),
])
def test_parse_shape_errors(spec, words):
    if words is None:
        wls.parse_shape(spec)
        return
    with pytest.raises(ValueError, match=words):
        wls.parse_shape(spec)


@pytest.mark.parametrize("spec", [
    "n=2,cin=4,cout=6,in=5x7,k=3x2,s=2x3,p=1x0,op=1x2,g=2",
    "cin=3,cout=2,in=9,k=4,s=3,p=2,d=2,op=2",
    "n=1,cin=2,cout=2,in=3x4x2,k=2x3x2,s=1x2x2,p=0x1x0,d=2x1x1",
    "cin=5,cout=5,in=6x6,k=4,s=2,p=1,g=5",
])
def test_compare_reference_matches_the_test_reference(spec):
    wl = wls.parse_shape(spec)
    x, w = wls.make_inputs(wl, seed=3)
    expected = conv_transpose_ref(x, w, stride=wl.stride, padding=wl.padding, output_padding=wl.output_padding,
                                  groups=wl.groups, dilation=wl.dilation)
    np.testing.assert_allclose(wls.reference(x, w, wl), expected, rtol=1e-12, atol=1e-12)


def test_compare_and_the_tests_share_one_reference():
    import reference

    from fastdeconv.tools import reference as shared

    assert reference.conv_transpose_ref is shared.conv_transpose_ref is wls.conv_transpose_ref
    wl = wls.parse_shape("cin=2,cout=3,in=4x5,k=3,s=2,p=1,op=1")
    x, w = wls.make_inputs(wl, seed=1)
    assert np.array_equal(wls.reference(x, w, wl), shared.conv_transpose_ref(x, w, **wl.kwargs()))


def test_builtin_workloads_and_roofline():
    builtin = wls.builtin_workloads()
    assert wls.QUICK_WORKLOAD in builtin and len(builtin) >= 10
    l1 = builtin["dcgan_l1"]
    assert l1.flops == 2 * 64 * 512 * 256 * 4 * 4 * 4 * 4
    assert l1.out_shape == (64, 256, 8, 8)
    assert l1.nbytes() == 4 * (64 * 512 * 16 + 512 * 256 * 16 + 64 * 256 * 64)
    assert cmp.roofline_seconds(l1, 410, 26) == pytest.approx(l1.flops / 410e9)
    big = builtin["big_1ch"]
    assert cmp.roofline_seconds(big, 410, 26) == pytest.approx(big.nbytes() / 26e9)
    quick = wls.quick_workloads()
    assert list(quick)[0] == wls.QUICK_WORKLOAD and len(quick) == 1 + len(wls.QUICK_LAYERS)


def test_max_rel_error_and_measure():
    ref = np.array([[1.0, -4.0]])
    assert wls.max_rel_error(ref + 0.004, ref) == pytest.approx(0.001)
    assert wls.max_rel_error(ref[:, :1], ref) == math.inf
    calls = {"a": 0}

    def f():
        calls["a"] += 1

    t = cmp.measure({"a": f}, budget=0.01, rounds=3)
    assert t["a"] > 0 and calls["a"] >= 4


@pytest.mark.parametrize("argv, words", [
    (["compare", "--methods", "scatter,fast"], "unknown method fast"),
    (["compare", "--peers", "torch,caffe"], "unknown peer caffe"),
    (["compare", "--workload", "nope"], "unknown workload nope"),
    (["compare", "--shape", "cin=4"], "in= is required"),
    (["compare", "--threads", "0"], "must be > 0"),
    (["compare", "--threads", "999"], "NUMBA_NUM_THREADS"),
    (["compare", "--budget", "x"], "not a float"),
    (["compare", "--bogus"], "unrecognized"),
    (["compare", "--budget", "inf"], "--budget: must be finite"),
    (["compare", "--budget", "nan"], "--budget: must be > 0"),
    (["compare", "--peak-gflops", "inf"], "--peak-gflops: must be finite"),
    (["compare", "--workload", ""], "--workload: empty name"),
    (["compare", "--workload", " , "], "--workload: empty name"),
    (["compare", "--methods", "", "--peers", "none"], "nothing to run"),
    (["compare", "--methods", "none", "--peers", ""], "nothing to run"),
    (["compare", "--shape", "cin=4,in=8,p=9"], "--shape"),
    (["compare", "--json", "/nonexistent-dir-fd/out.json"], "--json /nonexistent-dir-fd/out.json: directory"),
    (["compare", "--json", "/proc/fd-out.json"], "pseudo-filesystem"),
    (["compare", "--json", "/proc/self/status"], "pseudo-filesystem"),
    (["compare", "--json", "/dev/null"], "pseudo-filesystem"),
    (["warmup", "--dtypes", "float16"], "--dtypes"),
    (["warmup", "--dtypes", ""], "--dtypes"),
    (["warmup", "--jobs", "0"], "--jobs"),
])
def test_bad_flags_exit_2_with_a_message(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def _bad_output(argv, words, capsys, monkeypatch):
    """The path is refused before anything runs (compare must not be reached)."""
    monkeypatch.setattr(cmp, "compare", lambda *a, **k: pytest.fail("compare ran before the path was checked"))
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_output_paths_are_checked_before_running(tmp_path, capsys, monkeypatch):
    _bad_output(["compare", "--quick", "--json", str(tmp_path)], "--json", capsys, monkeypatch)
    _bad_output(["compare", "--quick", "--json", str(tmp_path / "missing" / "a.json")], "does not exist", capsys,
                monkeypatch)
    (tmp_path / "file").write_text("x")
    _bad_output(["compare", "--quick", "--json", str(tmp_path / "file" / "a.json")], "not a directory", capsys,
                monkeypatch)
    assert (tmp_path / "file").read_text() == "x"
    existing = tmp_path / "old.json"
    existing.write_text("keep")
    monkeypatch.setattr(cmp, "compare", lambda *a, **k: {"ok": True, "results": []})
    assert main(["compare", "--quick", "--json", str(existing)]) == 0  # a regular file is overwritten
    assert json.loads(existing.read_text())["ok"] is True
    assert not (tmp_path / "probe.json").exists()


def test_output_paths_refuse_special_files_and_links_to_them(tmp_path, capsys, monkeypatch):
    """--json (and --plot: the same check) writes only a regular file, a link to one, or a new name: never a FIFO, a
    directory through a link, or a dangling link (whose target the check used to create, and whose link it removed)."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    (tmp_path / "to-dir").symlink_to(tmp_path / "dir")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    cases = {"fifo": "is a FIFO", "to-fifo": "symbolic link to a FIFO", "to-dir": "symbolic link to a directory",
             "dangling.json": "dangling symbolic link"}
    for name, words in cases.items():
        _bad_output(["compare", "--quick", "--json", str(tmp_path / name)], words, capsys, monkeypatch)
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "dangling.json").is_symlink()
    assert not (tmp_path / "nowhere.json").exists()


def test_plot_path_and_extension_are_checked_before_running(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    _bad_output(["compare", "--quick", "--plot", str(tmp_path / "c.xyz")], "unknown image extension '.xyz'", capsys,
                monkeypatch)
    _bad_output(["compare", "--quick", "--plot", str(tmp_path / "chart")], "no image extension", capsys, monkeypatch)
    _bad_output(["compare", "--quick", "--plot", str(tmp_path)], "--plot", capsys, monkeypatch)
    _bad_output(["compare", "--quick", "--plot", "/proc/c.png"], "pseudo-filesystem", capsys, monkeypatch)
    same = str(tmp_path / "c.png")
    _bad_output(["compare", "--quick", "--plot", same, "--json", same], "same file", capsys, monkeypatch)
    assert not (tmp_path / "c.png").exists()  # the check leaves no file behind


def test_roofline_is_measured_cached_and_overridable(tmp_path, monkeypatch, capsys):
    from fastdeconv.tools import roofline as _roofline

    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_roofline, "_memo", {})
    monkeypatch.setattr(_roofline, "_quiet", lambda: True)
    calls = []
    monkeypatch.setattr(_roofline, "measure_peak_gflops", lambda t: calls.append(t) or 123.4)
    monkeypatch.setattr(_roofline, "measure_stream_gbs", lambda t: 45.6)
    first = _roofline.roofline(1)
    assert (first["peak_gflops"], first["stream_gbs"], first["threads"]) == (123.4, 45.6, 1)
    assert first["source"] == "measured"
    monkeypatch.setattr(_roofline, "_memo", {})  # a new process: read back from the file
    again = _roofline.roofline(1)
    assert again["source"] == "cached" and again["peak_gflops"] == 123.4 and calls == [1]
    key = f"{_roofline.cpu_name()}|threads=1"
    assert json.loads((tmp_path / "roofline.json").read_text())[key]["stream_gbs"] == 45.6
    # hostile content is dropped and measured again
    (tmp_path / "roofline.json").write_text(json.dumps({f"{_roofline.cpu_name()}|threads=1": {
        "peak_gflops": -1, "stream_gbs": "x", "threads": 1}}))
    monkeypatch.setattr(_roofline, "_memo", {})
    with pytest.warns(RuntimeWarning, match="invalid record"):
        assert _roofline.roofline(1)["source"] == "measured" and calls == [1, 1]
    # measured while other work runs: used, but not recorded for later processes
    monkeypatch.setattr(_roofline, "_quiet", lambda: False)
    monkeypatch.setattr(_roofline, "measure_peak_gflops", lambda t: 50.0)
    busy = _roofline.roofline(1, refresh=True)
    assert busy["source"].startswith("measured (other work") and busy["peak_gflops"] == 50.0
    assert _roofline.roofline(1)["peak_gflops"] == 50.0  # this process keeps it
    monkeypatch.setattr(_roofline, "_memo", {})  # a later process reads the quiet measurement
    assert _roofline.roofline(1)["peak_gflops"] == 123.4
    with pytest.raises(ValueError, match="threads"):
        _roofline.roofline(0)
    with pytest.raises(TypeError, match="threads"):
        _roofline.roofline(1.5)
    # compare prints the measured roofs, and the flags override them
    monkeypatch.setattr(_roofline, "_memo", {})
    path = tmp_path / "r.json"
    assert main(["compare", "--quick", "--workload", wls.QUICK_WORKLOAD, "--peers", "none", "--methods", "gather",
                 "--threads", "1", "--stream-gbs", "7.5", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "flops / 123.4 GFLOP/s, bytes / 7.5 GB/s" in out and "410" not in out
    machine = json.loads(path.read_text())["machine"]
    assert (machine["peak_gflops"], machine["stream_gbs"]) == (123.4, 7.5)


def test_roofline_measures_something_plausible():
    from fastdeconv.tools import roofline as _roofline

    assert 0.5 < _roofline.measure_peak_gflops(1, seconds=0.05) < 1e5
    assert 0.1 < _roofline.measure_stream_gbs(1, seconds=0.05) < 1e4


def test_quick_selects_the_tiny_layer_and_three_real_ones():
    from fastdeconv.tools.cli import _select, build_parser

    args = build_parser().parse_args(["compare", "--quick"])
    names = [w.name for w in _select(args)]
    assert names == [wls.QUICK_WORKLOAD, "dcgan_block", "fcn_bilinear", "image_1ch"]
    args = build_parser().parse_args(["compare", "--quick", "--workload", "image_1ch,dcgan_l1"])
    assert [w.name for w in _select(args)] == ["image_1ch", "dcgan_l1"]
    assert [w.name for w in _select(build_parser().parse_args(["compare"]))] == list(wls.builtin_workloads())


def test_missing_peers_say_how_to_install_them(monkeypatch):
    lines = []
    monkeypatch.setitem(engines._PEER_FACTORIES, "torch", lambda threads: __import__("no_such_module_fd"))
    wl = wls.quick_workloads()[wls.QUICK_WORKLOAD]
    cmp.compare([wl], cmp.Options(methods=["gather"], peers=["torch"], budget=0.01, rounds=1, progress=False,
                                  peak_gflops=100.0, stream_gbs=10.0), write=lines.append)
    assert any("peer torch skipped" in line for line in lines)
    assert any(cmp.PEERS_INSTALL in line for line in lines)


def test_help_documents_the_shape_syntax(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "in=HxW" in text and "dcgan_l1" in text and "--quick" in text


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "c.png"
    assert main(["compare", "--quick", "--workload", wls.QUICK_WORKLOAD, "--peers", "none", "--methods", "gather,auto",
                 "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "fastdeconv", "compare", "--quick", "--workload", wls.QUICK_WORKLOAD,
                           "--peers", "none", "--methods", "gather"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "fd:gather" in proc.stdout and "agree with the reference" in proc.stdout


def test_threads_flag_sets_fastdeconv_threads(tmp_path):
    import fastdeconv as fd
    from fastdeconv import _threads

    path = tmp_path / "t.json"
    try:
        assert main(["compare", "--quick", "--workload", wls.QUICK_WORKLOAD, "--peers", "none", "--methods", "auto",
                     "--threads", "1", "--json", str(path)]) == 0
        assert fd.get_num_threads() == 1
    finally:
        fd.set_num_threads(_threads.max_threads())
    assert json.loads(path.read_text())["machine"]["threads"] == 1


def test_a_wrong_result_is_reported_and_exits_1(monkeypatch, capsys):
    true_reference = wls.reference
    monkeypatch.setattr(cmp, "reference", lambda x, w, wl: true_reference(x, w, wl) * 1.01)
    assert main(["compare", "--quick", "--workload", wls.QUICK_WORKLOAD, "--peers", "none", "--methods", "gather"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "MISMATCH in seed000_tiny/fd:gather" in out


def test_warmup_lists_every_variant_and_each_applies_somewhere():
    import numpy as np

    from fastdeconv import _cost, variants
    from fastdeconv import _geometry as geo
    from fastdeconv.tools import warmup as _warmup

    units = _warmup.tasks(["float32"])
    native_cl = {n for n in variants.names(layout="channels_last") if not n.startswith("transpose-")}
    assert {name for name, _ in units} == set(_cost.VARIANTS) | set(_warmup.EXTRAS) | native_cl
    assert native_cl and len(units) == len({name for name, _ in units})
    assert {dtype for _, dtype in _warmup.tasks()} == {"float32", "float64"}
    for variant in _cost.VARIANTS:
        modes = set()
        for x_shape, w_shape, kw in _warmup.GEOMETRIES:
            plan = geo.make_plan(x_shape, w_shape, np.float32, np.float32, kw.get("stride", 1),
                                 kw.get("padding", 0), kw.get("output_padding", 0), kw.get("groups", 1),
                                 kw.get("dilation", 1))
            if variant in _cost.estimate(plan, 1):
                modes.add(_cost.runs_serially(plan, variant))
        assert modes, f"no representative layer makes {variant} applicable"
        if variant.endswith("direct") or variant == "gather-plane":
            assert modes == {True, False}, f"{variant}: both its serial and its parallel kernel must be compiled"


def test_warmup_command_runs_its_units(monkeypatch, capsys):
    from fastdeconv.tools import warmup as _warmup

    monkeypatch.setattr(_warmup, "tasks", lambda dtypes: [("gather-direct", d) for d in dtypes])
    assert main(["warmup", "--dtypes", "float32", "--jobs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "warmup: 1 kernel set(s) (float32) compiled" in out and "FAILED" not in out
    name, dtype, seconds, ran, errors = _warmup.run_task("gather-direct", "float32")
    assert (name, dtype, errors) == ("gather-direct", "float32", []) and ran >= 2 and seconds > 0
    with pytest.raises(ValueError, match="dtypes"):
        _warmup.warmup(["float16"])
    with pytest.raises(ValueError, match="jobs"):
        _warmup.warmup(["float32"], jobs=0)


def test_compare_compiles_ahead_exactly_the_variants_it_runs():
    import fastdeconv as fd

    wl = wls.quick_workloads()["image_1ch"]
    needed = cmp.variants_needed(wl, ["scatter", "gather", "zerofill", "auto"])
    for method in ("scatter", "gather"):
        assert fd.plan(wl.x_shape, wl.w_shape, method=method, **wl.kwargs()).variant in needed
    assert "zerofill" in needed and len(needed) == len(set(needed))
    pool, futures = cmp.start_compiling([wl], ["gather"], jobs=2)  # one variant: nothing to spread
    assert pool is None and futures == []
