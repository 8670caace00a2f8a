"""The BLAS-backed variants (scatter-gemm, gather-gemm), forced directly, and the cost model's ``plan``."""

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
import threadpoolctl
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st
from reference import conv_transpose_ref
from strategies import geometries, geometry_kwargs

import fastdeconv as fd
from fastdeconv import _api, _cost
from fastdeconv import _geometry as geo
from fastdeconv import variants as registry
from fastdeconv._threads import max_threads
from fastdeconv.variants import gather_gemm as gg
from fastdeconv.variants import gemm_rows as pg
from fastdeconv.variants import scatter_gemm as sg

# the BLAS-backed ones that run every geometry; scatter-gemm-phases applies to wide-stride 1-D layers only
# (tests/test_phase_runs.py forces it on those)
RESTRICTED = ("scatter-gemm-phases",)
VARIANTS = tuple(name for name in registry.names() if "gemm" in name and name not in RESTRICTED)


def run_variant(variant, x, w, bias=None, **geometry):
    """Run one variant directly on canonical arrays, as the dispatcher would."""
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, geometry.get("stride", 1), geometry.get("padding", 0),
                         geometry.get("output_padding", 0), geometry.get("groups", 1), geometry.get("dilation", 1))
    y = np.full(plan.out_shape, np.nan, plan.dtype)
    x5 = _api.contiguous(x, plan.dtype).reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes))
    w5 = _api.contiguous(w, plan.dtype).reshape(
        (plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes))
    b = np.zeros(plan.c_out, plan.dtype) if bias is None else _api.contiguous(bias, plan.dtype)
    registry.forced(variant, plan, x5, w5, b,
                     y.reshape((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes)))
    return y


def pair_geometries():
    """Asymmetric pads only: the variants all share the core's crop, the pads exercise it hardest."""
    return geometries(channels=(4, 3), kinds=("pairs",))


