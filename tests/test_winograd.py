"""The gather-winograd variant: its transform matrices, its geometry test, and its results against the reference."""

from math import prod as _prod

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _geometry as geo
from fastdeconv import _threads
from fastdeconv._kernels import winograd as wg
from fastdeconv.variants import _winograd_math as wm
from fastdeconv.variants import _winograd_run as wr
from fastdeconv.variants import _winograd_schedule as ws


@pytest.mark.parametrize("m, r", sorted(wm.POINTS))
def test_matrices_compute_the_correlation(m, r):
    """A^T [(G g) * (B^T d)] equals y_i = sum_u d[i + u] g[u] for M outputs."""
    bt, g_mat, at = wm.matrices(m, r)
    assert bt.shape == (m + r - 1, m + r - 1) and g_mat.shape == (m + r - 1, r) and at.shape == (m, m + r - 1)
    rng = np.random.default_rng(r)
    for _ in range(20):
        d, g = rng.standard_normal(m + r - 1), rng.standard_normal(r)
        expected = [sum(d[i + u] * g[u] for u in range(r)) for i in range(m)]
        np.testing.assert_allclose(at @ ((g_mat @ g) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


def _plan(x_shape, w_shape, dtype=np.float64, **kw):
    return geo.make_plan(x_shape, w_shape, np.dtype(dtype), np.dtype(dtype), kw.get("stride", 1), kw.get("padding", 0),
                         kw.get("output_padding", 0), kw.get("groups", 1), kw.get("dilation", 1))


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((1, 2, 5, 5), (2, 2, 3, 3), {"stride": 2}),               # k % s != 0: phases with 2 and 1 taps
    ((1, 2, 5, 5), (2, 2, 3, 3), {"stride": 2, "dilation": 2}),  # one phase gets every tap, the other none
    ((1, 2, 5, 5), (2, 2, 2, 2), {"stride": 2}),               # r = 1 everywhere: nothing to save
    ((1, 2, 5, 5), (2, 2, 8, 8), {"stride": 2}),               # r = 4: no matrices
])
def test_not_applicable(x_shape, w_shape, kw):
    assert ws.layout(_plan(x_shape, w_shape, **kw)) is None


@pytest.fixture
def roomy(monkeypatch):
    """Lift the memory rule so that tiny test shapes (whose outputs are smaller than the scratch) run.

    The same patch holds for every hypothesis example (it is a constant), so the function scope is harmless.
    """
    clear = fd.clear_caches
    monkeypatch.setattr(ws, "weight_elements", lambda plan: -(10 ** 9))
    monkeypatch.setattr(ws, "_held", lambda plan, shared: -(10 ** 9))
    clear()
    yield
    clear()


def _run(x, w, bias, kw):
    plan = _plan(x.shape, w.shape, x.dtype, **kw)
    y = np.full(plan.out_shape, np.nan, plan.dtype)
    x5 = x.reshape((plan.batch, plan.c_in) + tuple(a.size_in for a in plan.axes))
    w5 = w.reshape((plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes))
    wr.gather_winograd(plan, x5, w5, bias, y.reshape((plan.batch, plan.c_out) + tuple(a.size_out for a in plan.axes)))
    return y


