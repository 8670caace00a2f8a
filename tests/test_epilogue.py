"""The fused epilogue (``activation=``) and ``fold_batchnorm``: every activation against its NumPy definition on
the reference result, with every variant forced; the operator and the functional call; the errors; batch norm
folded as torch's eval-mode ConvTranspose -> BatchNorm computes it."""


import numpy as np
import pytest
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _api, variants
from fastdeconv import _geometry as geo

ACTIVATIONS = {
    "relu": lambda v: np.where(v < 0, 0.0, v),
    ("leaky_relu", 0.2): lambda v: np.where(v < 0, 0.2 * v, v),
    "tanh": np.tanh,
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    ("clamp", -0.5, 0.75): lambda v: np.clip(v, -0.5, 0.75),
}

# (x shape, weight shape, geometry): 1-D to 3-D, groups, the DCGAN 4x4/2 and a 3x3/1 layer (Winograd), few channels
CASES = [
    ((2, 8, 5, 6), (8, 6, 4, 4), dict(stride=2, padding=1)),
    ((1, 4, 7), (4, 3, 3), dict(stride=3, padding=1)),
    ((2, 6, 3, 4, 3), (6, 2, 3, 3, 2), dict(stride=2, groups=2)),
    ((2, 16, 9, 7), (16, 8, 3, 3), dict(stride=1, padding=1)),
    ((1, 3, 9, 9), (3, 1, 4, 4), dict(stride=2, padding=1, groups=3)),
]


def forced(x, w, b, kw, variant, activation):
    """Run ``variant`` on the plan of this call (None where it does not apply), as a dispatcher does."""
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, **kw,
                         options=geo.PlanOptions(bias_shape=b.shape, activation=activation))
    request = geo.make_request(variant)
    record = variants.get(variant)
    if variant != "zerofill" and not (record.applies(plan) and record.estimate(plan, 2) is not None):
        return None
    prepared = _api.prepared(plan, request)
    y = np.full(plan.out_shape, np.nan, plan.dtype)
    prepared.execute(x.reshape(prepared.x5_shape), w.reshape(prepared.w5_shape), b, y.reshape(prepared.y5_shape))
    return y


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_activation_with_every_variant_forced(case):
    x_shape, w_shape, kw = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * kw.get("groups", 1)).astype(np.float32)
    ref = conv_transpose_ref(x, w, b, **kw)
    ran = set()
    for activation, f in ACTIVATIONS.items():
        for variant in variants.names(baseline=True):
            y = forced(x, w, b, kw, variant, activation)
            if y is None:
                continue
            ran.add(variant)
            np.testing.assert_allclose(y, f(ref), rtol=1e-4, atol=1e-4, err_msg=f"{variant} {activation}")
        np.testing.assert_allclose(fd.conv_transpose(x, w, b, **kw, activation=activation), f(ref), rtol=1e-4,
                                   atol=1e-4)
    assert {"scatter-direct", "gather-direct", "zerofill"} <= ran


def test_larger_tasks_are_activated_once():
    """Several tasks and chunks per call (tanh is not idempotent: a region activated twice, or not at all, shows)."""
    rng = np.random.default_rng(7)
    for x_shape, w_shape, kw in [((3, 16, 40, 37), (16, 8, 3, 3), dict(stride=1, padding=1)),
                                 ((4, 32, 16, 16), (32, 16, 4, 4), dict(stride=2, padding=1)),
                                 ((2, 8, 64, 64), (8, 3, 4, 4), dict(stride=2, padding=1))]:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        b = rng.standard_normal(w_shape[1]).astype(np.float32)
        ref = np.tanh(conv_transpose_ref(x, w, b, **kw))
        for variant in variants.names():
            y = forced(x, w, b, kw, variant, "tanh")
            if y is not None:
                np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4, err_msg=variant)