@given(g=pair_geometries(), batch=st.integers(1, 3), dtype=st.sampled_from([np.float32, np.float64]),
       use_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_gemm_variants_match_reference(g, batch, dtype, use_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, g["c_in"]) + tuple(g["spatial"])).astype(dtype)
    w = rng.standard_normal((g["c_in"], g["c_out"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)
    bias = rng.standard_normal(g["c_out"]).astype(dtype) if use_bias else None
    expected = conv_transpose_ref(x, w, bias, **geometry_kwargs(g))
    for variant in VARIANTS:
        y = run_variant(variant, x, w, bias, **geometry_kwargs(g))
        assert y.dtype == dtype and y.shape == expected.shape
        np.testing.assert_allclose(y, expected, err_msg=variant, **tolerance(dtype))


@pytest.fixture
def small_chunks(monkeypatch):
    """Tiny chunk targets: every GEMM variant splits a call into many sample / channel / row chunks."""
    monkeypatch.setattr(sg, "_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(gg, "_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", 64)
    fd.clear_caches()  # (the chunk sizes are cached per plan)
    yield
    fd.clear_caches()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chunked_calls_match_reference(variant, small_chunks):
    """Small chunk targets force several sample / channel / row chunks per call."""
    rng = np.random.default_rng(7)
    for xs, ws, geometry in [((5, 6, 7, 6), (6, 5, 4, 4), dict(stride=2, padding=1)),
                             ((1, 4, 30), (4, 3, 5), dict(stride=3, padding=2, dilation=2)),
                             ((3, 4, 3, 4, 2), (4, 1, 2, 3, 2), dict(stride=(1, 2, 3), groups=2)),
                             # weight-heavy (weights > output): gather-gemm splits its output channels
                             ((2, 16, 2, 2), (16, 24, 4, 4), dict(stride=2, padding=1))]:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        b = rng.standard_normal(ws[1] * geometry.get("groups", 1))
        np.testing.assert_allclose(run_variant(variant, x, w, b, **geometry),
                                   conv_transpose_ref(x, w, b, **geometry), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("columns", [1, 10**9])
@pytest.mark.parametrize("variant", ["scatter-gemm-rows", "gather-gemm-rows"])
def test_row_block_variants_both_orientations(variant, columns, monkeypatch):
    """Pixels-major (X^T @ W) and channel-major cols, whole samples and row blocks, against the reference."""
    monkeypatch.setattr(pg, "PIXELS_MAJOR_COLUMNS", columns)
    rng = np.random.default_rng(17)
    for chunk in (1 << 16, 40):
        monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", chunk)
        fd.clear_caches()
        try:
            for xs, ws, geometry in [((3, 6, 7, 6), (6, 3, 4, 4), dict(stride=2, padding=1)),
                                     ((1, 5, 9, 8), (5, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
                                     ((1, 4, 9, 7), (4, 2, 3, 2), dict(stride=(3, 1), padding=(2, 0), dilation=2)),
                                     ((2, 4, 3, 4, 5), (4, 1, 2, 3, 2), dict(stride=(1, 2, 3), groups=2)),
                                     ((2, 3, 11), (3, 2, 5), dict(stride=3, padding=2, dilation=2))]:
                x, w = rng.standard_normal(xs), rng.standard_normal(ws)
                b = rng.standard_normal(ws[1] * geometry.get("groups", 1))
                np.testing.assert_allclose(run_variant(variant, x, w, b, **geometry),
                                           conv_transpose_ref(x, w, b, **geometry), rtol=1e-10, atol=1e-10)
        finally:
            fd.clear_caches()


@pytest.mark.parametrize("xs, ws, geometry", [
    ((2, 6, 30), (6, 1, 16), dict(stride=4, padding=3)),                        # 1-D, long kernel (iSTFT-like)
    ((1, 5, 9, 7), (5, 2, 5, 4), dict(stride=(2, 3), padding=(1, 0), dilation=(1, 2))),  # 2-D: row slabs
    ((1, 3, 6, 5), (3, 1, 2, 2), dict(stride=2)),                               # every output written once
    ((1, 4, 8, 2, 2), (4, 1, 4, 2, 2), dict(stride=(4, 1, 1), padding=(1, 0, 0))),  # 3-D: depth slabs
])
def test_scatter_gemm_slabs(xs, ws, geometry):
    """A sample whose columns alone exceed the output is cut into slabs along its outermost axis, added in turn."""
    plan = geo.make_plan(xs, ws, np.float64, np.float64, geometry.get("stride"), geometry.get("padding", 0), 0, 1,
                         geometry.get("dilation", 1))
    n, cb, slab = sg.chunks(plan)
    assert n == 1 and slab < plan.axes[sg.slab_axis(plan)].size_in
    assert sg.scratch_elements(plan) <= np.prod(plan.out_shape)
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[1])
    np.testing.assert_allclose(run_variant("scatter-gemm", x, w, b, **geometry),
                               conv_transpose_ref(x, w, b, **geometry), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs, ws, geometry", [
    ((1, 12, 48, 20), (12, 1, 5, 5), dict(stride=2, padding=2, output_padding=1)),   # super-resolution's last layer
    ((1, 10, 17, 9), (10, 2, 4, 3), dict(stride=(3, 2), padding=(1, 1), dilation=(2, 1))),
    ((1, 6, 12, 10), (6, 1, 2, 2), dict(stride=2)),                             # every output written once
    ((1, 8, 12, 4, 4), (8, 1, 3, 2, 2), dict(stride=2, padding=(1, 0, 0))),   # 3-D: depth parts
    ((1, 9, 120), (9, 1, 16), dict(stride=4, padding=3)),                       # 1-D
])
@pytest.mark.parametrize("workers", [2, 3])
def test_scatter_gemm_slab_parts(xs, ws, geometry, workers):
    """A batch-1 call whose one chunk is a sample cut in slabs spreads its slabs over the workers: parts of equal
    input ranges, each part's first slabs (those reaching the previous part's outputs) into a buffer added after
    all parts, in part order. The definition's values within the memory rule, the same bits on any number of
    threads, and buffers only where two parts meet."""
    plan = geo.make_plan(xs, ws, np.float64, np.float64, geometry.get("stride"), geometry.get("padding", 0),
                         geometry.get("output_padding", 0), 1, geometry.get("dilation", 1))
    parts = sg._slab_parts(plan, (1, ws[1], 1), workers)  # (a one-chunk call: every channel, one sample)
    assert parts is not None and len(parts.ranges) == workers
    assert parts.ranges[0][0] == 0 and parts.ranges[-1][1] == plan.axes[sg.slab_axis(plan)].size_in
    assert all(a[1] == b[0] for a, b in zip(parts.ranges, parts.ranges[1:]))
    out = int(np.prod(plan.out_shape))
    assert len(parts.ranges) * sg._scratch(plan, 1, ws[1], parts.slab) + parts.private <= out
    assert parts.buffered[0] == 0 and (not sg.exactly_once(plan) or parts.private == 0)
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[1])
    expected = conv_transpose_ref(x, w, b, **geometry)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            y = np.full(plan.out_shape, np.nan)
            y5 = y.reshape((1, ws[1]) + tuple(a.size_out for a in plan.axes))
            sg._run_parts(plan, parts, x.reshape((1, xs[1]) + tuple(a.size_in for a in plan.axes)),
                          w.reshape(ws[:2] + tuple(a.kernel for a in plan.axes)), b, y5)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
        results.append(y)
    np.testing.assert_array_equal(results[0], results[1])


def test_scatter_gemm_runs_slab_parts_for_a_one_chunk_call():
    """The variant itself takes the parts when its one chunk is a cut sample and the pool has workers, and its
    scratch (columns of every part, buffers) stays within the output."""
    if max_threads() > 4:
        pytest.skip("the layer is sized for pools of up to 4 workers")
    xs, ws, geometry = (1, 8, 160, 8), (8, 1, 9, 9), dict(stride=2, padding=4, output_padding=1)
    plan = geo.make_plan(xs, ws, np.float32, np.float32, 2, 4, 1, 1, 1)
    n, cb, slab = sg.chunks(plan)
    assert (n, cb) == (1, 1) and slab < 160
    assert (sg.slab_parts(plan) is not None) == (max_threads() > 1)
    assert sg.scatter_scratch(plan) <= np.prod(plan.out_shape)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32)
    np.testing.assert_allclose(run_variant("scatter-gemm", x, w, **geometry), conv_transpose_ref(x, w, **geometry),
                               **tolerance(np.float32))


@pytest.mark.parametrize("xs, ws, geometry", [
    ((2, 6, 30), (6, 2, 80), dict(stride=40, padding=3)),                       # iSTFT-like overlap-add
    ((3, 4, 5, 4), (4, 3, 3, 70), dict(stride=(2, 32), padding=(1, 5), dilation=(1, 1))),
    ((2, 4, 3, 9), (4, 2, 2, 40), dict(stride=(1, 33), padding=(0, 7), output_padding=(0, 2))),
    ((2, 4, 6), (4, 2, 32), dict(stride=32)),                                   # every output once: the tap path
])
def test_scatter_gemm_wide_strides(xs, ws, geometry):
    """Strides of WIDE_STRIDE and more add each input pixel's taps into contiguous output (slabs or not)."""
    assert max(np.atleast_1d(geometry["stride"])) >= sg.WIDE_STRIDE
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[1])
    np.testing.assert_allclose(run_variant("scatter-gemm", x, w, b, **geometry),
                               conv_transpose_ref(x, w, b, **geometry), rtol=1e-10, atol=1e-10)


@given(g=geometries(channels=(3, 2)), batch=st.integers(1, 2))
def test_ranked_variants_keep_the_memory_rule(g, batch):
    """``plan`` ranks only variants whose scratch (all workers) fits in one output's size."""
    kw = geometry_kwargs(g)
    plan = geo.make_plan((batch, g["c_in"]) + tuple(g["spatial"]), (g["c_in"], g["c_out"] // g["groups"]) +
                         tuple(g["kernel"]), np.float32, np.float32, kw["stride"], kw["padding"],
                         kw["output_padding"], kw["groups"], kw["dilation"])
    choice = _cost.choose(plan)
    assert choice.estimates
    for variant, _ in choice.estimates:
        assert _cost.scratch_elements(plan, variant) <= np.prod(plan.out_shape), variant


def test_pixel_tasks_cover_every_output_row_once(monkeypatch):
    """Row blocks of the pixels-major variants partition the output rows; each reads the rows it needs."""
    monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", 200)
    fd.clear_caches()
    try:
        plan = geo.make_plan((2, 3, 9, 8), (3, 2, 3, 4), np.float64, np.float64, (2, 3), (1, 2), (1, 0))
        task_list, max_pixels = pg.tasks(plan)
        o_h = plan.axes[1].size_out
        for j in range(2):
            blocks = sorted((t[3], t[4]) for t in task_list if t[1] == j and t[2] == 1)
            assert len(blocks) > 1 and blocks[0][0] == 0 and blocks[-1][1] == o_h
            assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        assert max_pixels == max((t[6] - t[5]) * 8 for t in task_list)
        assert max_pixels < 9 * 8
    finally:
        fd.clear_caches()


def test_scratch_within_one_output():
    for xs, ws, geometry in [((64, 512, 4, 4), (512, 256, 4, 4), dict(stride=2, padding=1)),
                             ((1, 64, 375, 250), (64, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
                             # one sample's columns exceed the output: scatter-gemm cuts it into slabs
                             ((1, 64, 128, 128), (64, 3, 8, 8), dict(stride=4, padding=2)),
                             ((1, 512, 64, 64), (512, 256, 2, 2), dict(stride=2)),
                             ((64, 64, 32, 32), (64, 3, 4, 4), dict(stride=2, padding=1))]:
        plan = geo.make_plan(xs, ws, np.float32, np.float32, geometry.get("stride"), geometry.get("padding", 0),
                             geometry.get("output_padding", 0))
        out = int(np.prod(plan.out_shape))
        assert 0 < sg.scratch_elements(plan) <= out
        # the row-block variants' tap-major weight copy alone may exceed the output (dcgan_l1): then no candidate
        ranked = dict(_cost.choose(plan).estimates)
        assert pg.scratch_elements(plan) <= out or not {"scatter-gemm-rows", "gather-gemm-rows"} & set(ranked)
        # gather-gemm: within one output, except the per-worker phase weights when they alone are larger
        phase_weights = max(int(np.prod(e[2])) for e in gg.phase_table(plan)) * plan.c_in * (plan.c_out // plan.groups)
        assert gg.scratch_elements(plan) <= max(out, 2 * max_threads() * phase_weights)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bitwise_across_threads_and_calls(variant):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 40, 9, 7)).astype(np.float32)
    w = rng.standard_normal((40, 24, 4, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    geometry = dict(stride=(2, 3), padding=1)
    x3 = rng.standard_normal((1, 16, 40, 9)).astype(np.float32)  # 3 output channels: channel-major row blocks
    w3 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    before = numba.get_num_threads()
    results, results3 = [], []
    try:
        for threads in (1, max(1, min(2, numba.config.NUMBA_NUM_THREADS)), 1):
            numba.set_num_threads(threads)
            with threadpoolctl.threadpool_limits(threads):
                results.append(run_variant(variant, x, w, b, **geometry))
                results.append(run_variant(variant, x, w, b, **geometry))
                results3.append(run_variant(variant, x3, w3, stride=2, padding=1, output_padding=1))
    finally:
        numba.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    for r in results3[1:]:
        np.testing.assert_array_equal(r, results3[0])


# ------------------------------------------------------------------------------------------ plan


def test_plan_reports_every_variant():
    choice = fd.plan((64, 256, 8, 8), (256, 128, 4, 4), stride=2, padding=1)  # DCGAN block: all variants apply
    assert isinstance(choice, _cost.Choice)  # but gather-plane (one input channel per group only) and the 1-D one
    names = [name for name, _ in choice.estimates]
    assert sorted(names) == sorted(set(_cost.VARIANTS) - {"gather-plane", *RESTRICTED})
    assert choice.variant == names[0]
    seconds = [sec for _, sec in choice.estimates]
    assert seconds == sorted(seconds) and all(s > 0 for s in seconds)
    assert choice.method == _cost.FORM_OF[choice.variant]
    assert choice.flops == 2 * 64 * 256 * 128 * 64 * 16
    text = repr(choice)
    assert choice.variant in text and "estimates" in text and "gather-direct" in text
    with pytest.raises(AttributeError):
        choice.variant = "x"  # frozen


def test_plan_restricted_to_a_form():
    for form in ("scatter", "gather"):
        choice = fd.plan((2, 8, 5, 5), (8, 4, 3, 3), stride=2, method=form)
        assert choice.method == form
        assert all(_cost.FORM_OF[name] == form for name, _ in choice.estimates)
    choice = fd.plan((2, 8, 5, 5), (8, 4, 3, 3), stride=2, method="zerofill")
    assert choice.variant == "zerofill" and choice.estimates == ()


def test_plan_channel_heavy_uses_blas_and_tiny_runs_serially():
    assert fd.plan((64, 512, 4, 4), (512, 256, 4, 4), stride=2, padding=1).variant.endswith("gemm")
    tiny = fd.plan((1, 4, 3, 3), (4, 2, 3, 3), stride=2, padding=1, output_padding=1)
    assert tiny.variant.endswith("direct") and tiny.serial


def test_plan_matches_dispatch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 6, 6)).astype(np.float32)
    w = rng.standard_normal((16, 8, 4, 4)).astype(np.float32)
    choice = fd.plan(x.shape, w.shape, stride=2, padding=1)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1)
    assert _api.choose_method(plan) == choice.method
    np.testing.assert_allclose(fd.conv_transpose(x, w, stride=2, padding=1),
                               conv_transpose_ref(x, w, stride=2, padding=1), **tolerance(np.float32))


@pytest.mark.parametrize("bad, match", [
    (dict(x_shape="abc"), "x_shape"),
    (dict(w_shape=(4, 2)), "weight"),
    (dict(x_shape=(1, 3, 3, 3)), "input channels"),
    (dict(stride=0), "stride"),
    (dict(method="fast"), "method"),
    (dict(x_shape=(1, 4, -3, 3)), "x_shape"),
])
def test_plan_validates(bad, match):
    args = dict(x_shape=(1, 4, 3, 3), w_shape=(4, 2, 3, 3))
    args.update(bad)
    x_shape, w_shape = args.pop("x_shape"), args.pop("w_shape")
    with pytest.raises((TypeError, ValueError), match=match):
        fd.plan(x_shape, w_shape, **args)


def test_hot_path_validates_new_calls():
    """The per-call cache never lets an invalid call through (each call below is new to it)."""
    x, w = np.ones((1, 2, 5), np.float32), np.ones((2, 1, 3), np.float32)
    with pytest.raises(TypeError, match="stride"):
        fd.conv_transpose(x, w, stride=True)
    with pytest.raises(TypeError, match="stride"):
        fd.conv_transpose(x, w, stride=2.0)
    with pytest.raises(ValueError, match="method"):
        fd.conv_transpose(x, w, method="fast")
    with pytest.raises(ValueError, match="input channels"):
        fd.conv_transpose(np.ones((1, 3, 5), np.float32), w)
    np.testing.assert_array_equal(fd.conv_transpose(x, w, stride=2), conv_transpose_ref(x, w, stride=2))
    np.testing.assert_array_equal(fd.conv_transpose(x, w, stride=2), conv_transpose_ref(x, w, stride=2))
    with pytest.raises(TypeError, match="bias"):
        fd.conv_transpose(x, w, bias=np.ones(1, np.complex64), stride=2)
    with pytest.raises(ValueError, match="bias"):
        fd.conv_transpose(x, w, bias=np.ones(2, np.float32), stride=2)


@pytest.mark.parametrize("method", ["scatter", "gather", "auto"])
def test_forms_pick_gemm_on_channel_heavy_layers(method):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 64, 6, 6)).astype(np.float32)
    w = rng.standard_normal((64, 48, 4, 4)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    y = fd.conv_transpose(x, w, b, stride=2, padding=1, method=method)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, b, stride=2, padding=1), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(fd.conv_transpose(x, w, b, stride=2, padding=1, method=method), y)


