"""One ``ConvTranspose`` fed many input shapes: every result is the reference's and has the bits of a fresh
operator made for that shape alone, whatever shapes came before (a kept pack holds everything it depends on,
e.g. which output phases exist on an axis shorter than the stride), with every variant forced, and with several
threads calling one operator with different shapes at once."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _geometry as geo
from fastdeconv import variants as registry
from fastdeconv._operator import run_block

VARIANTS = registry.names(baseline=True)


@st.composite
def operator_calls(draw):
    """A weight geometry (1-D to 3-D, groups, every padding form) and a sequence of 2 to 4 input shapes (batched
    or not) with sizes down to 1, each of which gives an output (often shorter than the stride on some axis)."""
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    stride = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilation = [draw(st.sampled_from([1, 1, 2])) for _ in range(rank)]
    if draw(st.booleans()):  # few channels, any kernel
        cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    else:  # channel-rich, kernels a multiple of the stride: gather-winograd fits too (with the weights kept)
        cin_g, cout_g = draw(st.sampled_from([8, 16])), draw(st.sampled_from([16, 32]))
        kernel = [s * draw(st.integers(1, 2 if s > 1 else 3)) for s in stride]
    kind = draw(st.sampled_from(["int", "ints", "ints", "pairs", "pairs", "same", "valid"]))
    output_padding = [0] * rank
    if kind != "same":
        output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    # per axis, a crop that often leaves an input of one element fewer outputs than the stride (fewer phases)
    spans = [(k - 1) * d + 1 + o for k, d, o in zip(kernel, dilation, output_padding)]
    crops = [draw(st.integers(max(0, n - max(s, 2) + 1), n - 1)) if draw(st.integers(0, 2)) else
             draw(st.integers(0, k)) for k, n, s in zip(kernel, spans, stride)]
    if kind == "int":
        padding = draw(st.sampled_from(sorted({0, 1, crops[0] // 2})))
    elif kind == "ints":
        padding = tuple(c // 2 for c in crops)
    elif kind == "pairs":
        padding = tuple((before := draw(st.integers(0, c)), c - before) for c in crops)
    else:
        padding = kind
    kw = dict(stride=tuple(stride), padding=padding, output_padding=tuple(output_padding), groups=groups,
              dilation=tuple(dilation))
    w_shape = (groups * cin_g, cout_g) + tuple(kernel)
    biggest = (7, 4, 3)[rank - 1]
    size = st.one_of(st.just(1), st.integers(2, biggest))
    shapes = draw(st.lists(st.tuples(st.integers(0, 2), *[size] * rank), min_size=2, max_size=4))
    valid = []
    for n, *spatial in shapes:  # (n = 0: an unbatched input)
        x_shape = (n,) * (n > 0) + (groups * cin_g,) + tuple(spatial)
        try:
            geo.make_plan(x_shape, w_shape, np.float32, np.float32, **kw)
        except ValueError:  # (no output on some axis: too much padding for this size)
            continue
        valid.append(x_shape)
    assume(len(valid) >= 2)
    return dict(w_shape=w_shape, kw=kw, shapes=valid, method=draw(st.sampled_from(["auto", "scatter", "gather",
                                                                                  "zerofill"])),
                dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2 ** 16)))


def _forced_plan(x, w, kw, variant):
    """The plan of ``x`` with ``variant`` fixed (as the Dask twin fixes its blocks' variant), or None where it
    cannot run: it does not apply, or no chunk of it fits even with the operator's weights kept."""
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, **kw)
    request = geo.make_request(variant)
    record = registry.get(variant)
    if variant != "zerofill" and not (record.applies(plan) and (record.estimate(plan, 2) is not None or
                                                                 record.estimate(plan, 2, kept=True) is not None)):
        return None
    return plan, request


@settings(max_examples=80, deadline=None)
@given(case=operator_calls())
def test_one_operator_many_shapes_equals_fresh_operators(case):
    """A kept operator called on a sequence of shapes, through its public call (its ``method``) and with every
    variant forced (``run_block``, the Dask twin's entry): each result is the reference's, and bitwise a fresh
    operator's for that shape alone."""
    kw, dtype = case["kw"], case["dtype"]
    rng = np.random.default_rng(case["seed"])
    w = rng.standard_normal(case["w_shape"]).astype(dtype)
    b = rng.standard_normal(case["w_shape"][1] * kw["groups"]).astype(dtype)
    kept = fd.ConvTranspose(w, b, **kw, method=case["method"])
    for x_shape in case["shapes"]:
        x = rng.standard_normal(x_shape).astype(dtype)
        plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, **kw)
        if any(a.size_out < a.stride for a in plan.axes):
            event("an output axis shorter than the stride")
        expected = conv_transpose_ref(x, w, b, **kw)
        fresh = fd.ConvTranspose(w, b, **kw, method=case["method"])
        y = kept(x)
        np.testing.assert_allclose(y, expected, err_msg=case["method"], **tolerance(dtype))
        assert np.array_equal(y, fresh(x)), f"method={case['method']}: a kept operator and a fresh one differ"
        for variant in VARIANTS:
            forced = _forced_plan(x, w, kw, variant)
            if forced is None:
                continue
            plan, request = forced
            event(f"forced {variant}")
            y = np.full(plan.out_shape, np.nan, plan.dtype)
            run_block(kept, plan, request, x, y)
            np.testing.assert_allclose(y, expected, err_msg=variant, **tolerance(dtype))
            y_fresh = np.full(plan.out_shape, np.nan, plan.dtype)
            run_block(fresh, plan, request, x, y_fresh)
            assert np.array_equal(y, y_fresh), f"{variant}: a kept operator and a fresh one differ"


