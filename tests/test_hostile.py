"""Hostile inputs (issue 18): nothing hangs, nothing lies, every error names its argument.

The planning cases run in a subprocess with a timeout and an address-space limit: before the fix, stride 2**62
never returned and dilation 2**36 exhausted 24 GB.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _geometry as geo

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
ADDRESS_SPACE = 6 * 2**30  # numba, LLVM and the BLAS threads reserve some; the tiny outputs need nothing more

# Every case has a tiny output; the stride / dilation values are what is hostile. For each: every method and
# every variant that applies (forced), against the reference.
HUGE_GEOMETRY_SCRIPT = textwrap.dedent("""
    import dataclasses, resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path[:0] = sys.argv[2:4]
    import numpy as np
    import fastdeconv as fd
    from fastdeconv import _api, _cost, _geometry as geo
    from reference import conv_transpose_ref

    CASES = [
        ((1, 1, 1), (1, 1, 3), dict(stride=2**16)),
        ((1, 1, 1), (1, 1, 3), dict(stride=2**20)),
        ((1, 1, 1), (1, 1, 3), dict(stride=2**62)),
        ((1, 1, 1), (1, 1, 2), dict(dilation=2**36, padding=((0, 2**36 - 3),))),
        ((2, 3, 2), (3, 4, 3), dict(stride=2**40, dilation=7, padding=((0, 2**40 - 5),))),
        ((1, 2, 3), (2, 2, 3), dict(stride=3, dilation=2**40, padding=((2**40, 2**40 - 3),))),
    ]

    def check(y, ref, what):
        assert y.shape == ref.shape and np.allclose(y, ref, rtol=1e-5, atol=1e-5), what

    def run_all():
        for xs, ws, kw in CASES:
            rng = np.random.default_rng(0)
            x = rng.standard_normal(xs).astype(np.float32)
            w = rng.standard_normal(ws).astype(np.float32)
            ref = conv_transpose_ref(x, w, **kw)
            assert ref.size <= 256
            for method in ("auto", "scatter", "gather", "zerofill"):
                fd.plan(xs, ws, method=method, **kw)
                try:
                    check(fd.conv_transpose(x, w, method=method, **kw), ref, (kw, method))
                except ValueError as exc:  # zerofill's buffer spans the dilated kernel
                    assert method == "zerofill" and "zero-fill buffer" in str(exc), exc
            plan = geo.make_plan(xs, ws, x.dtype, w.dtype, kw.get("stride", 1), kw.get("padding", 0), 0, 1,
                                 kw.get("dilation", 1))
            for variant in _cost.estimate(plan, 1):
                y = np.empty(plan.out_shape, plan.dtype)
                _api.execute(plan, x, w, None, y, request=geo.make_request(variant))
                check(y, ref, (kw, variant))

    # the kernels of every variant compiled (or loaded) first on an ordinary layer, then the hostile ones
    for variant in _cost.VARIANTS:
        xs, ws = (1, 2, 8), (2, 2, 4)
        plan = geo.make_plan(xs, ws, np.float32, np.float32, 2, 1, 0, 1, 1)
        if variant in _cost.estimate(plan, 1):
            _api.execute(plan, np.ones(xs, np.float32), np.ones(ws, np.float32), None,
                         np.empty(plan.out_shape, np.float32), request=geo.make_request(variant))
    run_all()
    print("ok")
