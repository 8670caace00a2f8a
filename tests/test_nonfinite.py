"""Non-finite and extreme values: every variant but zerofill gives the definition's finite/Inf/NaN pattern, and a
finite result wherever the definition's terms and sums are finite (issue 18, item 2).

Each variant is forced through the dispatcher (a ``Request`` pinning it, the mechanism the Dask twin uses), so the
routing of values a variant could turn into a wrong Inf/NaN (``_scan.py``) is part of what is tested.
The reference (``tests/reference.py``) multiplies only the definition's terms, in float64.
"""


import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import conv_transpose_ref
from strategies import geometries, geometry_kwargs

from fastdeconv import _api, _cost
from fastdeconv import _geometry as geo
from fastdeconv import _scan as scan
from fastdeconv import variants as registry
from fastdeconv._operator import run_block

# NumPy's matmul/einsum warn when a NaN or an infinity meets a product; here that is the point
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:overflow encountered:RuntimeWarning")

VARIANTS = _cost.VARIANTS  # every optimized variant (zerofill multiplies its inserted zeros by design)


def _plan(x, w, bias, geometry):
    return geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, geometry["stride"], geometry["padding"],
                         geometry["output_padding"], geometry["groups"], geometry["dilation"], None,
                         options=geo.PlanOptions(bias_shape=None if bias is None else bias.shape,
                                                 bias_dtype=None if bias is None else bias.dtype))


def run_forced(variant, x, w, bias, geometry):
    """The result of ``variant`` forced on this call, or None when it does not apply to the geometry."""
    plan = _plan(x, w, bias, geometry)
    if variant not in _cost.estimate(plan, 1):
        return None
    y = np.empty(plan.out_shape, plan.dtype)
    _api.execute(plan, x, w, bias, y, request=geo.make_request(variant))
    return y


def assert_pattern(y, ref, err_msg):
    """Same NaN, +Inf and -Inf positions; the finite values close."""
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(y), test(ref), err_msg=f"{err_msg}: {test.__name__}")
    finite = np.isfinite(ref)
    tol = 1e-4 if y.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y[finite], ref[finite], rtol=tol, atol=tol, err_msg=err_msg)


def _sprinkle(a, picks):
    a = a.copy()
    flat = a.reshape(-1)
    for index, value in picks:
        flat[index % flat.size] = value
    return a


_specials = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([np.nan, np.inf, -np.inf])), max_size=3)


@given(g=geometries(channels=(3, 3)), batch=st.integers(1, 2), dtype=st.sampled_from([np.float32, np.float64]),
       use_bias=st.booleans(), x_specials=_specials, w_specials=_specials, seed=st.integers(0, 2**16))