def test_concurrent_gemm_calls_and_blas_threads_restored(small_chunks):
    """Several Python threads at once through the worker pool (many chunks: every call splits them among
    workers); BLAS gets its thread count back afterwards."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 32, 5, 5)).astype(np.float32)
    w = rng.standard_normal((32, 40, 4, 4)).astype(np.float32)
    geometry = dict(stride=2, padding=1)
    expected = {v: run_variant(v, x, w, **geometry) for v in VARIANTS}
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    def job(variant):
        return all(np.array_equal(run_variant(variant, x, w, **geometry), expected[variant]) for _ in range(3))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(job, list(VARIANTS) * 4))
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert after == before


def test_plan_few_output_channels_uses_pixels_major_gemm():
    """RGB output layers (C_out * K short): the X^T @ W orientation for the scatter form (auto and the gather
    form take gather-plane, which needs no GEMM: see test_plane)."""
    args = ((64, 64, 32, 32), (64, 3, 4, 4))
    scatter = fd.plan(*args, stride=2, padding=1, method="scatter")
    assert scatter.variant == "scatter-gemm-rows"
    estimates = dict(fd.plan(*args, stride=2, padding=1).estimates)
    assert estimates["scatter-gemm-rows"] < estimates["scatter-gemm"]
    assert estimates["gather-gemm-rows"] < estimates["gather-gemm"]
    assert "scatter-gemm-rows" in repr(scatter)


@pytest.mark.parametrize("kernel, stride, padding, output_padding, dilation, once", [
    ((2, 2), 2, 0, 0, 1, True),     # U-Net up-convolution (each output row: two cols rows interleaved)
    ((2, 2), 2, 1, 0, 1, True),     # cropped: the two column taps reach different inputs (the tap-by-tap path)
    ((3, 2), (3, 2), (1, 0), (1, 0), 1, True),  # the output padding exactly refills the crop
    ((4, 4), 2, 1, 0, 1, False),    # overlapping taps
    ((2, 2), 2, 0, 1, 1, False),    # the output padding leaves a bias-only row
    ((2, 2), 3, 0, 0, 1, False),    # gaps between footprints
    ((2, 2), 2, 0, 0, 2, False),    # dilation makes the taps collide
])
def test_scatter_gemm_writes_once_when_every_output_has_one_term(kernel, stride, padding, output_padding, dilation,
                                                                   once):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((5, 3) + kernel).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    geometry = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, stride, padding, output_padding, 1, dilation)
    assert sg.exactly_once(plan) is once
    y = run_variant("scatter-gemm", x, w, bias, **geometry)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, bias, **geometry), **tolerance(np.float32))


# Geometries for the scatter-gemm chunk paths (sample-minor blocks, the gather twin): (spatial, kernel, stride,
# padding, output_padding, dilation)
CHUNK_GEOMETRIES = [
    ((4, 4), (4, 4), 2, 1, 0, 1),          # DCGAN's first block, in small
    ((3, 5), (2, 2), 2, 0, 0, 1),          # exactly once
    ((3, 4), (3, 2), (2, 3), (1, 0), (1, 2), (1, 2)),  # output padding, uneven strides and dilations
    ((6,), (5,), 3, 2, 1, 1),              # 1-D
    ((2, 3, 2), (2, 3, 2), 2, (0, 1, 0), 0, 1),  # 3-D
    ((2, 70), (2, 6), (1, 4), (0, 2), (0, 1), 1),  # stride-4 tap groups (rows >= GROUPED_ROW), edges, 2 left over
    ((5,), (80,), 32, 3, 0, 1),            # iSTFT-like: wide stride, pixels-major GEMM, pixel-by-pixel adds
    ((2, 4), (1, 40), (1, 32), (0, 5), 0, (1, 2)),  # the same, dilated, after a row axis
]


def _chunk_case(seed, batch, spatial, kernel, stride, padding, output_padding, dilation):
    """(x, w, bias, geometry, plan) for a 6 -> 5 channel layer of one of CHUNK_GEOMETRIES."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 6) + spatial).astype(np.float32)
    w = rng.standard_normal((6, 5) + kernel).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    geometry = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, stride, padding, output_padding, 1, dilation)
    return x, w, bias, geometry, plan


