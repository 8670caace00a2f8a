"""bilinear_kernel and upsample_bilinear against seed 003's formulas, torch's interpolation and dense weights."""

import numpy as np
import pytest

import fastdeconv as fd


# seed 003, verbatim (get_kernel_size, upsample_filt)
def get_kernel_size(factor):
    return 2 * factor - factor % 2


def upsample_filt(size):
    factor = (size + 1) // 2
    if size % 2 == 1:
        center = factor - 1
    else:
        center = factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


@pytest.mark.parametrize("factor", range(1, 9))
def test_kernel_values_match_seed003(factor):
    size = get_kernel_size(factor)
    w = fd.bilinear_kernel(factor, channels=3)
    assert w.shape == (3, 1, size, size) and w.dtype == np.float32 and w.flags.c_contiguous
    for c in range(3):
        np.testing.assert_allclose(w[c, 0], upsample_filt(size), rtol=1e-7)
    w64 = fd.bilinear_kernel(factor, dtype=np.float64)
    np.testing.assert_array_equal(w64[0, 0], upsample_filt(size))


def test_kernel_is_writeable_per_channel():
    w = fd.bilinear_kernel(2, channels=2)
    w[0, 0, 0, 0] = 5
    assert w[1, 0, 0, 0] == 0.0625


@pytest.mark.parametrize("factor", range(1, 7))
def test_upsample_shape_and_constant_interior(factor):
    x = np.full((2, 3, 5, 4), 2.5, np.float32)
    y = fd.upsample_bilinear(x, factor)
    assert y.shape == (2, 3, 5 * factor, 4 * factor) and y.dtype == np.float32
    border = factor // 2
    inner = y[..., border:y.shape[-2] - border, border:y.shape[-1] - border]
    np.testing.assert_allclose(inner, 2.5, rtol=1e-6)
    if border:
        assert y[0, 0, 0, 0] < 2.5  # the zeros outside the image pull the edge down


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5])
def test_interior_equals_torch_bilinear_interpolation(factor):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(factor)
    x = rng.standard_normal((2, 3, 6, 7))
    y = fd.upsample_bilinear(x, factor)
    t = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=factor, mode="bilinear",
                                        align_corners=False).numpy()
    edge = factor  # torch clamps at the border, the transposed convolution sees zeros
    np.testing.assert_allclose(y[..., edge:-edge or None, edge:-edge or None],
                               t[..., edge:-edge or None, edge:-edge or None], rtol=1e-10, atol=1e-10)


def test_depthwise_equals_seed003_dense_diagonal_weight():
    """Seed 003's (K, K, C, C) weight with the filter on the channel diagonal gives the same result."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 4, 5, 6))
    factor, size = 2, get_kernel_size(2)
    dense = np.zeros((4, 4, size, size))
    for c in range(4):
        dense[c, c] = upsample_filt(size)
    expected = fd.conv_transpose(x, dense, stride=factor, padding=(size - factor) // 2)
    np.testing.assert_allclose(fd.upsample_bilinear(x, factor), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        fd.conv_transpose(x, fd.bilinear_kernel(factor, 4, np.float64), stride=factor, padding=1, groups=4),
        expected, rtol=1e-12, atol=1e-12)


def test_per_axis_factor_unbatched_and_dtypes():
    x = np.arange(12.0).reshape(1, 3, 4)
    y = fd.upsample_bilinear(x, (1, 3))
    assert y.shape == (1, 3, 12) and y.dtype == np.float64
    np.testing.assert_allclose(y[0, :, 1::3], x[0])  # odd factor: the centre tap lands on the sample
    assert fd.upsample_bilinear(x.astype(np.int32), 2).dtype == np.float64
    np.testing.assert_array_equal(fd.upsample_bilinear(np.array([[[0.0, 4.0]]]), (1, 2)), [[[0, 1, 3, 3]]])
    assert fd.upsample_bilinear(np.zeros((2, 0, 3, 3)), 2).shape == (2, 0, 6, 6)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fd.bilinear_kernel(0), ValueError, "factor must be >= 1"),
    (lambda: fd.bilinear_kernel(2.0), TypeError, "factor must be an int"),
    (lambda: fd.bilinear_kernel(2, channels=0), ValueError, "channels must be >= 1"),
    (lambda: fd.bilinear_kernel(2, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (lambda: fd.bilinear_kernel(2, dtype="nonsense"), TypeError, "dtype must be float32 or float64"),
    (lambda: fd.bilinear_kernel(2, channels=2**40), ValueError, "the bilinear kernel .* would need"),
    (lambda: fd.upsample_bilinear(np.ones((4, 4)), 2), ValueError, "x must be images"),
    (lambda: fd.upsample_bilinear(np.ones((1, 4, 4)), (2, 2, 2)), ValueError, "factor must be an int or a sequence"),
    (lambda: fd.upsample_bilinear(np.ones((1, 4, 4)), -1), ValueError, "factor must be >= 1"),
    (lambda: fd.upsample_bilinear(np.ones((1, 4, 4), np.complex64), 2), TypeError, "x must be real"),
    (lambda: fd.upsample_bilinear(np.ones((1, 4, 4)), 10**7), ValueError, "the output .* would need"),
    (lambda: fd.upsample_bilinear(np.ones((1, 1, 1)), (10**6, 10**6)), ValueError, "would need"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
