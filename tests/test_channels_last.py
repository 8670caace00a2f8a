"""``data_format="channels_last"``: the reference on transposed data, every channels-last variant forced, 1-D to 3-D,
groups, unbatched; the operator, ``plan``, ``conv`` and the Dask twin; the wrong layout refused."""


import numpy as np
import pytest
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _api, _threads, variants
from fastdeconv import _geometry as geo

CASES = [
    ((2, 8, 5, 6), (8, 6, 4, 4), dict(stride=2, padding=1)),
    ((1, 4, 7), (4, 3, 3), dict(stride=3, padding=1)),
    ((2, 6, 3, 4, 3), (6, 2, 3, 3, 2), dict(stride=2, groups=2)),
    ((2, 16, 6, 6), (16, 8, 3, 3), dict(stride=1, padding=1)),
    ((1, 3, 9, 9), (3, 1, 4, 4), dict(stride=2, padding=1, groups=3)),  # depthwise
    ((3, 9, 9), (3, 2, 2, 2), dict(stride=2, dilation=2, output_padding=1)),  # unbatched
    ((3, 1, 7, 6), (1, 1, 3, 3), dict(stride=2)),  # one channel: the channels-first bytes
    ((2, 32, 12, 10), (32, 3, 4, 4), dict(stride=2, padding=1)),  # few output channels
    ((1, 16, 5, 5), (16, 64, 4, 4), dict(stride=2, padding=1)),  # weight-heavy: the GEMM reads it in place
    ((2, 8, 5, 6), (8, 1, 4, 4), dict(stride=2, padding=1)),  # one output channel: x read in place
]


def last(a, rank):
    return np.ascontiguousarray(np.moveaxis(a, a.ndim - rank - 1, -1))


def _forced_case(case, seed, with_bias):
    """A forced-variant case's float32 arrays (x, weight, bias), its geometry, rank, channels-last x, the
    channels-last reference and the channels-last plan (``with_bias``: the plan knows the bias)."""
    x_shape, w_shape, kw = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * kw.get("groups", 1)).astype(np.float32)
    rank = w.ndim - 2
    xl = last(x, rank)
    plan = geo.make_plan(xl.shape, w.shape, xl.dtype, w.dtype, **kw, options=geo.PlanOptions(
        bias_shape=b.shape if with_bias else None, data_format="channels_last"))
    return x, w, b, kw, rank, xl, last(conv_transpose_ref(x, w, b, **kw), rank), plan


def arrays(case, dtype=np.float32):
    x_shape, w_shape, kw = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[1] * kw.get("groups", 1)).astype(dtype)
    return x, w, b, kw


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_channels_last_variant_forced(case):
    x, w, b, kw = arrays(case)
    rank = w.ndim - 2
    xl = last(x, rank)
    expected = last(conv_transpose_ref(x, w, b, **kw), rank)
    base = geo.make_plan(xl.shape, w.shape, xl.dtype, w.dtype, **kw,
                         options=geo.PlanOptions(bias_shape=b.shape, data_format="channels_last"))
    assert base.out_shape == expected.shape
    ran = []
    for variant in variants.names(baseline=True, layout="channels_last"):
        plan, request = base, geo.make_request(variant)
        if not (variants.get(variant).applies(plan) and variants.get(variant).candidate_for(plan, request.method)):
            continue
        ran.append(variant)
        prepared = _api.prepared(plan, request)
        y = np.full(plan.out_shape, np.nan, np.float32)
        prepared.execute(xl.reshape(prepared.x5_shape), w.reshape(prepared.w5_shape), b,
                          y.reshape(prepared.y5_shape))
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4, err_msg=variant)
    assert "gather-direct-nhwc" in ran and all(variants.get(v).channels_last for v in ran)
    y = fd.conv_transpose(xl, w, b, **kw, data_format="channels_last")
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    op = fd.ConvTranspose(w, b, **kw, data_format="channels_last", activation="relu")
    np.testing.assert_allclose(op(xl), np.maximum(expected, 0), rtol=1e-4, atol=1e-4)


