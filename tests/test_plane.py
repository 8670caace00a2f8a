"""The gather-plane variant (one input channel per group: depthwise layers, single-channel images; or few
output channels: RGB layers, class maps), forced directly, against the reference; its row blocks, channel
blocks, threads, and where the cost model uses it."""


import numba
import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st
from reference import conv_transpose_ref
from strategies import geometries, geometry_kwargs

import fastdeconv as fd
from fastdeconv import _api, _cost
from fastdeconv import _geometry as geo
from fastdeconv.variants import gather_plane as pl


def run_plane(x, w, bias=None, serial=False, **geometry):
    """Run gather-plane on canonical arrays, as the dispatcher would (NaN-filled output: every element must be
    written)."""
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, geometry.get("stride", 1), geometry.get("padding", 0),
                         geometry.get("output_padding", 0), geometry.get("groups", 1), geometry.get("dilation", 1))
    assert pl.applies(plan)
    y = np.full(plan.out_shape, np.nan, plan.dtype)
    x5 = _api.contiguous(x, plan.dtype).reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes))
    w5 = _api.contiguous(w, plan.dtype).reshape(
        (plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes))
    b = np.zeros(plan.c_out, plan.dtype) if bias is None else _api.contiguous(bias, plan.dtype)
    pl.gather_plane(plan, x5, w5, b, y.reshape((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes)),
                    serial)
    return y


def plane_geometries():
    """Random geometries (every padding form, dilation, output padding, 1-D to 3-D, groups), one to three input
    channels and one to five output channels per group (one, one block of three, a block and a short one)."""
    return geometries(channels=(3, 5))


@given(g=plane_geometries(), batch=st.integers(1, 2), dtype=st.sampled_from([np.float32, np.float64]),
       use_bias=st.booleans(), serial=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_reference(g, batch, dtype, use_bias, serial, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, g["c_in"]) + tuple(g["spatial"])).astype(dtype)
    w = rng.standard_normal((g["c_in"], g["c_out"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)
    bias = rng.standard_normal(g["c_out"]).astype(dtype) if use_bias else None
    expected = conv_transpose_ref(x, w, bias, **geometry_kwargs(g))
    y = run_plane(x, w, bias, serial, **geometry_kwargs(g))
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **tolerance(dtype))


@pytest.fixture
def small_blocks(monkeypatch):
    """A tiny scratch buffer: one phase row per task, so every call runs many row blocks."""
    monkeypatch.setattr(pl, "BUFFER_ELEMENTS", 1)
    monkeypatch.setattr(pl, "CHANNELS_BUFFER_ELEMENTS", 1)
    fd.clear_caches()
    yield
    fd.clear_caches()


CASES = [((2, 3, 9, 7), (3, 2, 4, 4), dict(stride=2, padding=1, groups=3)),            # depthwise, multiplier 2
         ((1, 1, 11, 5), (1, 1, 16, 16), dict(stride=8, padding=4)),                    # FCN bilinear-like
         ((2, 2, 10, 6), (2, 1, 3, 5), dict(stride=(3, 2), padding=((2, 0), (1, 3)), groups=2, dilation=(2, 1),
                                             output_padding=(1, 0))),
         ((1, 2, 5, 6, 4), (2, 1, 3, 2, 4), dict(stride=(2, 1, 3), padding=(1, 0, 2), groups=2)),
         ((3, 1, 40), (1, 1, 7), dict(stride=1, padding=3, dilation=2)),
         ((2, 4, 9, 7), (4, 3, 4, 4), dict(stride=2, padding=1)),                        # RGB-like: one block of 3
         ((1, 5, 8, 6), (5, 5, 3, 3), dict(stride=2, padding=1, output_padding=1)),      # blocks of 3 and 2
         ((2, 4, 3, 4, 5), (4, 2, 2, 3, 2), dict(stride=(1, 2, 3), padding=(0, 1, 0), groups=2)),
         ((2, 6, 30), (6, 4, 8), dict(stride=4, padding=2))]


@pytest.mark.parametrize("x_shape, w_shape, geometry", CASES)
def test_row_blocks_match_reference(x_shape, w_shape, geometry, small_blocks):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    bias = rng.standard_normal(w_shape[1] * geometry.get("groups", 1)).astype(np.float32)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, geometry["stride"], geometry["padding"],
                         geometry.get("output_padding", 0), geometry.get("groups", 1), geometry.get("dilation", 1))
    assert pl.layout(plan).geometry[4] == 1  # one phase row per block
    np.testing.assert_allclose(run_plane(x, w, bias, **geometry), conv_transpose_ref(x, w, bias, **geometry),
                               **tolerance(np.float32))


@pytest.mark.parametrize("c_in, c_out_g, groups", [(6, 2, 6), (8, 5, 2)])
def test_bitwise_across_threads_serial_and_calls(c_in, c_out_g, groups):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, c_in, 37, 29)).astype(np.float32)
    w = rng.standard_normal((c_in, c_out_g, 4, 3)).astype(np.float32)
    b = rng.standard_normal(c_out_g * groups).astype(np.float32)
    geometry = dict(stride=(2, 3), padding=1, groups=groups)
    before = numba.get_num_threads()
    results = [run_plane(x, w, b, serial=True, **geometry)]
    try:
        for threads in (1, max(1, min(2, numba.config.NUMBA_NUM_THREADS)), 1):
            numba.set_num_threads(threads)
            results += [run_plane(x, w, b, **geometry), run_plane(x, w, b, **geometry)]
    finally:
        numba.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_plan_uses_it_for_one_input_channel_or_few_output_channels_per_group():
    depthwise = fd.plan((8, 64, 32, 32), (64, 1, 4, 4), stride=2, padding=1, groups=64)
    assert depthwise.variant == "gather-plane" and depthwise.method == "gather"
    assert fd.plan((100, 1, 26, 26), (1, 1, 3, 3)).variant == "gather-plane"  # single-channel, stride 1
    assert "gather-plane" in dict(fd.plan((1, 1, 64, 64), (1, 1, 4, 4), stride=2, method="gather").estimates)
    rgb = fd.plan((64, 64, 32, 32), (64, 3, 4, 4), stride=2, padding=1, method="gather")  # DCGAN's output layer
    assert rgb.variant == "gather-plane"  # (auto rates scatter-gemm-rows, which measures faster there, a bit cheaper)
    for x_shape, w_shape, groups in [((2, 8, 9, 9), (8, 40, 4, 4), 1), ((2, 8, 9, 9), (8, 33, 4, 4), 4)]:
        names = dict(fd.plan(x_shape, w_shape, stride=2, groups=groups).estimates)
        assert "gather-plane" not in names  # many output channels per group: a channel contraction for BLAS


