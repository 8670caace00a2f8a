"""fastdeconv.ConvTranspose: the operator against the functional call and the reference; every registry variant
forced through both paths; threads, pickle/copy, the weight copy, out=, output_size=, validation."""

import copy
import json
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import tolerance
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _api, _cost
from fastdeconv import _geometry as geo
from fastdeconv import variants as registry

# (x shape, weight shape, geometry): every registry variant applies to the first (small, 4x4 stride 2, few
# output channels: gather-plane too)
ALL_VARIANTS = ((2, 4, 6, 7), (4, 3, 4, 4), {"stride": 2, "padding": 1})
# the variants for some layers only, each with a layer of its own: a wide-stride 1-D overlap-add
OWN_LAYER = {"scatter-gemm-phases": ((1, 16, 8), (16, 1, 96), {"stride": 32, "padding": 0})}
GEOMETRIES = [
    ALL_VARIANTS,
    ((3, 6, 11), (6, 2, 5), {"stride": 3, "padding": ((2, 1),), "dilation": 2, "output_padding": 1}),
    ((1, 4, 3, 4, 5), (4, 3, 2, 3, 2), {"stride": (1, 2, 2), "padding": 1, "groups": 2}),
    ((8, 5, 5), (8, 4, 3, 3), {"stride": 2, "padding": "same"}),  # unbatched
    ((2, 32, 6, 6), (32, 24, 4, 4), {"stride": 2, "padding": 1}),  # channel-rich: BLAS variants
]


def _arrays(x_shape, w_shape, groups, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[1] * groups).astype(dtype)
    return x, w, b


def _forced(variant, x, w, b, kw):
    """(one-off call, operator call) of ``variant`` forced on the same plan: ``call_pack`` then ``run``, and the
    operator's kept pack then ``run``."""
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, kw.get("stride", 1), kw.get("padding", 0),
                         kw.get("output_padding", 0), kw.get("groups", 1), kw.get("dilation", 1))
    request = geo.make_request(variant)
    functional = np.full(plan.out_shape, np.nan, plan.dtype)
    prepared = _api.Prepared(plan, request)
    assert prepared.variant == variant
    prepared.run(x, w, b, functional)
    op = fd.ConvTranspose(w, b, **kw)
    w5, bv = op._in_dtype(plan)
    kept = np.full(plan.out_shape, np.nan, plan.dtype)
    prepared = _api.Prepared(plan, request, kept=op._store)
    assert prepared.variant == variant
    prepared.run_kept(x, w5, bv, kept)
    prepared.run_kept(x, w5, bv, kept)  # the second call reads the kept pack
    return functional, kept, op


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", registry.names(baseline=True))
def test_every_variant_forced_matches_reference_through_both_paths(variant, dtype):
    x_shape, w_shape, kw = OWN_LAYER.get(variant, ALL_VARIANTS)
    x, w, b = _arrays(x_shape, w_shape, 1, dtype)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, kw["stride"], kw["padding"])
    assert registry.get(variant).applies(plan)
    assert variant == "zerofill" or variant in _cost.estimate(plan, 2)  # a one-off call can run it too
    functional, kept, op = _forced(variant, x, w, b, kw)
    np.testing.assert_allclose(functional, conv_transpose_ref(x, w, b, **kw), err_msg=variant, **tolerance(dtype))
    assert np.array_equal(kept, functional), f"{variant}: operator and one-off call differ"