def test_common_layers_run_natively():
    """2-D channel-rich and few-channel layers run a channels-last kernel, not a transposing route."""
    for x_shape, w_shape in [((8, 64, 8, 8), (64, 32, 4, 4)), ((2, 64, 32, 32), (64, 3, 4, 4)),
                             ((4, 3, 16, 16), (3, 16, 3, 3))]:
        xl = x_shape[:1] + x_shape[2:] + x_shape[1:2]
        choice = fd.plan(xl, w_shape, stride=2, padding=1, data_format="channels_last")
        assert variants.get(choice.variant).channels_last and not choice.variant.startswith("transpose-"), choice
        assert all(not name.startswith("transpose-") for name, _ in choice.estimates)


def test_float64_groups_and_gemm_variant():
    x, w, b, kw = arrays(2, np.float64)
    xl = last(x, 3)
    expected = last(conv_transpose_ref(x, w, b, **kw), 3)
    np.testing.assert_allclose(fd.conv_transpose(xl, w, b, **kw, data_format="channels_last"), expected, rtol=1e-10,
                               atol=1e-10)


def test_wrong_layout_is_refused():
    x = np.ones((2, 5, 6, 8), np.float32)  # NCHW with 5 channels, or NHWC with 8
    w = np.ones((8, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"x has 5 input channels.*data_format='channels_first'"):
        fd.conv_transpose(x, w)
    fd.conv_transpose(x, w, data_format="channels_last")
    with pytest.raises(ValueError, match=r"x has 5 input channels on its last axis \(data_format=.channels_last."):
        fd.conv_transpose(np.ones((2, 8, 6, 5), np.float32), w, data_format="channels_last")
    with pytest.raises(ValueError, match="data_format"):
        fd.conv_transpose(x, w, data_format="NHWC")
    with pytest.raises(ValueError, match="data_format"):
        fd.ConvTranspose(w, data_format=None)
    with pytest.raises(ValueError, match=r"x has 5 .*data_format='channels_last'"):
        fd.ConvTranspose(w, data_format="channels_last")(np.ones((2, 6, 8, 5), np.float32))
    with pytest.raises(ValueError, match=r"x has 6 input channels.*data_format='channels_last'"):
        fd.conv(np.ones((1, 5, 5, 6)), np.ones((4, 8, 3, 3)), data_format="channels_last")
    with pytest.raises(ValueError, match="data_format"):
        fd.plan((1, 5, 5, 8), w.shape, data_format="channels-last")


def test_conv_channels_last_and_backward():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((5, 3, 3, 3))
    np.testing.assert_allclose(fd.conv(last(x, 2), w, stride=2, data_format="channels_last"),
                               last(fd.conv(x, w, stride=2), 2), rtol=1e-12, atol=1e-12)
    wt = rng.standard_normal((3, 4, 3, 3))
    op = fd.ConvTranspose(wt, stride=2, data_format="channels_last")
    g = rng.standard_normal(op(last(x, 2)).shape)
    gx, gw, gb = op.backward(last(x, 2), g)
    rx, rw, rb = fd.ConvTranspose(wt, stride=2).backward(x, np.moveaxis(g, -1, 1))
    np.testing.assert_allclose(gx, last(rx, 2), rtol=1e-12)
    np.testing.assert_allclose(gw, rw, rtol=1e-12)
    np.testing.assert_allclose(gb, rb, rtol=1e-12)


def test_dask_channels_last():
    da = pytest.importorskip("dask.array")
    import fastdeconv.dask as fdd

    x, w, b, kw = arrays(0)
    xl = last(x, 2)
    expected = fd.conv_transpose(xl, w, b, **kw, data_format="channels_last", activation="sigmoid")
    y = fdd.conv_transpose(da.from_array(xl, chunks=(1, 3, 4, 4)), w, b, **kw, data_format="channels_last",
                           activation="sigmoid")
    assert y.chunks[-1] == (w.shape[1],)
    np.testing.assert_allclose(y.compute(), expected, rtol=1e-5, atol=1e-6)


# gather-winograd-nhwc: layers with kernel % stride == 0 (or stride 1), 1-D to 3-D, groups, dilation, odd sizes, an
# output axis shorter than the stride (H: 1 input row, stride 3 -> 2 outputs)
WINOGRAD_CASES = [
    ((2, 8, 7, 9), (8, 12, 4, 4), dict(stride=2, padding=1)),
    ((1, 6, 9, 11), (6, 24, 3, 3), dict(stride=1, padding=1)),
    ((3, 4, 23), (4, 16, 4), dict(stride=2, padding=1)),
    ((3, 4, 23), (4, 24, 3), dict(stride=1)),
    ((1, 4, 5, 6, 7), (4, 8, 4, 4, 4), dict(stride=2, padding=1)),
    ((2, 6, 8, 8), (6, 8, 4, 4), dict(stride=2, padding=1, groups=3)),
    ((1, 5, 9, 9), (5, 1, 4, 4), dict(stride=2, padding=1, groups=5)),  # depthwise
    ((2, 4, 9, 10), (4, 16, 3, 3), dict(stride=1, padding=2, dilation=2)),
    ((2, 4, 6, 5), (4, 9, 4, 2), dict(stride=2, padding=(1, 0), output_padding=(1, 0))),
    ((2, 8, 1, 4), (8, 16, 6, 6), dict(stride=3, padding=2)),
]
ACTIVATIONS = [(None, lambda v: v), ("relu", lambda v: np.maximum(v, 0)),
               (("leaky_relu", 0.2), lambda v: np.where(v < 0, 0.2 * v, v)), ("tanh", np.tanh),
               (("clamp", -1.0, 1.5), lambda v: np.clip(v, -1.0, 1.5))]


@pytest.mark.parametrize("case", range(len(WINOGRAD_CASES)))
def test_winograd_nhwc_forced(case):
    """The channels-last Winograd variant against the reference on transposed data, with every activation, as a
    one-off call where its schedule fits the memory rule and as an operator; its results are gather-winograd's
    bits, transposed."""
    x, w, b, kw, rank, xl, expected, plan = _forced_case(WINOGRAD_CASES[case], 100 + case, with_bias=False)
    record = variants.get("gather-winograd-nhwc")
    assert record.applies(plan) and record.channels_last
    one_off = record.estimate(plan, 1) is not None
    assert one_off or case in (1, 9)  # (the others' one-off schedules fit: exercised below)
    for activation, f in ACTIVATIONS:
        args = dict(kw, method="gather-winograd-nhwc", activation=activation)
        op = fd.ConvTranspose(w, b, **args, data_format="channels_last")
        y = op(xl)
        np.testing.assert_allclose(y, f(expected), rtol=1e-4, atol=1e-4, err_msg=str(activation))
        first = fd.ConvTranspose(w, b, **dict(args, method="gather-winograd"))(x)
        assert np.array_equal(y, last(first, rank)), activation
        if one_off:
            np.testing.assert_array_equal(fd.conv_transpose(xl, w, b, **args, data_format="channels_last"), y)


def test_winograd_nhwc_float64_and_picked():
    """float64; ``auto`` picks the channels-last Winograd variant where gather-winograd's layers are (DCGAN's
    middle blocks, 3x3 stride-1 layers), and a value it would turn into a wrong Inf runs an exact variant."""
    x_shape, w_shape, kw = WINOGRAD_CASES[0]
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1])
    xl = last(x, 2)
    expected = last(conv_transpose_ref(x, w, b, **kw), 2)
    y = fd.ConvTranspose(w, b, **kw, method="gather-winograd-nhwc", data_format="channels_last")(xl)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    for shapes, geometry in [(((64, 8, 8, 256), (256, 128, 4, 4)), dict(stride=2, padding=1)),
                             (((1, 128, 128, 64), (64, 32, 3, 3)), dict(stride=1, padding=1))]:
        assert fd.plan(*shapes, **geometry, data_format="channels_last").variant == "gather-winograd-nhwc"
    xl = np.ascontiguousarray(xl, np.float32)
    xl[0, 1, 2, 3] = np.inf
    w32 = w.astype(np.float32)
    y = fd.conv_transpose(xl, w32, **kw, method="gather-winograd-nhwc", data_format="channels_last")
    exact = fd.conv_transpose(xl, w32, **kw, method="gather-direct-nhwc", data_format="channels_last")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(exact))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(exact))


