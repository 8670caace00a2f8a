"""fastdeconv.dask.conv_transpose: bitwise equal to the in-memory call for any chunking and geometry."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _geometry as geo
from fastdeconv import variants as registry
from fastdeconv._operator import run_block

da = pytest.importorskip("dask.array")
fdd = pytest.importorskip("fastdeconv.dask")

ROOT = Path(__file__).resolve().parents[1]


def _dask(x, chunks):
    return da.from_array(x, chunks=chunks)


EXACT_VARIANTS = ("scatter-direct", "gather-direct", "gather-plane", "zerofill")  # numba kernels: fixed order of terms


def _check(x, w, chunks, bias=None, scheduler="threads", **kw):
    """The Dask result equals the in-memory one, with the documented chunks and dtype.

    Bitwise when the in-memory call runs a direct numba kernel (all the few-channel cases here); the
    BLAS-backed variants the cost model picks for channel-rich layers agree to rounding.
    """
    expected = fd.conv_transpose(x, w, bias, **kw)
    y = fdd.conv_transpose(_dask(x, chunks), w, bias, **kw)
    assert isinstance(y, da.Array)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    got = y.compute(scheduler=scheduler)
    assert got.dtype == expected.dtype
    if fd.plan(x.shape, w.shape, dtype=expected.dtype, **kw).variant in EXACT_VARIANTS:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, **tolerance(expected.dtype))
    return y


# ---------------------------------------------------------------------------------------------- examples


@pytest.mark.parametrize("method", ["auto", "scatter", "gather", "zerofill"])
@pytest.mark.parametrize("padding", [0, 1, 3, ((0, 2), (3, 1)), "same", "valid"])
def test_2d_irregular_chunks(rng, method, padding):
    x = rng.standard_normal((3, 4, 13, 11)).astype(np.float32)
    w = rng.standard_normal((4, 3, 4, 3)).astype(np.float32)
    # irregular, some chunks of one element (smaller than the kernel footprint), channels split too
    _check(x, w, ((1, 2), (1, 3), (1, 5, 1, 1, 5), (3, 1, 7)), stride=(2, 3), padding=padding, method=method)


def test_1d_groups_dilation_output_padding_bias(rng):
    x = rng.standard_normal((2, 6, 17))
    w = rng.standard_normal((6, 2, 3))
    b = rng.standard_normal(6)
    for chunks in [(1, 6, 1), (2, 3, (4, 1, 2, 10)), (2, 6, 17)]:
        _check(x, w, chunks, b, stride=3, padding=((2, 1),), output_padding=2, groups=3, dilation=2)
    _check(x, w, (1, 6, (1, 1, 15)), b, stride=2, padding=4, output_padding=2, groups=3, dilation=3)


def test_3d(rng):
    x = rng.standard_normal((1, 2, 5, 6, 4)).astype(np.float32)
    w = rng.standard_normal((2, 4, 3, 2, 3)).astype(np.float32)
    _check(x, w, (1, 1, (2, 3), (1, 1, 4), 1), stride=(1, 2, 3), padding=((1, 0), (0, 2), 1), dilation=(2, 1, 1),
           output_padding=(1, 1, 0), groups=2, method="gather")
    _check(x, w, (1, 2, 2, 3, (3, 1)), stride=2, padding="same", groups=2)


def test_unbatched_and_integer_input(rng):
    x = rng.integers(-3, 4, (3, 9, 7))
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = _check(x, w, (2, (4, 5), 2), stride=2, padding=1, output_padding=1)
    assert y.dtype == np.float64 and y.ndim == 3


def test_depthwise_gather_plane_bitwise(rng):
    """A depthwise layer (auto: gather-plane), split along every axis: the blocks add the same terms in the
    same order as the in-memory call."""
    x = rng.standard_normal((2, 6, 19, 23)).astype(np.float32)
    w = rng.standard_normal((6, 2, 4, 4)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    assert fd.plan(x.shape, w.shape, stride=2, padding=1, groups=6).variant == "gather-plane"
    for chunks in [(1, (2, 4), (5, 1, 13), (11, 12)), (2, 3, 19, (1, 22))]:
        _check(x, w, chunks, b, stride=2, padding=1, groups=6)


@pytest.mark.parametrize("method", ["auto", "scatter", "gather"])
def test_channel_rich_blas_variants(rng, method):
    """Channel-rich layers, where the cost model may pick the BLAS-backed variants."""
    x = rng.standard_normal((2, 64, 11, 10)).astype(np.float32)
    w = rng.standard_normal((64, 32, 4, 4)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    _check(x, w, (1, 64, (4, 7), (3, 2, 5)), b, stride=2, padding=1, method=method)


def test_matches_reference_not_only_core(rng):
    x = rng.standard_normal((2, 2, 7, 5))
    w = rng.standard_normal((2, 3, 3, 4))
    y = fdd.conv_transpose(_dask(x, (1, 1, (1, 2, 4), (2, 3))), w, stride=(3, 2), padding=((2, 0), (1, 3)),
                           dilation=(1, 2)).compute()
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, stride=(3, 2), padding=((2, 0), (1, 3)),
                                                     dilation=(1, 2)), rtol=1e-10, atol=1e-10)


def test_output_blocks_away_from_every_input(rng):
    """Blocks that only hold output_padding / SAME zero-extension still get the bias."""
    x = rng.standard_normal((1, 1, 4))
    w = rng.standard_normal((1, 2, 1))
    b = np.array([0.5, -2.0])
    y = _check(x, w, (1, 1, 1), b, stride=5, output_padding=4)  # out 20: every 5th element is a term
    assert y.chunks[2] == (5, 5, 5, 5)
    _check(x, w, (1, 1, 1), b, stride=4, dilation=6, padding="same")
    x = rng.standard_normal((1, 1, 6))  # input j lands on output j - 3: blocks [3, 4), [4, 5), [5, 9) get none
    y = _check(x, w, (1, 1, 1), b, dilation=7, output_padding=6, padding=((3, 0),))
    assert y.chunks[2] == (1, 1, 1, 1, 1, 4)
    assert [fdd._window(fdd._full_plan(da.from_array(x), da.from_array(w), None, 1, ((3, 0),), 6, 1, 7)
                        .axes[2], 5, 9)] == [(5, 6, 5, 9)]


def test_chunks_follow_stride(rng):
    x = _dask(np.ones((2, 1, 12, 9), np.float32), (1, 1, (4, 4, 4), (2, 7)))
    w = np.ones((1, 1, 4, 4), np.float32)
    y = fdd.conv_transpose(x, w, stride=2, padding=1)  # out = 2 * in
    assert y.chunks == ((1, 1), (1,), (8, 8, 8), (4, 14))
    y = fdd.conv_transpose(x, w, stride=3, padding=((0, 5), (0, 5)))  # crop 5 at the end of every axis
    assert y.chunks[2] == (12, 12, 8) and y.chunks[3] == (6, 17)
    y = fdd.conv_transpose(x, w, stride=1, padding=5)  # crops more than one input chunk's worth
    assert y.chunks[2] == (4, 1) and sum(y.chunks[3]) == 2


def _never_called():
    raise AssertionError("conv_transpose computed its input while building the graph")


def test_lazy_and_deterministic_names():
    import dask

    x = da.from_delayed(dask.delayed(_never_called)(), shape=(1, 1, 8, 8), dtype=np.float32)
    w = np.ones((1, 1, 4, 4), np.float32)
    y = fdd.conv_transpose(x, w, stride=2, padding=1)  # nothing runs yet
    assert y.shape == (1, 1, 16, 16)
    with pytest.raises(AssertionError, match="computed its input"):
        y.compute(scheduler="sync")
    assert fdd.conv_transpose(x, w, stride=2, padding=1).name == y.name
    assert fdd.conv_transpose(x, w, stride=2, padding=2).name != y.name
    assert fdd.conv_transpose(x, 2 * w, stride=2, padding=1).name != y.name


def test_channel_axis_rechunked_and_dask_weight(rng):
    x = rng.standard_normal((1, 4, 6, 6))
    w = rng.standard_normal((4, 1, 3, 3))
    b = rng.standard_normal(2)
    y = fdd.conv_transpose(_dask(x, (1, 1, 3, 3)), da.from_array(w, chunks=(2, 1, 2, 3)), da.from_array(b, chunks=1),
                           stride=2, groups=2)
    assert y.chunks[1] == (2,)
    np.testing.assert_array_equal(y.compute(), fd.conv_transpose(x, w, b, stride=2, groups=2))


def test_lazy_output_larger_than_memory():
    """The whole output is never allocated: only each block has to fit (the core refuses this call)."""
    x = da.zeros((1, 1, 2**38), dtype=np.float32, chunks=(1, 1, 2**26))
    w = np.ones((1, 1, 4), np.float32)
    if geo._physical_memory() >= 2**41:  # pragma: no cover - a machine with 2 TiB of memory
        pytest.skip("this machine could hold the output")
    with pytest.raises(ValueError, match="memory"):
        geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1)
    y = fdd.conv_transpose(x, w, stride=2, padding=1)
    assert y.shape == (1, 1, 2**39) and set(y.chunks[2]) == {2**27}
    with pytest.raises(ValueError, match="one output block"):
        fdd.conv_transpose(x.rechunk({2: -1}), w, stride=2, padding=1)


# ---------------------------------------------------------------------------------------------- properties


@st.composite
def _cases(draw):
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, 2))
    spatial = [draw(st.integers(1, 9 if rank < 3 else 5)) for _ in range(rank)]
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    stride = [draw(st.integers(1, 4)) for _ in range(rank)]
    dilation = [draw(st.integers(1, 3)) for _ in range(rank)]
    if draw(st.booleans()):
        padding, output_padding = "same", [0] * rank
    else:
        padding = [(draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(rank)]
        output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    full = [(i - 1) * s + (k - 1) * d + 1 for i, k, s, d in zip(spatial, kernel, stride, dilation)]
    if padding != "same":
        for ax in range(rank):  # keep every output size >= 1
            while full[ax] - sum(padding[ax]) + output_padding[ax] < 1:
                padding[ax] = (padding[ax][0] // 2, padding[ax][1] // 2)
    chunks = [_chunking(draw, batch)] + [c_in] + [_chunking(draw, i) for i in spatial]
    method = draw(st.sampled_from(["auto", "scatter", "gather", "zerofill"]))
    return dict(shape=(batch, c_in, *spatial), w_shape=(c_in, c_out // groups, *kernel), chunks=tuple(chunks),
                kw=dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                        dilation=dilation, method=method), bias=draw(st.booleans()), seed=draw(st.integers(0, 99)))


def _chunking(draw, size):
    sizes, left = [], size
    while left:
        sizes.append(draw(st.integers(1, left)))
        left -= sizes[-1]
    return tuple(sizes)


@settings(max_examples=80)
@given(_cases())
def test_property_any_geometry_any_chunking(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    w = rng.standard_normal(case["w_shape"]).astype(np.float32)
    b = rng.standard_normal(case["w_shape"][1] * case["kw"]["groups"]).astype(np.float32) if case["bias"] else None
    _check(x, w, case["chunks"], b, scheduler="sync", **case["kw"])


# ---------------------------------------------------------------------------------------------- errors


def _core_error(x, w, **kw):
    with pytest.raises((TypeError, ValueError)) as info:
        fd.conv_transpose(x, w, **kw)
    return info.type, str(info.value)


@pytest.mark.parametrize("kw", [
    dict(padding="full"), dict(padding=9), dict(padding=((1, 2), (3,))), dict(stride=0), dict(stride=(1, 2, 3)),
    dict(output_padding=2, stride=2), dict(groups=3), dict(dilation=1.5), dict(method="fft"),
    dict(padding="same", output_padding=1, stride=2), dict(bias=np.zeros(5)),
])
def test_errors_match_the_core(kw):
    x = np.zeros((1, 2, 4, 4), np.float32)
    w = np.zeros((2, 3, 3, 3), np.float32)
    kind, message = _core_error(x, w, **kw)
    with pytest.raises(kind) as info:
        fdd.conv_transpose(_dask(x, 2), w, **kw)
    assert str(info.value) == message


def test_errors_shapes_and_types():
    x = np.zeros((1, 2, 4, 4))
    for w in (np.zeros((3, 1, 3, 3)), np.zeros((2, 1, 3)), np.zeros((2,)), np.zeros((2, 1, 3, 3), complex)):
        kind, message = _core_error(x, w)
        with pytest.raises(kind) as info:
            fdd.conv_transpose(_dask(x, 2), w)
        assert str(info.value) == message
    with pytest.raises(TypeError, match="x must be a dask.array.Array"):
        fdd.conv_transpose(x, np.zeros((2, 1, 3, 3)))
    unknown = _dask(x, 2)
    unknown = unknown[unknown[:, 0, 0, 0] >= 0]  # boolean indexing leaves the batch chunk sizes unknown
    with pytest.raises(ValueError, match="known chunk sizes"):
        fdd.conv_transpose(unknown, np.zeros((2, 1, 3, 3)))
    with pytest.raises(TypeError, match="weight must be array-like"):
        fdd.conv_transpose(_dask(x, 2), [[1], [1, 2]])


def test_core_does_not_import_dask():
    code = "import sys, fastdeconv; fastdeconv.conv_transpose([[1.0]], [[[1.0]]]); print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------- schedulers


def test_distributed_local_cluster(rng):
    distributed = pytest.importorskip("distributed")
    x = rng.standard_normal((2, 2, 20, 18)).astype(np.float32)
    w = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    kw = dict(stride=2, padding=((1, 2), (1, 1)), output_padding=(1, 0))
    expected = fd.conv_transpose(x, w, b, **kw)

    def count_unpickles():  # (a nested function: cloudpickle ships it by value to the worker processes)
        from fastdeconv._operator import ConvTranspose

        setstate = ConvTranspose.__setstate__

        def counting(self, state):
            ConvTranspose._unpickled = getattr(ConvTranspose, "_unpickled", 0) + 1
            setstate(self, state)

        ConvTranspose.__setstate__ = counting

    def unpickles():
        from fastdeconv._operator import ConvTranspose

        return getattr(ConvTranspose, "_unpickled", 0)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.run(count_unpickles)
        y = fdd.conv_transpose(_dask(x, (1, 2, (3, 1, 9, 7), (5, 5, 8))), w, b, **kw).persist()
        distributed.wait(y)
        holders = {worker for workers in client.who_has(y).values() for worker in workers}
        got = y.compute()
        n_workers = len(client.scheduler_info()["workers"])
        counts = client.run(unpickles)
    assert n_workers == 2
    np.testing.assert_array_equal(got, expected)
    # the call's one operator is made by one worker and shipped once to each other worker that runs blocks (24
    # blocks: shipped per task it would be unpickled about once per block)
    assert y.npartitions == 24 and all(n <= 1 for n in counts.values())
    assert sum(counts.values()) == 1 if len(holders) == 2 else sum(counts.values()) <= 1


def test_one_operator_for_the_whole_call(rng):
    """The graph holds one operator task, the only one that reads the weight and bias; every block runs through it."""
    import dask

    from fastdeconv._operator import ConvTranspose

    x = rng.standard_normal((2, 8, 9, 7)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y = fdd.conv_transpose(_dask(x, (1, 8, 4, 3)), w, b, stride=2, padding=1)
    graph = dict(y.__dask_graph__())
    ops = [k for k, task in graph.items() if isinstance(task, tuple) and task and task[0] is fdd._operator]
    blocks = [task for task in graph.values() if isinstance(task, tuple) and task and task[0] is fdd._compute_block]
    assert len(ops) == 1 and len(blocks) == 2 * 3 * 3
    w_key, b_key = graph[ops[0]][1:3]
    assert {task[4] for task in blocks} == {ops[0]}
    assert not any(w_key in task or b_key in task for task in blocks)
    op = dask.get(graph, ops[0])
    assert isinstance(op, ConvTranspose) and np.array_equal(op.weight, w) and np.array_equal(op.bias, b)
    np.testing.assert_array_equal(y.compute(scheduler="threads"), fd.conv_transpose(x, w, b, stride=2, padding=1))


def test_example_runs_tiny(tmp_path):
    pytest.importorskip("zarr")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "huge_upsample.py"), "--size", "96", "--chunk", "20",
                          "--baseline-size", "64", "--workdir", str(tmp_path), "--repeat", "1", "--verify-all"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified: the zarr output equals fastdeconv.conv_transpose" in out.stdout
    assert "peak RSS" in out.stdout and "MB/s" in out.stdout
    assert not list(tmp_path.iterdir())  # the stores are deleted afterwards


def test_blocks_run_the_whole_arrays_variant():
    """Every block's plan carries the variant chosen for the whole array, whatever the block's own cost would pick."""
    x = da.zeros((4, 64, 16, 16), chunks=(1, 64, 3, 5), dtype=np.float32)
    w = np.zeros((64, 3, 4, 4), np.float32)
    whole = fd.plan(x.shape, w.shape, stride=2, padding=1).variant
    y = fdd.conv_transpose(x, w, stride=2, padding=1)
    plans = [task[5] for task in dict(y.__dask_graph__()).values()
             if isinstance(task, tuple) and len(task) > 3 and isinstance(task[3], geo.Plan)]
    assert plans and {p.variant for p in plans} == {whole}


def test_blocks_run_a_recorded_calibration_too(monkeypatch, tmp_path):
    """With a calibration record for the whole array's shapes, the blocks run the recorded variant, as the
    in-memory call does (so the two still sum the same terms in the same order)."""
    from fastdeconv import _api, _calibrate, _cost

    monkeypatch.setenv("FASTDECONV_CALIBRATE", "1")
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    _calibrate.forget()
    x_shape, w_shape = (1, 21, 32, 32), (21, 40, 3, 3)  # the model rates several variants close together
    plan = geo.make_plan(x_shape, w_shape, np.dtype(np.float32), np.dtype(np.float32), 2, 1, 0, 1, 1)
    names = _calibrate.candidates(plan, _cost.choose(plan).estimates)
    assert len(names) >= 2
    _calibrate.store(_calibrate.key(plan), {"variant": names[-1], "seconds": {n: 1.0 + i for i, n in
                                                                                   enumerate(reversed(names))}})
    try:
        y = fdd.conv_transpose(da.zeros(x_shape, chunks=(1, 21, 16, 16), dtype=np.float32),
                               np.zeros(w_shape, np.float32), stride=2, padding=1)
        plans = [task[5] for task in dict(y.__dask_graph__()).values()
                 if isinstance(task, tuple) and len(task) > 3 and isinstance(task[3], geo.Plan)]
        assert plans and {p.variant for p in plans} == {names[-1]}
        assert _api.prepared(plan).variant == names[-1]
    finally:
        _calibrate.forget()
        fd.clear_caches()


def test_blocks_run_the_whole_arrays_variant_through_the_operator(rng):
    """A block runs the variant fixed in its plan, also where a one-off call of the block could not (Winograd
    with its transformed weights kept by the operator, which a small block's memory rule forbids a one-off call)."""
    import dask
    from reference import conv_transpose_ref

    from fastdeconv import _cost

    x = rng.standard_normal((2, 64, 4, 4)).astype(np.float32)
    w = rng.standard_normal((64, 32, 4, 4)).astype(np.float32)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1)
    assert "gather-winograd" not in dict(_cost.choose(plan).estimates)  # (the one-off memory rule)
    forced = geo.make_request("gather-winograd")
    op = fd.ConvTranspose(w, stride=2, padding=1)
    y = np.empty(plan.out_shape, np.float32)
    run_block(op, plan, forced, x, y)
    assert {entry[0].variant for entry in op._shapes.values()} == {"gather-winograd"}
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, stride=2, padding=1), **tolerance(np.float32))

    # a whole call: every block's prepared plan in the graph's one operator runs the whole array's variant
    lazy = fdd.conv_transpose(_dask(x, (1, 64, 2, 3)), w, stride=2, padding=1)
    graph = dict(lazy.__dask_graph__())
    op_key = next(k for k, task in graph.items() if isinstance(task, tuple) and task and task[0] is fdd._operator)
    keys = [k for k, task in graph.items() if isinstance(task, tuple) and task and task[0] is fdd._compute_block]
    op, *blocks = dask.get(graph, [op_key] + keys)
    whole = {task[5].variant for task in graph.values() if isinstance(task, tuple) and task and
             task[0] is fdd._compute_block}
    assert len(whole) == 1 and {entry[0].variant for entry in op._shapes.values()} == whole
    assert len(op._shapes) >= 2 and all(b.shape[:2] == (1, 32) for b in blocks)


