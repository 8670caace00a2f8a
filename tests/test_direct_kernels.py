"""The direct (non-BLAS) kernels called on their own: every variant against the reference, any tiling, threads."""

import numba
import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import conv_transpose_ref
from strategies import geometries

from fastdeconv import _geometry as geo
from fastdeconv._kernels.gather import gather_serial
from fastdeconv._kernels.scatter import scatter_serial, scatter_tiny
from fastdeconv._tasks import gather, scatter
from fastdeconv._tiling import tile_for

KERNELS = {"scatter": scatter, "scatter_serial": scatter_serial, "scatter_tiny": scatter_tiny, "gather": gather,
           "gather_serial": gather_serial}


def _run(kernel, plan, x, w, bias, tile=None):
    """Call a kernel on canonical 5-D arrays of ``plan``; returns y in the plan's output shape."""
    x5 = np.ascontiguousarray(x, plan.dtype).reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes))
    w5 = np.ascontiguousarray(w, plan.dtype).reshape(
        (plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes))
    b = np.zeros(plan.c_out, plan.dtype) if bias is None else np.ascontiguousarray(bias, plan.dtype)
    y = np.full(plan.out_shape, np.nan, plan.dtype)  # every element must be written
    y5 = y.reshape((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes))
    tile = tile_for(plan) if tile is None else np.asarray(tile, np.int64)
    kernel(x5, w5, b, y5, plan.groups, plan.arrays("stride"), plan.arrays("dilation"), plan.arrays("start"), tile)
    return y


def _case(g, batch, dtype, use_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, g["c_in"]) + tuple(g["spatial"])).astype(dtype)
    w = rng.standard_normal((g["c_in"], g["c_out"] // g["groups"]) + tuple(g["kernel"])).astype(dtype)
    bias = rng.standard_normal(g["c_out"]).astype(dtype) if use_bias else None
    kw = {k: g[k] for k in ("stride", "padding", "output_padding", "groups", "dilation")}
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, **kw)
    return x, w, bias, kw, plan


# five kernels, two tilings each: at most 60 examples (fewer if the profile asks), to keep the suite short
@settings(max_examples=min(60, settings.default.max_examples))
@given(g=geometries(), batch=st.sampled_from([1, 2]), dtype=st.sampled_from([np.float32, np.float64]),
       use_bias=st.booleans(), seed=st.integers(0, 2**16), tile=st.lists(st.integers(1, 7), min_size=3, max_size=3))
def test_every_variant_matches_reference_with_any_tile(g, batch, dtype, use_bias, seed, tile):
    x, w, bias, kw, plan = _case(g, batch, dtype, use_bias, seed)
    expected = conv_transpose_ref(x, w, bias, **kw)
    for name, kernel in KERNELS.items():
        y = _run(kernel, plan, x, w, bias)
        np.testing.assert_allclose(y, expected, err_msg=name, **tolerance(dtype))
        # an arbitrary tiling changes which task computes an element, never the order of its terms
        np.testing.assert_array_equal(_run(kernel, plan, x, w, bias, tile), y, err_msg=name)
    # the tiny kernel walks the definition directly, in the order of the buffered runs: the same bits
    np.testing.assert_array_equal(_run(scatter_tiny, plan, x, w, bias), _run(scatter_serial, plan, x, w, bias))


@pytest.mark.parametrize("name", list(KERNELS))
def test_serial_and_parallel_bits_agree(name):
    """Same tasks, same order of terms: the serial variants give the parallel kernels' bits (and the tiny
    kernel, which walks the definition, the same order of every element's terms)."""
    rng = np.random.default_rng(7)
    g = dict(c_in=6, c_out=10, groups=2, spatial=[9, 11], kernel=[3, 4], stride=[2, 3], dilation=[1, 2],
             output_padding=[1, 0], padding=[(1, 2), (0, 3)])
    x, w, bias, kw, plan = _case(g, 3, np.float32, True, int(rng.integers(1000)))
    base = name.replace("_serial", "").replace("_tiny", "")
    np.testing.assert_array_equal(_run(KERNELS[name], plan, x, w, bias), _run(KERNELS[base], plan, x, w, bias))


@pytest.mark.parametrize("name", list(KERNELS))
def test_bitwise_identical_across_thread_counts(name):
    rng = np.random.default_rng(11)
    cases = [  # (x shape, w shape, stride, padding, groups): planes split into tiles, channel blocks of 4 + rest
        ((1, 1, 300, 257), (1, 1, 4, 4), 2, 1, 1),
        ((2, 5, 17, 19), (5, 7, 3, 3), 2, 1, 1),
        ((1, 6, 40, 40), (6, 1, 16, 16), 8, 4, 6),
        ((1, 3, 5000), (3, 2, 7), 3, 2, 1),
        ((2, 2, 6, 7, 8), (2, 3, 3, 2, 3), 2, 1, 1),
    ]
    before = numba.get_num_threads()
    try:
        for xs, ws, s, p, groups in cases:
            x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
            plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, stride=s, padding=p, groups=groups)
            results = []
            for threads in (1, 2):
                numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                results.append(_run(KERNELS[name], plan, x, w, None))  # tile_for follows the thread count
            np.testing.assert_array_equal(results[0], results[1])
            np.testing.assert_allclose(results[0], conv_transpose_ref(x, w, stride=s, padding=p, groups=groups),
                                       rtol=1e-4, atol=1e-4)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("name", list(KERNELS))
def test_workload_shapes_small(name):
    """The benchmark families at reduced size (single channel, depthwise large stride, 64 -> 3, stride 1), long rows."""
    rng = np.random.default_rng(5)
    cases = [((1, 1, 64, 64), (1, 1, 4, 4), 2, 1, 0, 1), ((1, 21, 8, 8), (21, 1, 16, 16), 8, 4, 0, 21),
             ((2, 64, 8, 8), (64, 3, 4, 4), 2, 1, 0, 1), ((3, 64, 7, 5), (64, 3, 3, 3), 2, 1, 1, 1),
             ((5, 1, 26, 26), (1, 1, 3, 3), 1, 0, 0, 1), ((1, 4, 3, 3), (4, 2, 3, 3), 2, 1, 1, 1),
             # long rows: fused passes over four runs for channel blocks of 4, 3 and 2
             ((2, 5, 6, 130), (5, 7, 3, 3), 2, 1, 0, 1), ((1, 4, 4, 100), (4, 6, 2, 4), 2, 1, 0, 1)]
    for xs, ws, s, p, op, groups in cases:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, stride=s, padding=p, output_padding=op,
                             groups=groups)
        y = _run(KERNELS[name], plan, x, w, None)
        expected = conv_transpose_ref(x, w, stride=s, padding=p, output_padding=op, groups=groups)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["gather", "gather_serial"])
def test_gather_run_table_refills_in_order(name):
    """An output row with more (input channel, tap) runs than the run table holds (a long 1-D kernel over many
    channels, iSTFT-like): the table is applied and refilled, and the result is still the definition."""
    from fastdeconv._kernels import gather as gather_module

    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 40, 6))
    w = rng.standard_normal((40, 2, 300))
    assert 40 * 300 > gather_module.RUN_TABLE
    b = rng.standard_normal(2)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, stride=50, padding=3)
    np.testing.assert_allclose(_run(KERNELS[name], plan, x, w, b), conv_transpose_ref(x, w, b, stride=50, padding=3),
                               rtol=1e-10, atol=1e-10)