@pytest.mark.parametrize("variant", ["scatter-gemm", "gather-gemm-cols"])
@pytest.mark.parametrize("case", [
    ((3, 8, 5, 6), (8, 6, 3, 3), {"stride": 2, "padding": 1, "groups": 2}),  # groups: one pack block each
    ((1, 6, 5, 9), (6, 2, 8, 8), {"stride": 4, "padding": 2}),  # a wide stride: pixels-major GEMMs
    ((9, 16, 2, 2), (16, 8, 4, 4), {"stride": 2, "padding": 1}),  # many small samples: sample-minor chunks
    ((2, 8, 9, 7, 5), (8, 5, 3, 2, 3), {"stride": (2, 1, 3), "padding": (1, 0, 1)}),  # 3-D
    ((2, 32, 6, 6), (32, 24, 4, 4), {"stride": 2, "padding": 1}),  # small GEMMs: BLAS's small-matrix kernels
])
def test_kept_weight_gives_the_one_off_bits(variant, case):
    """``scatter-gemm`` and ``gather-gemm-cols`` through an operator read the weight it keeps through the same
    transposed view as a one-off call (``scatter_gemm.pack``): the same bits on every chunk orientation. (A
    contiguous transposed copy gave other bits where BLAS runs its small-matrix kernels, the last case.)"""
    x_shape, w_shape, kw = case
    x, w, b = _arrays(x_shape, w_shape, kw.get("groups", 1), np.float32, seed=3)
    functional, kept, op = _forced(variant, x, w, b, kw)
    np.testing.assert_allclose(functional, conv_transpose_ref(x, w, b, **kw), **tolerance(np.float32))
    assert np.array_equal(kept, functional)
    packs = [p for key, p in op._store.packs.items() if key[0] == variant]
    assert len(packs) == 1 and np.array_equal(packs[0].reshape(w.shape), w)  # the weight itself


def test_registry_records():
    names = registry.names()
    assert len(names) == 10 and "zerofill" not in names and registry.names(baseline=True)[-1] == "zerofill"
    assert set(registry.names("scatter")) | set(registry.names("gather")) == set(names)
    assert _cost.VARIANTS == names and all(_cost.FORM_OF[n] == registry.get(n).form for n in names)
    for v in registry.VARIANTS.values():
        assert v.kernels() and all(hasattr(k, "signatures") for k in registry.dispatchers(v.name)), v.name  # numba
    with pytest.raises(ValueError, match="unknown variant"):
        registry.get("scatter-fft")


@pytest.mark.parametrize("geometry", range(len(GEOMETRIES)))
def test_operator_equals_conv_transpose(geometry):
    x_shape, w_shape, kw = GEOMETRIES[geometry]
    x, w, b = _arrays(x_shape, w_shape, kw.get("groups", 1), np.float32, seed=geometry)
    op = fd.ConvTranspose(w, b, **kw)
    y = op(x)
    expected = fd.conv_transpose(x, w, b, **kw)
    assert y.dtype == expected.dtype and y.shape == expected.shape
    if op.plan(x.shape).variant == fd.plan(x.shape, w.shape, **kw).variant:
        assert np.array_equal(y, expected)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, b, **kw), **tolerance(np.float32))
    assert np.array_equal(op(x), y)  # kept plan and packs: the same bits again
    # float64 input: the weight converted once more, kept beside the float32 one
    y64 = op(x.astype(np.float64))
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, conv_transpose_ref(x, w, b, **kw), **tolerance(np.float64))


def test_winograd_is_a_candidate_on_weight_heavy_layers_through_the_operator():
    """The weight (64 x 32 x 4 x 4) is 4x the output: a one-off call's memory rule forbids Winograd, whose
    transformed weights an operator keeps."""
    x = np.random.default_rng(1).standard_normal((4, 64, 4, 4)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((64, 32, 4, 4)).astype(np.float32)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1)
    assert "gather-winograd" not in dict(_cost.choose(plan).estimates)
    assert "gather-winograd" in dict(_cost.choose(plan, kept=True).estimates)
    assert _cost.scratch_elements(plan, "gather-winograd", kept=True) <= np.prod(plan.out_shape)
    op = fd.ConvTranspose(w, stride=2, padding=1)
    prepared = _api.Prepared(plan, geo.make_request("gather-winograd"), kept=op._store)
    w5, bv = op._in_dtype(plan)
    y = np.empty(plan.out_shape, np.float32)
    prepared.run_kept(x, w5, bv, y)
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, None, stride=2, padding=1), **tolerance(np.float32))
    assert op.state_bytes > 2 * w.nbytes  # the weight and its transformed weights (36 / 16 of it)