def test_nan_and_inf_give_the_definitions_pattern_on_every_variant(g, batch, dtype, use_bias, x_specials,
                                                                   w_specials, seed):
    rng = np.random.default_rng(seed)
    x = _sprinkle(rng.standard_normal((batch, g["c_in"]) + tuple(g["spatial"])).astype(dtype), x_specials)
    w = _sprinkle(rng.standard_normal((g["c_in"], g["c_out"] // g["groups"]) + tuple(g["kernel"])).astype(dtype),
                  w_specials)
    bias = rng.standard_normal(g["c_out"]).astype(dtype) if use_bias else None
    geometry = geometry_kwargs(g)
    ref = conv_transpose_ref(x, w, bias, **geometry)
    for variant in VARIANTS:
        y = run_forced(variant, x, w, bias, geometry)
        if y is not None:
            assert_pattern(y, ref, variant)


@given(g=geometries(channels=(3, 3)), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.floats(0.3, 0.9), seed=st.integers(0, 2**16))
def test_values_near_the_dtype_limit_stay_finite_on_every_variant(g, dtype, scale, seed):
    """|x| near the largest float, small weights: every term and every partial sum of the definition is finite
    (the sum of the terms' magnitudes stays below half the largest float), so every variant's result is."""
    rng = np.random.default_rng(seed)
    top = float(np.finfo(dtype).max)
    k = int(np.prod(g["kernel"]))
    x = (rng.choice([-1.0, 1.0], (1, g["c_in"]) + tuple(g["spatial"])) * rng.uniform(0.5, 1.0, (1, g["c_in"])
         + tuple(g["spatial"])) * top * scale).astype(dtype)
    w = (rng.uniform(-1.0, 1.0, (g["c_in"], g["c_out"] // g["groups"]) + tuple(g["kernel"]))
         / (4 * g["c_in"] * k)).astype(dtype)
    geometry = geometry_kwargs(g)
    ref = conv_transpose_ref(x, w, **geometry)
    magnitude = conv_transpose_ref(np.abs(x), np.abs(w), **geometry)  # sum of |terms| per output
    assert np.all(magnitude < top / 2)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for variant in VARIANTS:
        y = run_forced(variant, x, w, None, geometry)
        if y is None:
            continue
        assert np.isfinite(y).all(), variant
        assert np.all(np.abs(y - ref) <= tol * magnitude), variant


# --------------------------------------------------------------------------- the cases


def test_gather_plane_nan_weight_tap_reaches_only_its_outputs():
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 3, 4, 4), np.float32)
    w[0, 0, 0, 1] = np.nan
    geometry = dict(stride=2, padding=0, output_padding=0, groups=1, dilation=1)
    y = run_forced("gather-plane", x, w, None, geometry)
    ref = conv_transpose_ref(x, w, stride=2)
    assert np.isnan(ref).sum() == 16
    assert_pattern(y, ref, "gather-plane")


@pytest.mark.parametrize("variant", ["gather-winograd", "gather-gemm"])
@pytest.mark.parametrize("where", ["inf x", "nan w", "inf w"])
def test_winograd_and_gemm_with_one_special_value(variant, where):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((16, 8, 4, 4)).astype(np.float32)
    if where == "inf x":
        x[0, 0, 3, 3] = np.inf
    else:
        w[0, 0, 0, 0] = np.nan if where == "nan w" else np.inf
    geometry = dict(stride=2, padding=1, output_padding=0, groups=1, dilation=1)
    y = run_forced(variant, x, w, None, geometry)
    assert y is not None
    assert_pattern(y, conv_transpose_ref(x, w, stride=2, padding=1), variant)


def test_winograd_near_the_float32_limit():
    """|x| = 3e38, |w| <= 1.5e-4: the definition's largest output is ~1e36; Winograd's input transform would
    overflow (3e38 + 3e38), so the call runs an exact gather variant."""
    rng = np.random.default_rng(4)
    x = (rng.choice([-1, 1], (4, 16, 8, 8)) * 3e38).astype(np.float32)
    w = rng.uniform(-1.5e-4, 1.5e-4, (16, 8, 4, 4)).astype(np.float32)
    geometry = dict(stride=2, padding=1, output_padding=0, groups=1, dilation=1)
    y = run_forced("gather-winograd", x, w, None, geometry)
    ref = conv_transpose_ref(x, w, stride=2, padding=1)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_safe_bounds_and_the_exact_plan():
    x = np.ones((4, 16, 8, 8), np.float32)
    w = np.ones((16, 8, 4, 4), np.float32)
    plan = _plan(x, w, None, dict(stride=2, padding=1, output_padding=0, groups=1, dilation=1))
    def safe(variant, x5, w5):
        check = registry.get(variant).check
        return check is None or check(plan, x5, scan.max_abs(w5))

    assert safe("gather-winograd", x, w)
    assert not safe("gather-winograd", x * np.float32(3e38), w)
    assert not safe("gather-winograd", x, w * np.float32(np.inf))
    assert safe("gather-gemm", x * np.float32(np.inf), w)  # im2col zeros meet finite weights only
    assert not safe("gather-gemm", x, w * np.float32(np.nan))
    assert safe("scatter-gemm", x, w * np.float32(np.nan))  # exact: no scan at all
    exact = _api.exact_request(plan)
    assert registry.get(exact.variant).exact and _cost.FORM_OF[exact.variant] == "gather"
    checked = {name for name, v in registry.VARIANTS.items() if v.check is not None and not v.channels_last}
    assert checked == {"gather-winograd", "gather-gemm", "gather-plane"}
    assert all(not v.exact for name, v in registry.VARIANTS.items() if name in checked)
    # channels-last: the routes that run those channels-first variants, Winograd's channels-last twin and the
    # few-channel one (zero weights in its pack where a kernel is not a multiple of the stride)
    checked_last = {name for name, v in registry.VARIANTS.items() if v.check is not None and v.channels_last}
    assert checked_last == {f"transpose-{name}" for name in checked} | {"gather-winograd-nhwc", "gather-plane-nhwc"}
    assert all(not registry.get(name).exact for name in checked_last)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_abs(dtype):
    rng = np.random.default_rng(5)
    for n in (0, 1, 17, scan.PARALLEL_ELEMENTS + 3):
        a = rng.standard_normal(n).astype(dtype)
        assert scan.max_abs(a) == (np.abs(a).max() if n else 0.0)
        if n:
            for special in (np.nan, np.inf, -np.inf):
                b = a.copy()
                b[n // 2] = special
                assert scan.max_abs(b) == np.inf
    assert scan.max_abs(np.array([-0.0, -np.finfo(dtype).max], dtype)) == np.finfo(dtype).max


@pytest.mark.parametrize("variant, channels", [("gather-winograd", (16, 8)), ("gather-gemm", (16, 8)),
                                               ("gather-plane", (4, 2))])
def test_operator_scans_its_weight_once_and_each_input(variant, channels):
    """An operator finds its weight's largest magnitude once per dtype; each call still scans its input."""
    import fastdeconv as fd

    rng = np.random.default_rng(7)
    geometry = dict(stride=2, padding=1, output_padding=0, groups=1, dilation=1)
    x = rng.standard_normal((2, channels[0], 8, 8)).astype(np.float32)
    w = rng.standard_normal(channels + (4, 4)).astype(np.float32)
    plan = _plan(x, w, None, geometry)
    assert variant in _cost.estimate(plan, 1)
    request = geo.make_request(variant)
    for w_special, x_special in ((None, None), (None, np.inf), (np.nan, None)):
        wv = _sprinkle(w, [(37, w_special)]) if w_special is not None else w
        xv = _sprinkle(x, [(101, x_special)]) if x_special is not None else x
        op = fd.ConvTranspose(wv, **geometry)
        for _ in range(2):
            y = np.empty(plan.out_shape, np.float32)
            run_block(op, plan, request, xv, y)
            assert_pattern(y, conv_transpose_ref(xv, wv, stride=2, padding=1), f"{variant} {w_special} {x_special}")
        assert op._store.max_abs == {np.dtype(np.float32): scan.max_abs(wv)}