# ---------------------------------------------------------------------------------------------- short last blocks

# (x shape, chunks, weight shape, geometry): the last output block along some axis is shorter than the stride
# (fewer output phases than the other blocks), all blocks running through the call's one operator
SHORT_LAST = [
    ((8, 4, 4, 9), (8, 4, 4, 8), (4, 64, 3, 3), dict(stride=2, padding=1)),  # issue 26: W blocks 16 + 1
    ((2, 6, 10), (1, 6, (4, 5, 1)), (6, 4, 4), dict(stride=3, padding=((2, 1),), groups=2)),  # 12 + 15 + 1
    ((1, 4, 3, 4, 5), (1, 4, (2, 1), (3, 1), (3, 2)), (4, 8, 2, 3, 3),
     dict(stride=(2, 2, 3), padding=((0, 1), (1, 1), (2, 2)))),  # 4 + 1, 6 + 1, 9 + 2
    ((2, 16, 5, 9), (1, 16, (3, 2), (8, 1)), (16, 32, 4, 4), dict(stride=2, padding=((1, 2), (2, 1)))),  # Winograd
]


@pytest.mark.parametrize("variant", [None, *registry.names(baseline=True)])
@pytest.mark.parametrize("case", range(len(SHORT_LAST)))
def test_last_block_shorter_than_the_stride(monkeypatch, case, variant):
    """Every block through the call's one operator, with the synchronous and the threaded scheduler: the
    reference's values (and the in-memory call's), both schedulers the same bits; every variant forced on the
    whole call (``variant``; None: the cost model's pick) where it applies."""
    x_shape, chunks, w_shape, kw = SHORT_LAST[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * kw.get("groups", 1)).astype(np.float32)
    if variant is not None:
        whole = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, **kw)
        record = registry.get(variant)
        if variant != "zerofill" and not (record.applies(whole) and (record.estimate(whole, 2) is not None or
                                                                     record.estimate(whole, 2, kept=True) is not None)):
            pytest.skip(f"{variant} does not apply to the whole call")  # (with the operator's weights kept)
        monkeypatch.setattr(fdd, "decide_variant", lambda plan, ranked, **kw: variant)
    y = fdd.conv_transpose(_dask(x, chunks), w, b, **kw)
    strides = geo.per_axis(kw["stride"], len(w_shape) - 2, "stride")
    assert any(c[-1] < s for c, s in zip(y.chunks[2:], strides))  # (what the test is about)
    expected = conv_transpose_ref(x, w, b, **kw)
    got = {scheduler: y.compute(scheduler=scheduler) for scheduler in ("sync", "threads")}
    for scheduler, result in got.items():
        np.testing.assert_allclose(result, expected, err_msg=scheduler, **tolerance(np.float32))
    assert np.array_equal(got["sync"], got["threads"])
    if variant is None:
        np.testing.assert_allclose(got["sync"], fd.conv_transpose(x, w, b, **kw), **tolerance(np.float32))
    blocks = [task[5] for task in dict(y.__dask_graph__()).values()
              if isinstance(task, tuple) and len(task) > 3 and isinstance(task[3], geo.Plan)]
    assert variant is None or {p.variant for p in blocks} == {variant}


def test_last_block_shorter_than_the_stride_on_a_local_cluster():
    """The issue's chunking, one sample per block (16 blocks, 8 of them one column wide), on two worker processes:
    the operator shipped to each runs every block right."""
    distributed = pytest.importorskip("distributed")
    x_shape, chunks, w_shape, kw = SHORT_LAST[0]
    chunks = (1,) + chunks[1:]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, host="127.0.0.1", processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        got = fdd.conv_transpose(_dask(x, chunks), w, **kw).compute()
    np.testing.assert_allclose(got, conv_transpose_ref(x, w, **kw), **tolerance(np.float32))