def test_concurrent_calls_from_eight_threads():
    jobs = []
    for i, (x_shape, w_shape, kw) in enumerate(GEOMETRIES):
        x, w, b = _arrays(x_shape, w_shape, kw.get("groups", 1), np.float32, seed=10 + i)
        op = fd.ConvTranspose(w, b, **kw)
        # the expected result from a fresh operator's first call (the one under test is first called racing)
        jobs.append((op, x, fd.ConvTranspose(w, b, **kw)(x)))
    barrier = threading.Barrier(8)

    def run(job):
        op, x, expected = job
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass
        return all(np.array_equal(op(x), expected) for _ in range(3))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(run, jobs * 4))
    assert all(len(op._shapes) == 1 for op, _, _ in jobs)  # one plan per shape, however many threads raced


@pytest.mark.parametrize("clone", [lambda op: pickle.loads(pickle.dumps(op)), copy.copy, copy.deepcopy])
def test_pickle_and_copy_round_trip(clone):
    x_shape, w_shape, kw = GEOMETRIES[4]
    x, w, b = _arrays(x_shape, w_shape, 1, np.float32, seed=3)
    op = fd.ConvTranspose(w, b, **kw)
    y = op(x)
    other = clone(op)
    assert other is not op and not other._store.packs and not other._shapes  # packs rebuilt lazily
    assert np.array_equal(other(x), y)
    assert np.array_equal(other.weight, op.weight) and not np.may_share_memory(other.weight, op.weight)
    assert repr(other).startswith("ConvTranspose(weight=(32, 24, 4, 4) float32")


def test_weight_is_copied_and_read_only():
    x, w, b = _arrays((1, 4, 5, 6), (4, 3, 4, 4), 1, np.float64, seed=4)
    op = fd.ConvTranspose(w, b, stride=2)
    expected = fd.conv_transpose(x, w, b, stride=2)
    w[...] = 0
    b[...] = 0
    assert np.array_equal(op(x), expected)
    assert not op.weight.flags.writeable and not op.bias.flags.writeable
    with pytest.raises(ValueError):
        op.weight[0, 0, 0, 0] = 1.0
    assert np.array_equal(op(x), expected)


def test_out_and_output_size():
    x, w, b = _arrays((2, 4, 5, 6), (4, 3, 3, 3), 1, np.float32, seed=5)
    op = fd.ConvTranspose(w, b, stride=2, padding=1)
    expected = op(x)
    out = np.full_like(expected, np.nan)
    assert op(x, out=out) is out and np.array_equal(out, expected)
    strided = np.full(expected.shape[:-1] + (2 * expected.shape[-1],), np.nan, np.float32)[..., ::2]
    assert op(x, out=strided) is strided and np.array_equal(strided, expected)
    with pytest.raises(ValueError, match="out must have the result's shape"):
        op(x, out=np.empty((1, 2), np.float32))
    with pytest.raises(TypeError, match="out must have the result's dtype"):
        op(x, out=np.empty(expected.shape, np.float64))
    big = op(x, output_size=(10, 12))
    assert big.shape == (2, 3, 10, 12)
    assert np.array_equal(big, fd.conv_transpose(x, w, b, stride=2, padding=1, output_size=(10, 12)))
    assert np.array_equal(op(x, output_size=[2, 3, 10, 12]), big)  # a whole output shape, as conv_transpose
    with pytest.raises(ValueError, match="output_size"):
        op(x, output_size=(30, 30))
    assert np.array_equal(op(x.tolist()), fd.conv_transpose(x.tolist(), w, b, stride=2, padding=1))  # array-likes


def test_plan_and_repr_state_the_kept_bytes():
    x, w, b = _arrays((2, 32, 6, 6), (32, 24, 4, 4), 1, np.float32, seed=6)
    op = fd.ConvTranspose(w, b, stride=2, padding=1)
    before = op.state_bytes
    assert before == w.nbytes + b.nbytes
    op(x)
    choice = op.plan(x.shape)
    assert isinstance(choice, fd.Choice) and choice.variant == op._shapes[(x.shape, x.dtype, None)][0].variant
    assert "the operator keeps" in choice.reason
    assert "kept" in repr(op) and op.state_bytes >= before