""")


def test_planning_and_calls_do_not_grow_with_stride_or_dilation_values():
    args = [str(ADDRESS_SPACE), str(SRC), str(TESTS)]
    done = subprocess.run([sys.executable, "-c", HUGE_GEOMETRY_SCRIPT] + args, capture_output=True, text=True,
                          timeout=900)  # generous: a cold numba cache compiles every variant first
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_uncropped_output_beyond_int64_arithmetic_is_refused():
    with pytest.raises(ValueError, match="stride and dilation are too large"):
        fd.conv_transpose(np.ones((1, 1, 3)), np.ones((1, 1, 3)), stride=2**62, padding=((0, 2**63 - 1),))


# --------------------------------------------------------------------------- arrays of other kinds (item 5)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_np_matrix_is_its_data():
    x, w = np.matrix(np.arange(8.0).reshape(2, 4)), np.ones((2, 3, 3))
    y = fd.conv_transpose(x, w, stride=2)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, fd.conv_transpose(np.asarray(x), w, stride=2))
    w = np.matrix(np.ones((2, 3)))  # always 2-D: never a weight's shape, refused by the shape rule
    with pytest.raises(ValueError, match="weight must have shape"):
        fd.conv_transpose(np.ones((1, 2, 4)), w)


def test_tensors_without_grad_are_taken_as_arrays():
    torch = pytest.importorskip("torch")
    y = fd.conv_transpose(torch.ones(1, 2, 4), torch.ones(2, 1, 3), torch.ones(1))
    np.testing.assert_array_equal(y, fd.conv_transpose(np.ones((1, 2, 4), np.float32), np.ones((2, 1, 3), np.float32),
                                                       np.ones(1, np.float32)))
    assert y.dtype == np.float32


# --------------------------------------------------------------------------- byte order (item 6)


def test_big_endian_float32_gives_native_float32():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 5)).astype(np.float32), rng.standard_normal((3, 2, 4)).astype(np.float32)
    expected = fd.conv_transpose(x, w, stride=2, padding=1)
    y = fd.conv_transpose(x.astype(">f4"), w.astype(">f4"), stride=2, padding=1)
    assert y.dtype == np.float32 and y.dtype.isnative
    np.testing.assert_array_equal(y, expected)
    for out_dtype in (np.float32, ">f4"):
        out = np.empty(expected.shape, out_dtype)
        assert fd.conv_transpose(x.astype(">f4"), w, stride=2, padding=1, out=out) is out
        np.testing.assert_array_equal(out, expected)
    assert fd.conv_transpose(x.astype(">f8"), w.astype(">f4")).dtype == np.float64
    assert fd.plan(x.shape, w.shape, dtype=">f4").variant == fd.plan(x.shape, w.shape, dtype=np.float32).variant
    assert fd.zero_fill(x.astype(">f4"), 2).dtype == np.float32
    # the other public functions follow the same rule
    xb, wb = x.astype(">f4"), w.astype(">f4")
    assert fd.conv(xb, wb.swapaxes(0, 1)).dtype == np.float32
    assert fd.upsample_bilinear(xb[:, :, None], 2).dtype == np.float32
    assert {g.dtype for g in fd.conv_transpose_backward(expected.astype(">f4"), xb, wb, stride=2, padding=1)} == \
        {np.dtype(np.float32)}
    with pytest.raises(TypeError, match="out must have the result's dtype float32"):
        fd.conv_transpose(x.astype(">f4"), w, stride=2, padding=1, out=np.empty(expected.shape, ">f8"))


# --------------------------------------------------------------------------- broadcast views (item 7)


def test_a_broadcast_input_too_large_to_copy_is_refused_before_allocating():
    n = geo._physical_memory() // 4 + 1  # float32 elements beyond this machine's memory
    x = np.broadcast_to(np.float32(1), (1, 1, n))
    with pytest.raises(ValueError, match="a contiguous float32 copy of x of shape .* would need"):
        fd.conv_transpose(x, np.ones((1, 1, 1), np.float32), padding=((0, n - 4),))
    small = np.broadcast_to(np.float32(2), (1, 1, 6))  # small enough: copied and run
    np.testing.assert_array_equal(fd.conv_transpose(small, np.ones((1, 1, 2), np.float32)),
                                  conv_transpose_ref(np.asarray(small), np.ones((1, 1, 2))))


# Item 8 (Dask blocks of a wrong real shape) and the refusals of items 4 and 5 are rows of README's "Arguments and
# errors" table: tests/test_errors.py (test_dask_blocks_have_their_declared_shapes, test_core_geometry_ints_fit_int64,
# test_core_array_objects).