def test_operator_activation_equals_the_call_and_bias_comes_first():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.array([-100.0, 0.0, 100.0], np.float32)  # a bias that decides the clamp's side
    op = fd.ConvTranspose(w, b, stride=2, activation=("clamp", -1.0, 1.0))
    y = op(x)
    np.testing.assert_array_equal(y, fd.conv_transpose(x, w, b, stride=2, activation=("clamp", -1.0, 1.0)))
    assert (y[:, 0] == -1).all() and (y[:, 2] == 1).all()
    plain = fd.ConvTranspose(w, b, stride=2)(x)
    np.testing.assert_array_equal(y[:, 1], np.clip(plain[:, 1], -1, 1))
    assert "activation=('clamp', -1.0, 1.0)" in repr(op)
    with pytest.raises(ValueError, match="activation"):
        op.backward(x, y)


def test_nan_stays_nan_and_float64():
    x = np.ones((1, 1, 3))
    x[0, 0, 1] = np.nan
    y = fd.conv_transpose(x, np.ones((1, 1, 1)), activation="relu")
    assert np.isnan(y[0, 0, 1]) and y.dtype == np.float64
    y = fd.conv_transpose(-np.ones((1, 1, 3)), np.ones((1, 1, 1)), activation=("leaky_relu", 0.5))
    np.testing.assert_array_equal(y, -0.5)


@pytest.mark.parametrize("bad", ["gelu", ("relu", 1.0), ("leaky_relu",), ("leaky_relu", float("inf")),
                                 ("leaky_relu", float("nan")), ("clamp", 1.0, 0.0), ("clamp", 0.0), ["relu"], 3,
                                 ("clamp", "a", 1.0), ("leaky_relu", True)])
def test_bad_activations_are_refused(bad):
    x, w = np.ones((1, 1, 3)), np.ones((1, 1, 2))
    with pytest.raises(ValueError, match="activation"):
        fd.conv_transpose(x, w, activation=bad)
    with pytest.raises(ValueError, match="activation"):
        fd.ConvTranspose(w, activation=bad)


@pytest.mark.parametrize("groups", [1, 2])
def test_fold_batchnorm_equals_torch_eval_mode(groups):
    torch = pytest.importorskip("torch")
    torch.manual_seed(groups)
    conv = torch.nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1, groups=groups)
    bn = torch.nn.BatchNorm2d(6, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3.0)
    net = torch.nn.Sequential(conv, bn).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        expected = net(x).numpy()
    p = {k: v.detach().numpy() for k, v in dict(conv.named_parameters()).items()}
    w, b = fd.fold_batchnorm(p["weight"], p["bias"], bn.weight.detach().numpy(), bn.bias.detach().numpy(),
                             bn.running_mean.numpy(), bn.running_var.numpy(), eps=1e-3, groups=groups)
    assert w.shape == p["weight"].shape and w.dtype == np.float32
    y = fd.ConvTranspose(w, b, stride=2, padding=1, groups=groups, activation="relu")(x.numpy())
    np.testing.assert_allclose(y, np.maximum(expected, 0), rtol=1e-4, atol=1e-5)
    # no bias: the mean alone moves the bias
    w0, b0 = fd.fold_batchnorm(p["weight"], None, np.ones(6), np.zeros(6), np.arange(6.0), np.ones(6), eps=1e-5,
                               groups=groups)
    np.testing.assert_allclose(b0, -np.arange(6.0) / np.sqrt(1 + 1e-5))


def test_fold_batchnorm_refuses_mismatches():
    w = np.ones((4, 3, 2, 2))
    ok = dict(bias=np.zeros(3), gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3), running_var=np.ones(3))
    for name in ok:
        bad = dict(ok, **{name: np.ones(4)})
        with pytest.raises(ValueError, match=name):
            fd.fold_batchnorm(w, **bad)
    with pytest.raises(ValueError, match="running_mean"):  # groups=2: C_out is 6
        fd.fold_batchnorm(w, None, np.ones(6), np.zeros(6), np.zeros(3), np.ones(6), groups=2)
    for eps in (0, -1e-5, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            fd.fold_batchnorm(w, **ok, eps=eps)