@st.composite
def winograd_geometries(draw):
    """1-D to 3-D, every kernel a multiple of its stride with 1 to 3 taps per phase, dilated or not, any padding."""
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    stride = [draw(st.integers(1, 3)) for _ in range(rank)]
    kernel = [s * draw(st.integers(1, 3)) for s in stride]
    dilation = [draw(st.sampled_from([1, 1, 2, 3])) for _ in range(rank)]
    assume(max(k // s for k, s in zip(kernel, stride)) >= 2)
    spatial = [draw(st.integers(1, (9, 9, 5)[rank - 1])) for _ in range(rank)]
    out_pad = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    full = [(i - 1) * s + (k - 1) * d + 1 for i, k, s, d in zip(spatial, kernel, stride, dilation)]
    pads = [(draw(st.integers(0, k)), draw(st.integers(0, k))) for k in kernel]
    assume(all(f + o - b - a >= 1 for f, o, (b, a) in zip(full, out_pad, pads)))
    return dict(x_shape=(draw(st.integers(1, 3)), groups * draw(st.integers(1, 4))) + tuple(spatial),
                cout_g=draw(st.integers(1, 4)), kernel=tuple(kernel), groups=groups,
                kw={"stride": tuple(stride), "padding": tuple(pads), "output_padding": tuple(out_pad),
                    "groups": groups, "dilation": tuple(dilation)})


@pytest.mark.parametrize("shared", [True, False])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geom=winograd_geometries(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_matches_reference(roomy, monkeypatch, shared, geom, dtype, seed):
    """Both ways of transforming the weights: once per call, shared by the workers (``shared``), or per chunk
    and point."""
    monkeypatch.setattr(ws, "shares_weights", lambda plan: shared)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(geom["x_shape"]).astype(dtype)
    w = rng.standard_normal((geom["x_shape"][1], geom["cout_g"]) + geom["kernel"]).astype(dtype)
    bias = rng.standard_normal(geom["cout_g"] * geom["groups"]).astype(dtype)
    assume(ws.layout(_plan(x.shape, w.shape, dtype, **geom["kw"])) is not None)  # uneven taps with dilation
    np.testing.assert_allclose(_run(x, w, bias, geom["kw"]), conv_transpose_ref(x, w, bias, **geom["kw"]),
                               **tolerance(dtype))


@pytest.mark.parametrize("samples, rows, channels", [(1, 1, 1), (2, 9, 3), (3, 9, 64), (1, 2, 5)])
def test_chunks_split_samples_rows_and_channels(roomy, monkeypatch, samples, rows, channels):
    """Forced small chunks (several sample blocks and channel blocks per call) give the same result."""
    monkeypatch.setattr(ws, "chunks", lambda plan: (samples, rows, channels))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 6, 5, 4)), rng.standard_normal((6, 7, 4, 2))
    bias = rng.standard_normal(7)
    kw = {"stride": (2, 1), "padding": 1}
    np.testing.assert_allclose(_run(x, w, bias, kw), conv_transpose_ref(x, w, bias, **kw), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((64, 128, 16, 16), (128, 64, 4, 4), {"stride": 2, "padding": 1}),  # DCGAN 16x16 -> 32x32: four weight phases
    ((1, 64, 128, 128), (64, 64, 4, 4), {"stride": 2, "padding": 1}),  # super-resolution 2x: one large image
])
def test_layers_share_the_transformed_weights_when_it_pays(x_shape, w_shape, kw):
    """The transformed weights of every (weight phase, point) are computed once per call, and the scratch
    (those included) stays within the output's size."""
    plan = _plan(x_shape, w_shape, np.float32, **kw)
    assert ws.shares_weights(plan)
    assert 0 < ws.scratch_elements(plan) <= plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((4, 16, 24, 24), (16, 8, 3, 3), {"stride": 1, "padding": 2, "dilation": 2}),
    ((4, 16, 12, 12), (16, 8, 4, 4), {"stride": 2, "padding": 1}),
    ((2, 8, 6, 6, 6), (8, 4, 4, 4, 4), {"stride": 2, "padding": 1}),
    ((2, 37, 9, 7), (37, 5, 4, 4), {"stride": 2, "padding": 1}),  # pack: two 16-channel blocks and a rest of 5
])
def test_both_weight_paths_give_the_same_bits(roomy, monkeypatch, shared, x_shape, w_shape, kw):
    """Shared or per chunk, the transformed weights are the same sums in the same order: the same bits, and
    the reference's values."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    bias = rng.standard_normal(w_shape[1]).astype(np.float32)
    monkeypatch.setattr(ws, "shares_weights", lambda plan: False)
    per_chunk = _run(x, w, bias, kw)
    monkeypatch.setattr(ws, "shares_weights", lambda plan: shared)
    np.testing.assert_array_equal(_run(x, w, bias, kw), per_chunk)
    np.testing.assert_allclose(per_chunk, conv_transpose_ref(x, w, bias, **kw), **tolerance(np.float32))


def test_weight_heavy_layers_transform_per_chunk():
    """DCGAN's first block: 36 transformed (C_in, C_out) matrices would be 4.5x its output (the memory rule)."""
    assert not ws.shares_weights(_plan((64, 512, 4, 4), (512, 256, 4, 4), np.float32, stride=2, padding=1))