@pytest.mark.parametrize("spatial, kernel, stride, padding, output_padding, dilation", CHUNK_GEOMETRIES)
def test_scatter_gemm_sample_minor(monkeypatch, spatial, kernel, stride, padding, output_padding, dilation):
    """Blocks of >= MINOR_SAMPLES samples are packed sample-minor and summed by col2im_minor: same bits as the
    sample-major path, and the reference's values."""
    x, w, bias, geometry, plan = _chunk_case(5, 11, spatial, kernel, stride, padding, output_padding, dilation)
    size = plan.axes[sg.slab_axis(plan)].size_in
    monkeypatch.setattr(sg, "chunks", lambda p: (8, 2, size))  # blocks of 8 and 3 samples, 2 and 2 and 1 channels
    assert sg.minor(plan, 8) and not sg.minor(plan, 3)
    y = run_variant("scatter-gemm", x, w, bias, **geometry)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, bias, **geometry), **tolerance(np.float32))
    monkeypatch.setattr(sg, "MINOR_SAMPLES", 1 << 30)
    np.testing.assert_array_equal(run_variant("scatter-gemm", x, w, bias, **geometry), y)


@pytest.mark.parametrize("spatial, kernel, stride, padding, output_padding, dilation", CHUNK_GEOMETRIES)
def test_gather_cols_sums_the_scatter_terms(monkeypatch, spatial, kernel, stride, padding, output_padding, dilation):
    """gather-gemm-cols runs scatter-gemm's chunks and GEMMs, then sums each output's terms in the same (tap)
    order: the same bits as scatter-gemm, on blocks of several samples and channels and on a sample cut in
    slabs (each slab's sums added to the partial sums of the one before)."""
    x, w, bias, geometry, plan = _chunk_case(6, 7, spatial, kernel, stride, padding, output_padding, dilation)
    size = plan.axes[sg.slab_axis(plan)].size_in
    expected = conv_transpose_ref(x, w, bias, **geometry)
    for chunk in [(3, 2, size), (1, 3, max(1, size // 2)), (1, 5, 1)]:  # sample blocks; slabs of one sample
        monkeypatch.setattr(sg, "chunks", lambda p, chunk=chunk: chunk)
        y = run_variant("gather-gemm-cols", x, w, bias, **geometry)
        np.testing.assert_allclose(y, expected, err_msg=str(chunk), **tolerance(np.float32))
        np.testing.assert_array_equal(y, run_variant("scatter-gemm", x, w, bias, **geometry), err_msg=str(chunk))


@pytest.mark.parametrize("xs, ws, geometry", [
    ((1, 32, 4, 4), (32, 8, 4, 4), dict(stride=2, padding=1)),               # batch-1 weight-heavy block
    ((2, 16, 5), (16, 6, 4), dict(stride=2, padding=1, dilation=2)),          # 1-D, dilated
    ((1, 8, 2, 4, 4), (8, 4, 2, 2, 2), dict(stride=(1, 2, 2))),              # 3-D
])
def test_few_pixels_run_pixels_major_in_both_forms(xs, ws, geometry):
    """Chunks of at most PIXELS_MAJOR_PIXELS pixels run the GEMM pixels-major (the weight read row by row) in
    scatter-gemm and gather-gemm-cols alike: the definition's values, and the same bits in both forms."""
    plan = geo.make_plan(xs, ws, np.float32, np.float32, geometry.get("stride"), geometry.get("padding", 0),
                         geometry.get("output_padding", 0), 1, geometry.get("dilation", 1))
    n = sg.chunks(plan)[0]
    assert sg.few_pixels(plan, n) and sg.pixels_major(plan, n)
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32)
    b = rng.standard_normal(ws[1], dtype=np.float32)
    y = run_variant("scatter-gemm", x, w, b, **geometry)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, b, **geometry), **tolerance(np.float32))
    np.testing.assert_array_equal(run_variant("gather-gemm-cols", x, w, b, **geometry), y)