def test_the_issues_gather_operator_on_a_second_shape():
    """Issue 26: an output axis shorter than the stride (fewer output phases) on the second shape."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 64, 2, 2)).astype(np.float32)
    kw = dict(stride=2, padding=((1, 1), (1, 2)))
    op = fd.ConvTranspose(w, **kw, method="gather")
    first = rng.standard_normal((4, 16, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(op(first), conv_transpose_ref(first, w, **kw), **tolerance(np.float32))
    second = rng.standard_normal((4, 16, 8, 2)).astype(np.float32)
    assert op(second).shape[-1] == 1  # one output column: one phase of two
    np.testing.assert_allclose(op(second), conv_transpose_ref(second, w, **kw), **tolerance(np.float32))
    assert np.array_equal(op(second), fd.ConvTranspose(w, **kw, method="gather")(second))


def test_kept_winograd_weights_on_a_second_shape_with_fewer_phases():
    """gather-winograd's kept weights hold one block per output phase that has outputs: a second shape whose
    output is one column wide (one phase of two along W) gets weights of its own."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 32, 4, 4)).astype(np.float32)
    kw = dict(stride=2, padding=((1, 2), (2, 1)))
    op = fd.ConvTranspose(w, **kw)
    for x_shape in [(1, 16, 5, 5), (4, 16, 5, 1)]:
        x = rng.standard_normal(x_shape).astype(np.float32)
        plan, request = _forced_plan(x, w, kw, "gather-winograd")
        y, fresh = np.full(plan.out_shape, np.nan, np.float32), np.full(plan.out_shape, np.nan, np.float32)
        run_block(op, plan, request, x, y)
        run_block(fd.ConvTranspose(w, **kw), plan, request, x, fresh)
        assert op._shapes[(plan, request)][0].variant == "gather-winograd"
        np.testing.assert_allclose(y, conv_transpose_ref(x, w, **kw), **tolerance(np.float32))
        assert np.array_equal(y, fresh)


# (x shapes, weight shape, geometry): channel-rich enough for the BLAS variants and gather-winograd, with
# shapes whose outputs are shorter than the stride on some axis
THREADED = [
    ([(1, 16, 5, 5), (4, 16, 5, 1), (2, 16, 1, 4), (3, 16, 2, 2), (2, 16, 8, 1)], (16, 32, 4, 4),
     dict(stride=2, padding=((1, 2), (2, 1)))),
    ([(1, 8, 9), (2, 8, 1), (3, 8, 2), (1, 8, 6)], (8, 12, 3), dict(stride=3, padding=1, groups=2)),
    ([(1, 6, 3, 3, 3), (1, 6, 1, 2, 1), (2, 6, 2, 1, 2)], (6, 8, 2, 2, 2), dict(stride=2, padding=((0, 1),) * 3)),
]


@pytest.mark.parametrize("method", ["auto", "gather", "scatter"])
@pytest.mark.parametrize("case", range(len(THREADED)))
def test_threads_call_one_operator_with_different_shapes_at_once(method, case):
    """Eight threads call one operator at once, each with its own order of shapes (first calls racing, with
    every variant forced too): the bits of fresh operators, one per shape."""
    shapes, w_shape, kw = THREADED[case]
    rng = np.random.default_rng(case)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * kw.get("groups", 1)).astype(np.float32)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    jobs = [(x, None) for x in xs] + [(x, forced) for x in xs for v in VARIANTS
                                      if (forced := _forced_plan(x, w, kw, v)) is not None]
    expected = []
    for x, forced in jobs:
        fresh = fd.ConvTranspose(w, b, **kw, method=method)
        if forced is None:
            expected.append(fresh(x))
        else:
            plan, request = forced
            expected.append(np.empty(plan.out_shape, plan.dtype))
            run_block(fresh, plan, request, x, expected[-1])
    op = fd.ConvTranspose(w, b, **kw, method=method)
    barrier = threading.Barrier(8)

    def run(worker):
        order = np.random.default_rng(worker).permutation(len(jobs))
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        wrong = []
        for i in order:
            x, forced = jobs[i]
            if forced is None:
                y = op(x)
            else:
                plan, request = forced
                y = np.full(plan.out_shape, np.nan, plan.dtype)
                run_block(op, plan, request, x, y)
            if not np.array_equal(y, expected[i]):
                wrong.append((x.shape, None if forced is None else forced[1].variant))
        return wrong

    with ThreadPoolExecutor(max_workers=8) as pool:
        wrong = [w for found in pool.map(run, range(8)) for w in found]
    assert not wrong, f"results that differ from a fresh operator's: {sorted(set(wrong), key=str)}"
    for (x, _), y in zip(jobs, expected):  # (and the fresh operators are right)
        np.testing.assert_allclose(y, conv_transpose_ref(x, w, b, **kw), **tolerance(np.float32))