# gather-gemm-nhwc-runs: one group, few output channels, no dilation along W; 1-D to 3-D, odd sizes, an output
# axis shorter than the stride
RUNS_CASES = [
    ((2, 32, 12, 10), (32, 3, 4, 4), dict(stride=2, padding=1)),
    ((1, 16, 9, 7), (16, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((2, 8, 30), (8, 2, 5), dict(stride=3, padding=2)),
    ((1, 2, 5, 6, 7), (2, 2, 2, 2, 3), dict(stride=2, padding=(0, 0, 1))),
    ((2, 8, 9, 8), (8, 3, 3, 3), dict(stride=2, padding=1, dilation=(2, 1))),
    ((4, 8, 1, 20), (8, 12, 2, 4), dict(stride=3, padding=(0, 1))),
]


@pytest.mark.parametrize("case", range(len(RUNS_CASES)))
def test_runs_nhwc_forced(case):
    """The few-output-channel channels-last variant against the reference with every activation, as an operator
    and as a one-off call where its weight copy fits the memory rule."""
    x_shape, w_shape, kw = RUNS_CASES[case]
    rng = np.random.default_rng(200 + case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1]).astype(np.float32)
    rank = w.ndim - 2
    xl = last(x, rank)
    expected = last(conv_transpose_ref(x, w, b, **kw), rank)
    plan = geo.make_plan(xl.shape, w.shape, xl.dtype, w.dtype, **kw,
                         options=geo.PlanOptions(data_format="channels_last"))
    record = variants.get("gather-gemm-nhwc-runs")
    assert record.applies(plan) and record.exact
    one_off = record.estimate(plan, 1) is not None
    for activation, f in ACTIVATIONS:
        args = dict(kw, method="gather-gemm-nhwc-runs", activation=activation, data_format="channels_last")
        y = fd.ConvTranspose(w, b, **args)(xl)
        np.testing.assert_allclose(y, f(expected), rtol=1e-4, atol=1e-4, err_msg=str(activation))
        if one_off:
            np.testing.assert_array_equal(fd.conv_transpose(xl, w, b, **args), y)


def test_runs_nhwc_picked_for_rgb_outputs():
    """``auto`` runs the few-output-channel variant on RGB output layers; not with groups or many channels."""
    for x_shape, w_shape, kw in [((64, 32, 32, 64), (64, 3, 4, 4), dict(stride=2, padding=1)),
                                 ((1, 375, 250, 64), (64, 3, 3, 3), dict(stride=2, padding=1, output_padding=1))]:
        assert fd.plan(x_shape, w_shape, **kw, data_format="channels_last").variant == "gather-gemm-nhwc-runs"
    record = variants.get("gather-gemm-nhwc-runs")
    for w_shape, groups in [((8, 32, 4, 4), 1), ((8, 1, 4, 4), 8)]:
        plan = geo.make_plan((2, 9, 9, 8), w_shape, np.float32, np.float32, stride=2, groups=groups,
                             options=geo.PlanOptions(data_format="channels_last"))
        assert not record.applies(plan)


@pytest.mark.parametrize("method", ["scatter", "zerofill", "gather"])
def test_a_requested_form_whose_routes_all_outgrow_the_output_still_runs(method):
    """More input than output (6 -> 4 channels, stride 1): a transposing route's copy of x breaks the memory rule
    for every candidate of the form; the planner then runs the one with the least scratch instead of failing."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    y = fd.conv_transpose(x, w, padding=1, method=method, data_format="channels_last")
    ref = conv_transpose_ref(x.transpose(0, 3, 1, 2), w, padding=1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert fd.plan(x.shape, w.shape, padding=1, method=method, data_format="channels_last").variant


def test_a_small_channels_last_call_is_one_kernel_call(monkeypatch):
    """A small channels-last call runs ``nhwc_direct`` once, in the calling thread, on the weight as given: no
    per-call re-layout of the weight and no task hand-out from Python (a 3x3 call took 3x its channels-first
    twin). Same values as the reference, same bits as an operator's (tap-major) weight and as the pooled path."""
    from fastdeconv.variants import channels_last

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)  # (N, H, W, C_in)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, data_format="channels_last", method="gather-direct-nhwc")
    op = fd.ConvTranspose(w, **kw)
    kept = op(x)  # (its pack made here: tap-major)
    pooled = np.empty_like(kept)  # the pool's driver on the tap-major weight, as a larger call runs
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1, 1,
                         options=geo.PlanOptions(data_format="channels_last"))
    tap_major = channels_last.direct_pack(plan, w.reshape(6, 5, 1, 3, 3))
    channels_last.direct_run(plan, x.reshape((2, 1, 3, 4, 6)), tap_major, np.zeros(5, np.float32),
                             pooled.reshape((2, 1, 6, 8, 5)))

    def no_relayout(*args):
        raise AssertionError("the weight was re-laid out for a small call")

    monkeypatch.setattr(channels_last, "direct_pack", no_relayout)
    monkeypatch.setattr(channels_last, "run_tasks", no_relayout)
    fd.clear_caches()
    y = fd.conv_transpose(x, w, **kw)
    ref = conv_transpose_ref(x.transpose(0, 3, 1, 2).astype(np.float64), w.astype(np.float64), stride=2, padding=1,
                             output_padding=1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(y, kept) and np.array_equal(y, pooled)


# gather-plane-nhwc: few channels per group (depthwise, depthwise multipliers, class maps, small dense layers),
# 1-D to 3-D, stride, padding, output_padding, dilation, odd sizes, a kernel not a multiple of the stride (zero
# phases in the pack), an output axis shorter than the stride, stride 1
PLANE_NHWC_CASES = [
    ((1, 3, 9, 9), (3, 1, 4, 4), dict(stride=2, padding=1, groups=3)),
    ((2, 5, 7, 6), (5, 1, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=5)),
    ((2, 4, 23), (4, 1, 5), dict(stride=3, padding=2, groups=4, dilation=2)),
    ((1, 6, 4, 5, 6), (6, 1, 3, 2, 4), dict(stride=(1, 2, 2), padding=(1, 0, 1), groups=6)),
    ((1, 21, 6, 5), (21, 1, 16, 16), dict(stride=8, padding=4, groups=21)),
    ((2, 4, 6, 7), (4, 2, 3, 3), dict(stride=1, padding=1, groups=2, dilation=(2, 1))),
    ((1, 6, 5, 6), (6, 3, 4, 4), dict(stride=2, padding=1)),
    ((2, 8, 1, 4), (8, 2, 6, 6), dict(stride=3, padding=2, groups=8)),
    ((1, 3, 5, 4), (3, 2, 4, 3), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=3)),
]


