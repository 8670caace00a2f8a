"""Seed 003's FCN pipeline: conv 3 -> 64, 2x2 max-pool, bilinear transposed convolution back to 750x500x3.

Seed 003 convolves a 750x500 RGB photo to 64 feature maps (``tf.nn.conv2d``, SAME), max-pools them to
375x250x64 and upsamples with ``tf.nn.conv2d_transpose`` (stride 2, SAME) whose [K, K, 3, 64] weight holds the
bilinear filter on the diagonal (feature i -> colour i for i < 3, every other entry zero). Here:

- the image is matplotlib's bundled sample photo (nothing is downloaded), resized to 750x500, or a synthetic
  picture when matplotlib/pillow are missing;
- the 3 -> 64 convolution is ``fastdeconv.conv``; its first three filters pass the colours through (the
  centre tap is 1) and the other 61 are random (Xavier), so the upsampled colours show the pipeline's
  effect (seed 003 uses 64 random filters, which gives a picture of noise);
- the upsampling is ``fastdeconv.upsample_bilinear`` on the three colour features (depthwise,
  ``bilinear_kernel(2)``), and, as in the seed, ``fastdeconv.compat.tf_conv2d_transpose`` with the dense
  diagonal weight on all 64 features; both give the same image, the depthwise one with 64x less work.

It writes a PNG with input and output side by side. Run
``python examples/fcn_upsample.py [--out fcn_upsample.png] [--height 750 --width 500] [--small]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastdeconv as fd

FEATURES = 64


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A colourful (height, width, 3) float32 picture in [0, 1]: gradients, discs and stripes."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    r = 0.5 + 0.5 * np.sin(6 * xx + 2 * yy)
    g = yy.copy()
    b = 1 - xx
    for cy, cx, rad, col in ((0.3, 0.3, 0.18, (1, 0.9, 0.1)), (0.65, 0.6, 0.22, (0.1, 0.3, 0.9)),
                             (0.8, 0.25, 0.12, (0.9, 0.1, 0.4))):
        inside = (yy - cy) ** 2 + ((xx - cx) * width / height) ** 2 < rad ** 2
        r, g, b = (np.where(inside, c, ch) for c, ch in zip(col, (r, g, b)))
    stripes = (np.floor(xx * 24) % 2 == 0) & (yy > 0.88)
    r, g, b = (np.where(stripes, 1.0, ch) for ch in (r, g, b))
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def load_image(height: int, width: int) -> tuple[np.ndarray, str]:
    """matplotlib's sample photo (shipped inside the package) resized to (height, width, 3), else synthetic."""
    try:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            im = Image.open(f).convert("RGB").resize((width, height), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32) / 255.0, "matplotlib sample photo"
    except (ImportError, OSError, ValueError):
        return synthetic_image(height, width), "synthetic image"


def conv_weights(seed: int = 0) -> np.ndarray:
    """(64, 3, 3, 3) conv weight: filters 0-2 copy their colour, filters 3-63 are Xavier-uniform random."""
    rng = np.random.default_rng(seed)
    bound = np.sqrt(6.0 / (3 * 9 + FEATURES * 9))
    w = rng.uniform(-bound, bound, (FEATURES, 3, 3, 3)).astype(np.float32)
    w[:3] = 0
    w[np.arange(3), np.arange(3), 1, 1] = 1
    return w


def max_pool_same(x: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2, TensorFlow SAME (an odd edge is padded with -inf): (N, C, H, W) -> ceil halves."""
    n, c, h, w = x.shape
    padded = np.full((n, c, h + h % 2, w + w % 2), -np.inf, x.dtype)
    padded[:, :, :h, :w] = x
    return padded.reshape(n, c, padded.shape[2] // 2, 2, padded.shape[3] // 2, 2).max(axis=(3, 5))


def seed_dense_filter(factor: int = 2) -> np.ndarray:
    """Seed 003's [K, K, 3, 64] transposed-convolution weight: the bilinear filter on the diagonal."""
    k = fd.bilinear_kernel(factor)[0, 0]
    weights = np.zeros(k.shape + (3, FEATURES), np.float32)
    for i in range(3):
        weights[:, :, i, i] = k
    return weights


def run(image: np.ndarray, factor: int = 2) -> dict:
    """The pipeline on one (H, W, 3) image; returns the output (H, W, 3), the stages' times and shapes."""
    height, width, _ = image.shape
    x = np.ascontiguousarray(image.transpose(2, 0, 1)[None])  # NCHW
    times = {}
    t = time.perf_counter()
    features = fd.conv(x, conv_weights(), padding="same")
    times["conv 3->64"] = time.perf_counter() - t
    pooled = max_pool_same(features)
    t = time.perf_counter()
    up = fd.upsample_bilinear(pooled[:, :3], factor)  # depthwise bilinear transposed convolution
    times["upsample_bilinear (depthwise)"] = time.perf_counter() - t
    out = up[0, :, :height, :width].transpose(1, 2, 0)
    result = {"output": out, "pooled_shape": pooled.shape, "times": times}
    try:
        from fastdeconv.compat import tf_conv2d_transpose
    except ImportError:
        return result
    t = time.perf_counter()
    seed_out = tf_conv2d_transpose(pooled.transpose(0, 2, 3, 1), seed_dense_filter(factor),
                                   [1, pooled.shape[2] * factor, pooled.shape[3] * factor, 3],
                                   strides=[1, factor, factor, 1], padding="SAME")
    times["seed's dense 64->3 weight (compat.tf_conv2d_transpose)"] = time.perf_counter() - t
    result["max_difference"] = float(np.abs(seed_out[0, :height, :width] - out).max())
    return result


def plot(image: np.ndarray, result: dict, out: str, source: str) -> None:
    """Input and output side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w, _ = image.shape
    _, c, ph, pw = result["pooled_shape"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 6.6), layout="constrained")
    axes[0].imshow(image)
    axes[0].set_title(f"input {h}x{w}x3 ({source})", fontsize=9)
    axes[1].imshow(np.clip(result["output"], 0, 1))
    axes[1].set_title(f"conv 3->{c}, max-pool -> {ph}x{pw}x{c},\nbilinear conv_transpose x2 -> {h}x{w}x3",
                      fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the pipeline's result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="fcn_upsample.png", help="PNG to write")
    parser.add_argument("--height", type=int, default=750)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic picture, not the photo")
    parser.add_argument("--small", action="store_true", help="a 60x40 image (a quick check)")
    args = parser.parse_args(argv)
    height, width = (60, 40) if args.small else (args.height, args.width)
    if args.synthetic:
        image, source = synthetic_image(height, width), "synthetic image"
    else:
        image, source = load_image(height, width)
    run(image[:4, :4])  # compile (or load from the cache) before timing
    result = run(image)
    print(f"{source}: {height}x{width}x3 -> features {result['pooled_shape'][1:]} (NCHW) -> "
          f"{result['output'].shape}")
    for name, seconds in result["times"].items():
        print(f"  {name:56s} {seconds * 1e3:8.1f} ms")
    if "max_difference" in result:
        print(f"  depthwise vs the seed's dense weight: max |difference| = {result['max_difference']:.2e}")
    plot(image, result, args.out, source)
    print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()