def test_gather_cols_is_the_gather_form_of_weight_heavy_layers():
    """DCGAN's first blocks: the phase weights leave gather-gemm thin GEMMs; the gather form takes scatter-gemm's
    chunks instead, within the memory rule."""
    for x_shape, w_shape in [((64, 512, 4, 4), (512, 256, 4, 4)), ((16, 1024, 4, 4), (1024, 512, 4, 4))]:
        choice = fd.plan(x_shape, w_shape, stride=2, padding=1, method="gather")
        assert choice.variant == "gather-gemm-cols", choice
        estimates = dict(choice.estimates)
        assert estimates["gather-gemm-cols"] < estimates["gather-gemm"] / 2
        plan = geo.make_plan(x_shape, w_shape, np.float32, np.float32, 2, 1)
        assert 0 < _cost.scratch_elements(plan, "gather-gemm-cols") <= np.prod(plan.out_shape)


_INTERRUPT_SCRIPT = r"""
import os, signal, threading, time
import numpy as np
import fastdeconv as fd

rng = np.random.default_rng(0)
x = rng.standard_normal((32, 128, 16, 16)).astype(np.float32)
w = rng.standard_normal((128, 64, 4, 4)).astype(np.float32)
kw = dict(stride=2, padding=1, method="scatter")
assert fd.plan(x.shape, w.shape, stride=2, padding=1, method="scatter").variant == "scatter-gemm"
expected = fd.conv_transpose(x, w, **kw)
buf = np.empty_like(expected)
in_call = [False]

def handler(signum, frame):  # Ctrl-C, but only while a call runs (not in this script's own bookkeeping)
    if in_call[0]:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, handler)

def call():
    in_call[0] = True
    try:
        fd.conv_transpose(x, w, out=buf, **kw)
    finally:
        in_call[0] = False

interrupted = still_writing = wrong = 0
for trial in range(20):
    def fire(delay=0.002 + 0.0007 * trial):
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)
    t = threading.Thread(target=fire)
    got = False
    t.start()
    while True:
        try:
            if not got:
                for _ in range(50):
                    call()
            t.join()
            time.sleep(0.01)
            break
        except KeyboardInterrupt:
            in_call[0] = False
            got = True
            snapshot = buf.copy()
            time.sleep(0.002)  # a worker of the interrupted call still running would change buf meanwhile
            still_writing += not np.array_equal(buf, snapshot, equal_nan=True)
            # at once, as a user retrying would: the next call into the same buffer (later signals ignored)
            fd.conv_transpose(x, w, out=buf, **kw)
            wrong += not np.array_equal(buf, expected)
    interrupted += got
print(interrupted, still_writing, wrong)
"""