@pytest.mark.parametrize("case", range(len(PLANE_NHWC_CASES)))
def test_plane_nhwc_forced(case):
    """The channels-last few-channel variant against the reference with the bias and every activation, as a
    one-off call and as an operator (the same bits), and the same bits on one and two threads."""
    x, w, b, kw, rank, xl, expected, plan = _forced_case(PLANE_NHWC_CASES[case], 300 + case, with_bias=True)
    record = variants.get("gather-plane-nhwc")
    assert record.applies(plan) and record.channels_last and record.form == "gather"
    for activation, f in ACTIVATIONS:
        args = dict(kw, method="gather-plane-nhwc", activation=activation, data_format="channels_last")
        y = fd.conv_transpose(xl, w, b, **args)
        np.testing.assert_allclose(y, f(expected), rtol=1e-4, atol=1e-4, err_msg=str(activation))
        assert np.array_equal(fd.ConvTranspose(w, b, **args)(xl), y), activation
    args = dict(kw, method="gather-plane-nhwc", data_format="channels_last")
    try:
        fd.set_num_threads(1)
        one = fd.conv_transpose(xl, w, b, **args)
    finally:
        fd.set_num_threads(_threads.max_threads())
    assert np.array_equal(one, fd.conv_transpose(xl, w, b, **args))