def test_auto_picks_winograd_for_dcgan_blocks_and_respects_memory():
    choice = fd.plan((64, 256, 8, 8), (256, 128, 4, 4), stride=2, padding=1)
    assert choice.variant == "gather-winograd" and choice.method == "gather"
    assert "Winograd" in choice.reason
    plan = _plan((64, 256, 8, 8), (256, 128, 4, 4), np.float32, stride=2, padding=1)
    out = plan.batch * plan.c_out * 16 * 16
    assert 0 < ws.scratch_elements(plan) <= out


def test_through_the_public_api():
    """A DCGAN-like layer that auto runs on gather-winograd agrees with the scatter form (itself tested)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 128, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((128, 64, 4, 4)) / 20).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    assert fd.plan(x.shape, w.shape, stride=2, padding=1).variant == "gather-winograd"
    y = fd.conv_transpose(x, w, bias, stride=2, padding=1)
    np.testing.assert_allclose(y, fd.conv_transpose(x, w, bias, stride=2, padding=1, method="scatter"),
                               **tolerance(np.float32))
    assert np.array_equal(y, fd.conv_transpose(x, w, bias, stride=2, padding=1))


def test_bitwise_identical_across_thread_counts():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 128, 16, 16)).astype(np.float32)
    w = rng.standard_normal((128, 64, 4, 4)).astype(np.float32)
    try:
        fd.set_num_threads(1)
        one = fd.conv_transpose(x, w, stride=2, padding=1)
        fd.set_num_threads(_threads.max_threads())
        assert np.array_equal(one, fd.conv_transpose(x, w, stride=2, padding=1))
    finally:
        fd.set_num_threads(_threads.max_threads())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cold_compile_signature_is_the_calls(dtype):
    """``_compile_cold`` compiles ``run_task`` ahead of the call for ``run_task_signature``: it must be exactly
    the signature the call uses (else the call would compile a second overload)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 16, 16, 16)).astype(dtype), rng.standard_normal((16, 8, 4, 4)).astype(dtype)
    _run(x, w, np.zeros(8, dtype), {"stride": 2, "padding": 1})
    assert wr.run_task_signature(np.dtype(dtype)) in wg.run_task.overloads


_CALLEES_CHILD = """
import numpy as np
import fastdeconv as fd
from fastdeconv.variants import _winograd_run as wr
rng = np.random.default_rng(0)
x, w = rng.standard_normal((2, 16, 16, 16)).astype(np.float32), rng.standard_normal((16, 8, 4, 4)).astype(np.float32)
wr._READY[wr.run_task] = {np.dtype(np.float32)}  # (no split: the call compiles run_task as numba would)
fd.conv_transpose(x, w, stride=2, padding=1, method="gather-winograd")
here, beside = wr.run_task_callees(np.dtype(np.float32))
missing = [(d.py_func.__name__, sig) for d, sig in here + beside if sig not in d.overloads]
print("missing", missing)
"""


def test_the_cold_compile_callee_signatures_are_run_tasks():
    """``_compile_cold`` compiles ``run_task``'s callees on two cores for ``run_task_callees``: each must be the
    signature ``run_task``'s own compile gives that callee (else a cold first call compiles it twice). Checked
    in a child that compiles everything afresh (no disk cache: with one, callees are loaded, not listed)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTDECONV_NO_CACHE="1")
    out = subprocess.run([sys.executable, "-c", _CALLEES_CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "missing []", out.stdout
