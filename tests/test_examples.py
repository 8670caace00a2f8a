"""The examples/ scripts, each run at a tiny size, writing their PNG into tmp_path."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def test_matrix_view(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "matrix_view.png"
    result = load("matrix_view").main(["--out", str(out)])
    assert_png(out)
    assert result["C"].shape == (4, 16) and result["C"].nnz == 36
    np.testing.assert_array_equal(result["conv"], [[122, 148], [126, 134]])
    printed = capsys.readouterr().out
    assert "[9, 9, 9, 9] a row" in printed and "[[122 148]" in printed


def test_fcn_upsample(tmp_path):
    pytest.importorskip("matplotlib")
    module = load("fcn_upsample")
    out = tmp_path / "fcn.png"
    result = module.main(["--small", "--out", str(out)])
    assert_png(out)
    assert result["output"].shape == (60, 40, 3) and result["pooled_shape"] == (1, 64, 30, 20)
    if "max_difference" in result:  # compat.tf_conv2d_transpose with seed 003's dense weight agrees
        assert result["max_difference"] < 1e-5
    # the colour features pass through: away from the border the output is close to the input
    image, _ = module.load_image(60, 40)
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(result["output"][inner] - image[inner]).mean() < 0.1


def test_fcn_synthetic_image_and_odd_sizes():
    module = load("fcn_upsample")
    image = module.synthetic_image(11, 9)
    assert image.shape == (11, 9, 3) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    result = module.run(image)
    assert result["output"].shape == (11, 9, 3) and result["pooled_shape"] == (1, 64, 6, 5)


def test_autoencoder(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    out = tmp_path / "autoencoder.png"
    result = load("autoencoder").main(["--small", "--channels", "2", "--out", str(out)])
    assert_png(out)
    losses = result["losses"]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    assert result["w_conv"].shape == result["w_deconv"].shape == (2, 1, 3, 3)
    assert "epoch   4/4" in capsys.readouterr().out


def test_autoencoder_gradients_match_finite_differences():
    """The example's backward pass (pool/unpool masks + fastdeconv gradients) is the gradient of its loss."""
    module = load("autoencoder")
    rng = np.random.default_rng(14)
    x = rng.random((3, 1, 8, 8))
    net = module.AutoEncoder(channels=2, seed=1)
    net.params = {k: v.astype(np.float64) for k, v in net.params.items()}

    def loss():
        y, _ = net.forward(x)
        return float(np.mean((y - x) ** 2))

    y, cache = net.forward(x)
    grads = net.backward(2 * (y - x) / y.size, cache)
    eps = 1e-6
    for name, value in net.params.items():
        for index in list(np.ndindex(value.shape))[:6]:
            old = value[index]
            value[index] = old + eps
            up = loss()
            value[index] = old - eps
            down = loss()
            value[index] = old
            assert grads[name][index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8), name


def test_deblur_lsqr(tmp_path, capsys):
    """The inverse problem at 64²: lsqr on the matrix-free operator beats the upsampled observation, and the
    solve through conv_matrix reaches the same iterate."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "deblur.png"
    result = load("deblur_lsqr").main(["--size", "64", "--out", str(out)])
    assert_png(out)
    assert result["observed"].shape == (32, 32) and result["restored"].shape == (64, 64)
    assert result["iterations"] == 10 and result["psnr_restored"] > result["psnr_baseline"] + 1.5
    assert result["max_difference"] < 1e-4 and result["nnz"] == (5 + 7 + 28 * 9 + 8 + 6) ** 2  # taps in bounds
    printed = capsys.readouterr().out
    assert "lsqr on fastdeconv.linear_operator" in printed and "sparse / matrix-free time" in printed


def test_deblur_lsqr_synthetic_image():
    module = load("deblur_lsqr")
    image = module.synthetic_image(40)
    assert image.shape == (40, 40) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    result = module.run(image, iterations=6, sparse=False)
    assert result["iterations"] == 6 and "seconds_sparse" not in result
    assert result["psnr_restored"] > result["psnr_baseline"] + 1.0


def test_dcgan_generator(capsys):
    """The DCGAN generator built from ConvTranspose operators (batch norm folded, activations fused) equals torch's
    eval-mode generator, in both layouts."""
    pytest.importorskip("torch")
    module = load("dcgan_generator")
    result = module.main(["--batch", "2", "--repeats", "1"])
    assert result["images"].shape == (2, 3, 64, 64) and result["max_difference"] < 1e-5
    assert np.abs(result["images"]).max() <= 1  # tanh
    assert "max |fastdeconv - torch|" in capsys.readouterr().out
    result = module.run(batch=2, repeats=1, channels_last=True)
    assert result["max_difference"] < 1e-5