@pytest.mark.parametrize("args, kwargs, exc, words", [
    ((np.ones((2, 3), np.float32),), {}, ValueError, "weight"),
    ((np.ones((2, 3, 2, 2), np.complex64),), {}, TypeError, "weight"),
    (("abc",), {}, TypeError, "weight"),
    ((np.ones((2, 3, 2, 2)),), {"stride": 0}, ValueError, "stride"),
    ((np.ones((2, 3, 2, 2)),), {"stride": 1.5}, TypeError, "stride"),
    ((np.ones((2, 3, 2, 2)),), {"padding": "full"}, ValueError, "padding"),
    ((np.ones((2, 3, 2, 2)),), {"output_padding": 1}, ValueError, "output_padding"),
    ((np.ones((2, 3, 2, 2)),), {"groups": 3}, ValueError, "groups"),
    ((np.ones((2, 3, 2, 2)),), {"method": "fft"}, ValueError, "method"),
    ((np.ones((2, 3, 2, 2)), np.ones(4)), {}, ValueError, "bias"),
    ((np.ones((2, 3, 2, 2)), np.ones(3, np.complex128)), {}, TypeError, "bias"),
])
def test_construction_validates(args, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        fd.ConvTranspose(*args, **kwargs)


def test_call_validates():
    op = fd.ConvTranspose(np.ones((2, 3, 2, 2), np.float32), stride=2)
    with pytest.raises(ValueError, match="input channels"):
        op(np.ones((1, 4, 3, 3), np.float32))
    with pytest.raises(TypeError, match="x must be real"):
        op(np.ones((1, 2, 3, 3), np.complex64))
    with pytest.raises(TypeError, match="output_size"):
        op(np.ones((1, 2, 3, 3), np.float32), output_size=6)
    with pytest.raises(ValueError, match="x"):
        op(np.ones((2, 3), np.float32))


def test_operator_measures_a_pick_only_it_can_run(monkeypatch, tmp_path):
    """Winograd with kept weights, where a one-off call cannot run it, is measured against the one-off call's
    pick on a tuning operator's first call, and the decision is recorded apart from the one-off call's."""
    from fastdeconv import _calibrate

    monkeypatch.setenv("FASTDECONV_CALIBRATE", "1")
    monkeypatch.setattr(registry, "ready", lambda variant, dtype: True)  # (measured on purpose)
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    _calibrate.forget()
    try:
        x = np.random.default_rng(1).standard_normal((4, 64, 8, 8)).astype(np.float32)
        w = np.random.default_rng(2).standard_normal((64, 64, 4, 4)).astype(np.float32)
        plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1)
        ranked = _cost.choose(plan, kept=True).estimates
        assert ranked[0][0] == "gather-winograd"  # the model's pick for the operator, not a one-off call's
        assert _api.operator_pick(plan)
        ranking = _api._ranking(plan, geo.AUTO, ranked, own=True, measure=True)  # (a tuning operator)
        names = _calibrate.candidates(plan, ranking)
        assert names[0] == _cost.choose(plan).variant and "gather-winograd" in names
        op = fd.ConvTranspose(w, stride=2, padding=1, tune=True)  # (measuring is a request)
        y = op(x)
        np.testing.assert_allclose(y, conv_transpose_ref(x, w, None, stride=2, padding=1), **tolerance(np.float32))
        variant = op.plan(x.shape).variant
        assert variant in names and np.array_equal(op(x), y)
        records = json.loads((tmp_path / "calibration.json").read_text())
        assert [k for k in records if "+kept" in k] and records[next(iter(records))]["variant"] == variant
        assert not op._store.packs or {k[0] for k in op._store.packs} == {variant}  # the loser's pack is dropped
    finally:
        _calibrate.forget()


def test_an_operator_runs_its_kept_pick_without_measuring():
    """Without tune=True nothing is timed, and an operator whose model pick (its kept weights not counted per call)
    is a variant a one-off call cannot run runs that pick; a one-off call of the same layer runs its own."""
    x = np.random.default_rng(1).standard_normal((4, 64, 8, 8)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((64, 64, 4, 4)).astype(np.float32)
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, 2, 1)
    kept = _cost.choose(plan, kept=True).variant
    assert _api.operator_pick(plan) and kept != _cost.choose(plan).variant
    op = fd.ConvTranspose(w, stride=2, padding=1)
    y = op(x)
    assert op.plan(x.shape).variant == kept
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, None, stride=2, padding=1), **tolerance(np.float32))