def test_plane_nhwc_bits_on_one_and_two_threads_and_picked():
    """A depthwise layer large enough for the worker pool: the same bits on one and two threads, every call;
    ``auto`` runs gather-plane-nhwc on channels-last depthwise layers (FCN's bilinear upsampling, a depthwise
    stride-2 block) from the estimates, and not on channel-rich ones."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 64, 64, 16)).astype(np.float32)
    w = rng.standard_normal((16, 1, 4, 4)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=16, data_format="channels_last", activation="relu")
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1, groups=16,
                         options=geo.PlanOptions(data_format="channels_last"))
    from fastdeconv.variants import gather_plane_nhwc

    assert not gather_plane_nhwc.runs_serially(plan) and gather_plane_nhwc.layout(plan).tasks > 1
    results = []
    try:
        for threads in (1, 2, 1, 2):
            fd.set_num_threads(threads)
            results.append(fd.conv_transpose(x, w, b, **kw, method="gather-plane-nhwc"))
    finally:
        fd.set_num_threads(_threads.max_threads())
    assert all(np.array_equal(results[0], r) for r in results[1:])
    ref = last(conv_transpose_ref(np.moveaxis(x, -1, 1), w, b, stride=2, padding=1, groups=16), 2)
    np.testing.assert_allclose(results[0], np.maximum(ref, 0), rtol=1e-4, atol=1e-4)
    for x_shape, w_shape, geometry in [((1, 64, 64, 21), (21, 1, 16, 16), dict(stride=8, padding=4, groups=21)),
                                       ((1, 16, 16, 21), (21, 1, 64, 64), dict(stride=32, padding=16, groups=21)),
                                       ((8, 32, 32, 64), (64, 1, 4, 4), dict(stride=2, padding=1, groups=64))]:
        choice = fd.plan(x_shape, w_shape, **geometry, data_format="channels_last")
        assert choice.variant == "gather-plane-nhwc", choice
    choice = fd.plan((8, 8, 8, 256), (256, 128, 4, 4), stride=2, padding=1, data_format="channels_last")
    assert choice.variant != "gather-plane-nhwc"


def test_plane_nhwc_non_finite_inputs():
    """Infinite weights are multiplied by no padding zero (the runs are clipped to the input); with a kernel that
    is not a multiple of the stride the pack holds zero weights, and an infinite input then runs an exact variant:
    the finite/Inf/NaN pattern of gather-direct-nhwc either way."""
    rng = np.random.default_rng(13)
    for w_shape in [(4, 1, 4, 4), (4, 1, 3, 3)]:
        x = rng.standard_normal((1, 6, 5, 4)).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        w[1, 0, 0, 0] = np.inf
        x[0, 2, 3, 2] = np.inf
        kw = dict(stride=2, padding=1, groups=4, data_format="channels_last")
        y = fd.conv_transpose(x, w, **kw, method="gather-plane-nhwc")
        exact = fd.conv_transpose(x, w, **kw, method="gather-direct-nhwc")
        np.testing.assert_array_equal(np.isnan(y), np.isnan(exact))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(exact))
        np.testing.assert_allclose(np.where(np.isfinite(exact), y, 0), np.where(np.isfinite(exact), exact, 0),
                                   rtol=1e-5, atol=1e-5)


def test_plane_nhwc_float64():
    rng = np.random.default_rng(14)
    x, w, b = rng.standard_normal((2, 6, 7, 5)), rng.standard_normal((6, 1, 4, 3)), rng.standard_normal(6)
    kw = dict(stride=(2, 3), padding=1, groups=6)
    y = fd.conv_transpose(last(x, 2), w, b, **kw, method="gather-plane-nhwc", data_format="channels_last",
                          activation="tanh")
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, np.tanh(last(conv_transpose_ref(x, w, b, **kw), 2)), rtol=1e-12, atol=1e-12)


READING = ("scatter-gemm-rows-nhwc", "scatter-gemm-phases-nhwc", "gather-gemm-rows-nhwc")
READING_CASES = [  # one output channel, several input channels
    ((2, 24, 9), (24, 1, 96), dict(stride=32, padding=5)),  # a learned overlap-add (wide stride)
    ((3, 16, 40), (16, 1, 80), dict(stride=40, output_padding=3)),
    ((2, 8, 5, 6), (8, 1, 4, 4), dict(stride=2, padding=1)),
    ((1, 6, 3, 4, 2), (6, 1, 2, 3, 3), dict(stride=(1, 2, 2), padding=(0, 1, 1))),
]


@pytest.mark.parametrize("case", range(len(READING_CASES)))
def test_one_output_channel_reads_x_in_place(case):
    """Channels-first GEMM variants on channels-last data of one output channel: against the reference with and
    without an activation, an operator's bits equal to a one-off call's; not on two output channels."""
    x, w, b, kw, rank, xl, expected, plan = _forced_case(READING_CASES[case], 400 + case, with_bias=True)
    ran = [name for name in READING if variants.get(name).applies(plan)]
    assert ran and (case > 1 or "scatter-gemm-phases-nhwc" in ran)
    for name in ran:
        for activation, f in ACTIVATIONS[:2]:
            args = dict(kw, method=name, activation=activation, data_format="channels_last")
            y = fd.conv_transpose(xl, w, b, **args)
            np.testing.assert_allclose(y, f(expected), rtol=1e-4, atol=1e-4, err_msg=name)
            np.testing.assert_array_equal(fd.ConvTranspose(w, b, **args)(xl), y)
    assert not any(v.applies(geo.make_plan(last(np.zeros((1, 8, 5)), 1).shape, (8, 2, 4), np.float32, np.float32,
                                           stride=2, options=geo.PlanOptions(data_format="channels_last")))
                   for v in map(variants.get, READING))


def test_one_output_channel_overlap_add_picked():
    """``auto`` on an iSTFT-like channels-last layer (514 channels to one, kernel 1,024, stride 256) runs a
    channels-first GEMM variant on x in place, not the pixels x channels GEMM whose output step sums 4 rows per
    output."""
    chosen = fd.plan((4, 400, 514), (514, 1, 1024), stride=256, data_format="channels_last").variant
    assert chosen in {"scatter-gemm-phases-nhwc", "scatter-gemm-rows-nhwc", "gather-gemm-rows-nhwc"}


IN_PLACE_CASES = [
    ((2, 16, 12, 10), (16, 8, 2, 2), dict(stride=2)),        # U-Net's up-convolution
    ((1, 8, 5, 6, 7), (8, 4, 2, 2, 2), dict(stride=2)),      # 3-D: blocks of depth planes
    ((3, 6, 11), (6, 5, 3), dict(stride=3)),                 # 1-D: blocks of pixels
    ((2, 8, 7, 9), (8, 6, 3, 2), dict(stride=(3, 2))),       # a kernel per axis, each its stride
]


@pytest.mark.parametrize("case", IN_PLACE_CASES)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_kernel_equal_to_stride_is_written_in_place(case, activation):
    """Kernel = stride on every axis, no padding, one group: gather-gemm-nhwc's GEMMs write the output rows in
    place (no cols), the bias and the activation over each task's rows after them; the reference's values, with
    and without a bias, one-off and through an operator alike (the same bits)."""
    from fastdeconv.variants import channels_last

    x, w, b, kw, rank, xl, expected, plan = _forced_case(case, 3, True)
    assert channels_last.in_place(plan)
    tasks = channels_last.in_place_tasks(plan)
    size = plan.axes[channels_last.cut_axis(plan)].size_in
    assert sorted((n, i0) for n, i0, _ in tasks)[0] == (0, 0) and all(i1 > i0 for _, i0, i1 in tasks)
    assert sum(i1 - i0 for _, i0, i1 in tasks) == plan.batch * size
    assert channels_last.scratch_elements(plan) == w.size  # the tap-major weight only
    for bias in (b, None):
        ref = expected if bias is not None else last(conv_transpose_ref(x, w, None, **kw), rank)
        if activation == "relu":
            ref = np.maximum(ref, 0)
        y = fd.conv_transpose(xl, w, bias, data_format="channels_last", activation=activation,
                              method="gather-gemm-nhwc", **kw)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        op = fd.ConvTranspose(w, bias, data_format="channels_last", activation=activation,
                              method="gather-gemm-nhwc", **kw)
        np.testing.assert_array_equal(op(xl), y)