def test_auto_runs_it_and_matches_the_scatter_form(rng):
    x = rng.standard_normal((4, 16, 24, 24)).astype(np.float32)
    w = rng.standard_normal((16, 1, 4, 4)).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=16)
    assert fd.plan(x.shape, w.shape, **kw).variant == "gather-plane"
    np.testing.assert_allclose(fd.conv_transpose(x, w, **kw), fd.conv_transpose(x, w, method="scatter", **kw),
                               rtol=1e-5, atol=1e-5)


def test_scratch_is_small():
    """Per worker one buffer of at most ~BUFFER_ELEMENTS (plus one padded row set); a fraction of the output."""
    for x_shape, w_shape, kw in [((1, 1, 2048, 2048), (1, 1, 4, 4), dict(stride=2, padding=1)),
                                 ((1, 21, 64, 64), (21, 1, 16, 16), dict(stride=8, padding=4, groups=21)),
                                 ((8, 64, 32, 32), (64, 1, 4, 4), dict(stride=2, padding=1, groups=64))]:
        plan = geo.make_plan(x_shape, w_shape, np.dtype(np.float32), np.dtype(np.float32), kw["stride"],
                             kw["padding"], 0, kw.get("groups", 1), 1)
        assert pl.layout(plan).scratch <= 2 * pl.BUFFER_ELEMENTS
        assert _cost.scratch_elements(plan, "gather-plane") <= 0.2 * np.prod(plan.out_shape)
        assert _cost.choose(plan, geo.make_request("gather-plane")).variant == "gather-plane"
    for x_shape, w_shape, kw in [((64, 64, 32, 32), (64, 3, 4, 4), dict(stride=2, padding=1)),
                                 ((1, 64, 375, 250), (64, 3, 3, 3), dict(stride=2, padding=1))]:
        plan = geo.make_plan(x_shape, w_shape, np.dtype(np.float32), np.dtype(np.float32), kw["stride"],
                             kw["padding"], 0, 1, 1)
        assert pl.layout(plan).scratch <= pl.CHANNELS_BUFFER_ELEMENTS
        assert _cost.scratch_elements(plan, "gather-plane") <= 0.3 * np.prod(plan.out_shape)


def test_many_channels_into_a_small_output_take_fewer_rows_per_task_within_the_memory_rule():
    """A 3-D super-resolution layer (16 channels into one, kernel 7, stride 2): the buffer-filling block of rows
    would hold more scratch than the output on two workers; fewer rows per task keep the rule (so that ``auto``
    may choose the variant), in blocks of equal size, with the bits of any other block size."""
    plan = geo.make_plan((1, 16, 8, 16, 16), (16, 1, 7, 7, 7), np.dtype(np.float32), np.dtype(np.float32), 2, 3, 1,
                         1, 1)
    output = int(np.prod(plan.out_shape))
    lay = pl.layout(plan)
    rows, block, blocks = int(lay.tables[1][0, 0]), int(lay.geometry[4]), int(lay.geometry[5])
    assert block < rows and blocks * block - rows < blocks  # (blocks of equal size, but for the rounding)
    assert lay.scratch * min(2, pl.task_count(plan)) <= output
    if pl.max_threads() >= 2:
        assert _cost.scratch_elements(plan, "gather-plane") <= output
        assert "gather-plane" in dict(fd.plan((1, 16, 8, 16, 16), (16, 1, 7, 7, 7), stride=2, padding=3,
                                              output_padding=1).estimates)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 16, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((16, 1, 7, 7, 7)).astype(np.float32)
    kw = dict(stride=2, padding=3, output_padding=1)
    y = run_plane(x, w, **kw)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, **kw), **tolerance(np.float32))
    pl.layout.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pl, "max_threads", lambda: 1)  # (one worker: the buffer-filling block fits)
            assert pl.layout(plan).geometry[4] != block
            np.testing.assert_array_equal(run_plane(x, w, **kw), y)
    finally:
        pl.layout.cache_clear()


def test_short_runs_cost_more_per_multiply_add():
    """A block's run is a phase's rows × pitch; each pass of four terms over it has a set-up the estimate counts,
    so that the same multiply-adds over 8×8 images (64-element runs) cost well above those over one 128×128 image
    (runs of about 1,700): the forms with longer inner loops win such layers (measured: 2-3x per multiply-add)."""
    def per_mac(x_shape):
        plan = geo.make_plan(x_shape, (64, 32, 2, 2), np.dtype(np.float32), np.dtype(np.float32), 2, 0)
        return pl.cost(plan, 1) / plan.macs

    assert per_mac((256, 64, 8, 8)) > 1.8 * per_mac((1, 64, 128, 128))
