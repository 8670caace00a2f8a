"""scatter-gemm-phases: wide-stride 1-D layers (learned overlap-add) split by output phase, against the reference."""

import numpy as np
import pytest
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _geometry as geo
from fastdeconv import _threads, variants

NAME = "scatter-gemm-phases"

# (x shape, w shape, geometry): batch and output channels, asymmetric padding and output padding, a kernel that is
# not a multiple of the stride, a stride that the residue groups do not divide evenly, an output shorter than
# the stride, a padding that crops whole blocks of outputs
CASES = [
    ((1, 64, 20), (64, 1, 128), dict(stride=32, padding=48)),
    ((3, 40, 17), (40, 2, 100), dict(stride=40, padding=[(10, 7)], output_padding=5)),
    ((2, 16, 9), (16, 3, 70), dict(stride=32)),
    ((1, 24, 33), (24, 1, 256), dict(stride=64, padding=96)),
    ((1, 8, 2), (8, 1, 100), dict(stride=64, padding=40)),
    ((2, 12, 6), (12, 1, 210), dict(stride=50, padding=[(130, 3)], output_padding=49)),
]

ACTIVATIONS = [(None, lambda v: v), ("relu", lambda v: np.maximum(v, 0)), ("tanh", np.tanh),
               (("clamp", -1.0, 1.5), lambda v: np.clip(v, -1.0, 1.5))]


def _plan(x_shape, w_shape, kw, dtype=np.float32):
    return geo.make_plan(x_shape, w_shape, np.dtype(dtype), np.dtype(dtype), **kw)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phases_forced(case, dtype):
    """Every case and activation against the reference; the operator's bits are the one-off call's."""
    x_shape, w_shape, kw = CASES[case]
    rng = np.random.default_rng(300 + case)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[1]).astype(dtype)
    plan = _plan(x_shape, w_shape, kw, dtype)
    record = variants.get(NAME)
    assert record.applies(plan) and record.exact
    assert record.scratch(plan) <= np.prod(plan.out_shape)  # the memory rule
    expected = conv_transpose_ref(x, w, b, **kw)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for activation, f in ACTIVATIONS:
        y = fd.conv_transpose(x, w, b, **kw, method=NAME, activation=activation)
        np.testing.assert_allclose(y, f(expected), rtol=tol, atol=tol, err_msg=str(activation))
        op = fd.ConvTranspose(w, b, **kw, method=NAME, activation=activation)
        np.testing.assert_array_equal(op(x), y)
    y = fd.conv_transpose(x, w, **kw, method=NAME)  # no bias
    np.testing.assert_allclose(y, conv_transpose_ref(x, w, None, **kw), rtol=tol, atol=tol)


def test_phases_bits_do_not_depend_on_the_thread_count():
    """Each task owns its outputs and adds their terms in tap order: the same bits on one worker or all."""
    x_shape, w_shape, kw = CASES[1]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    before = fd.get_num_threads()
    try:
        fd.set_num_threads(1)
        one = fd.conv_transpose(x, w, **kw, method=NAME)
        fd.set_num_threads(_threads.max_threads())
        many = fd.conv_transpose(x, w, **kw, method=NAME)
    finally:
        fd.set_num_threads(before)
    np.testing.assert_array_equal(one, many)


def test_phases_nonfinite_pattern():
    """An exact variant: an Inf in the input gives the definition's Inf/NaN pattern (the direct gather's)."""
    x_shape, w_shape, kw = CASES[0]
    rng = np.random.default_rng(8)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    x[0, 3, 5] = np.inf
    x[0, 7, 6] = -np.inf
    y = fd.conv_transpose(x, w, **kw, method=NAME)
    exact = fd.conv_transpose(x, w, **kw, method="gather-direct")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(exact))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(exact))
    finite = np.isfinite(exact)
    np.testing.assert_allclose(y[finite], exact[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((1, 16, 8, 8), (16, 1, 64, 64), dict(stride=32)),  # 2-D
    ((1, 16, 20), (16, 1, 64), dict(stride=16)),  # a stride below the wide ones
    ((1, 16, 20), (16, 2, 128), dict(stride=32, groups=2)),  # groups
    ((1, 16, 20), (16, 1, 64), dict(stride=32, dilation=2)),  # dilation
    ((1, 16, 20), (16, 1, 32), dict(stride=32)),  # no overlap: kernel == stride
])
def test_phases_does_not_apply(x_shape, w_shape, kw):
    plan = _plan(x_shape, w_shape, kw)
    assert not variants.get(NAME).applies(plan)
    with pytest.raises(ValueError, match=NAME):
        fd.conv_transpose(np.ones(x_shape, np.float32), np.ones(w_shape, np.float32), **kw, method=NAME)


def test_phases_picked_for_overlap_add_on_several_workers():
    """``auto`` runs a one-image learned overlap-add (kernel 1024, stride 256, ~1000 channels to one) with every
    worker, where scatter-gemm's single chunk runs on one."""
    if _threads.max_threads() < 2:
        pytest.skip("needs two workers")
    choice = fd.plan((1, 1024, 256), (1024, 1, 1024), stride=256, padding=384)
    assert choice.variant == NAME