def test_double_interrupt_stops_every_worker_before_returning():
    """Issue 18.3: two Ctrl-C 2 ms apart during a parallel scatter-gemm call into ``out=``: the call returns
    only when its workers have stopped (nothing writes into ``out`` afterwards), and the next call is right."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_NUM_THREADS": "4"}  # more workers than cores: they lag behind
    proc = subprocess.run([sys.executable, "-c", _INTERRUPT_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    interrupted, still_writing, wrong = map(int, proc.stdout.split()[-3:])
    assert interrupted >= 1  # the signals did land in calls
    assert still_writing == 0 and wrong == 0


def test_set_num_threads_during_a_parallel_call_is_what_blas_gets_back():
    """BLAS thread control is written once (``_blas``): a set_num_threads while a parallel call holds BLAS
    single-threaded becomes the count restored when the call ends (it used to be undone by the restore)."""
    from fastdeconv import _blas

    try:
        with _blas.single_threaded_blas():
            fd.set_num_threads(1)
            inside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
            assert inside and all(n == 1 for n in inside)
        after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert after and all(n == 1 for n in after)
    finally:
        fd.set_num_threads(max_threads())
    restored = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert all(n == max_threads() for n in restored)


@pytest.mark.parametrize("geometry", [dict(stride=256), dict(stride=96, padding=40, dilation=3),
                                      dict(stride=5, padding=2)])
def test_row_gather_tables_hold_the_pairs_a_column_has_not_the_kernel(geometry):
    """gather-gemm-rows' per-output-column tables hold each column's (tap, input) pairs: about kernel / stride of
    them, not the kernel's length (an iSTFT-like 1024-tap layer made that o_w x 1024 int64 twice per task,
    gigabytes, and a second per call); the gather still matches the reference on such a layer."""
    from fastdeconv._kernels.pixel_gemm import source_columns

    x_shape, w_shape = (2, 3, 40), (3, 1, 1024)
    plan = geo.make_plan(x_shape, w_shape, np.dtype(np.float64), np.dtype(np.float64), geometry["stride"],
                         geometry.get("padding", 0), 0, 1, geometry.get("dilation", 1))
    in_shape, kernel, stride, taps = sg.geometry_arrays(plan)
    o_w = plan.axes[2].size_out
    count, tap, src = source_columns(o_w, taps, stride[2], kernel[2], 1)
    reach = -(-kernel[2] // (stride[2] // np.gcd(stride[2], geometry.get("dilation", 1))))
    assert tap.shape == src.shape == (o_w, max(1, count.max())) and count.max() <= reach
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    np.testing.assert_allclose(run_variant("gather-gemm-rows", x, w, **geometry), conv_transpose_ref(x, w, **geometry),
                               rtol=1e-10, atol=1e-10)


def test_channels_last_tables_hold_the_pairs_an_output_has_not_the_kernel():
    """The channels-last variants' per-output (tap, input) tables are as wide as the most pairs an output has,
    not twice the longest kernel (an iSTFT-like layer's table was 3 x o_w x 2,048 int64, gigabytes reserved)."""
    from fastdeconv.variants import channels_last as cl

    plan = geo.make_plan((2, 40, 3), (3, 1, 1024), np.dtype(np.float64), np.dtype(np.float64), 256, 0,
                         options=geo.PlanOptions(data_format="channels_last"))
    tabs, counts = cl.tables(plan)
    assert tabs.shape == (3, plan.axes[2].size_out, 2 * counts.max()) and counts.max() <= 4
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 40, 3)), rng.standard_normal((3, 1, 1024))
    y = fd.conv_transpose(x, w, stride=256, data_format="channels_last", method="gather-gemm-nhwc")
    np.testing.assert_allclose(np.moveaxis(y, -1, 1), conv_transpose_ref(np.moveaxis(x, -1, 1), w, stride=256),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("groups", [1, 2])
def test_channels_last_weight_heavy_calls_split_by_output_channels(groups):
    """A one-off channels-last call with more weight than input, the weight read as it is, runs gather-gemm-nhwc
    by blocks of output channels (each block's GEMM streams its columns of the weight once, against every pixel):
    equal to the reference with bias and activation, the same bits at 1 and 2 threads, and an operator (its weight
    packed tap-major, split by pixels) agrees to rounding."""
    from fastdeconv.variants import channels_last as cl

    rng = np.random.default_rng(21)
    x, w = rng.standard_normal((2, 8, 8, 64)), rng.standard_normal((64, 24 // groups, 4, 4))
    b = rng.standard_normal(24)
    kw = dict(stride=2, padding=1, groups=groups, data_format="channels_last")
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1, 0, groups,
                         options=geo.PlanOptions(data_format="channels_last"))
    assert cl.channel_tasks(plan) is not None and cl.tasks(plan) is not None and not cl.tap_major(plan)
    outs = []
    for threads in (1, 2):
        fd.set_num_threads(min(threads, max_threads()))
        try:
            outs.append(fd.conv_transpose(x, w, b, method="gather-gemm-nhwc", activation="relu", **kw))
        finally:
            fd.set_num_threads(max_threads())
    assert np.array_equal(outs[0], outs[1])
    ref = conv_transpose_ref(np.moveaxis(x, -1, 1), w, b, stride=2, padding=1, groups=groups)
    np.testing.assert_allclose(np.moveaxis(outs[0], -1, 1), np.maximum(ref, 0), rtol=1e-10, atol=1e-10)
    op = fd.ConvTranspose(w, b, stride=2, padding=1, groups=groups, data_format="channels_last",
                          method="gather-gemm-nhwc", activation="relu")
    assert np.array_equal(op(x), outs[0])  # (its weight kept as it is: the same blocks, the same bits)
    # a layer whose one output row's input already breaks the pixel split's memory rule: only by channels, and an
    # operator (deciding as a one-off call) runs it the same way
    x, w = rng.standard_normal((1, 5, 5, 16)).astype(np.float32), rng.standard_normal((16, 64, 4, 4)).astype(np.float32)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1, options=geo.PlanOptions(data_format="channels_last"))
    assert cl.tasks(plan) is None and cl.channel_tasks(plan) is not None
    one_off = fd.conv_transpose(x, w, stride=2, padding=1, data_format="channels_last", method="gather-gemm-nhwc")
    op = fd.ConvTranspose(w, stride=2, padding=1, data_format="channels_last", method="gather-gemm-nhwc")
    assert np.array_equal(op(x), one_off)
