"""An inverse problem with a matrix-free operator: deblur and 2x super-resolve a photo with SciPy's ``lsqr``.

The observation is ``b = C @ x + noise``: the (size x size) grey image x blurred by a Gaussian (9x9, sigma 2)
and sampled every second pixel on both axes (stride 2), i.e. one ``fastdeconv.conv``, plus white noise. The
estimate minimises ``|C x - b|^2 + damp^2 |x|^2`` with a few ``scipy.sparse.linalg.lsqr`` iterations (stopping
early regularises too) on ``fastdeconv.linear_operator``, whose products are ``conv`` (C) and
``conv_transpose`` (C.T). The same solve through the explicit sparse matrix of ``fastdeconv.conv_matrix``
gives the same iterates; the script times both (building the matrix included) and prints the factor.

The image is matplotlib's bundled sample photo (nothing is downloaded) resized to size x size, or a synthetic
picture when matplotlib/pillow are missing. It writes a PNG: the image, the observation (upsampled for display)
and the restored image. Run ``python examples/deblur_lsqr.py [--size 1024] [--out deblur_lsqr.png]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse.linalg as spla

import fastdeconv as fd

KERNEL, SIGMA, STRIDE = 9, 2.0, 2


def synthetic_image(size: int) -> np.ndarray:
    """A (size, size) float32 picture in [0, 1] with edges and fine detail: discs, a ramp and stripes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 0.25 + 0.5 * xx
    for cy, cx, rad, value in ((0.3, 0.3, 0.18, 0.95), (0.65, 0.6, 0.22, 0.1), (0.75, 0.2, 0.1, 0.7)):
        image = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < rad ** 2, value, image)
    stripes = (yy > 0.85) & (np.floor(xx * 40) % 2 == 0)
    return np.where(stripes, 1.0, image).astype(np.float32)


def load_image(size: int) -> tuple[np.ndarray, str]:
    """matplotlib's sample photo as a (size, size) grey float32 image in [0, 1], else a synthetic one."""
    try:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            im = Image.open(f).convert("L").resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.float32) / 255.0, "matplotlib sample photo"
    except (ImportError, OSError, ValueError):
        return synthetic_image(size), "synthetic image"


def gaussian_kernel(size: int = KERNEL, sigma: float = SIGMA) -> np.ndarray:
    """The blur as a conv weight: (C_out, C_in, kH, kW) = (1, 1, size, size), summing to 1."""
    t = np.arange(size) - size // 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    return (np.outer(g, g) / g.sum() ** 2).astype(np.float32)[None, None]


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    return float(10 * np.log10(1.0 / np.mean((estimate.astype(np.float64) - truth) ** 2)))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def run(image: np.ndarray, iterations: int = 10, damp: float = 0.05, noise: float = 0.01, seed: int = 0,
        sparse: bool = True) -> dict:
    """Blur, subsample and add noise to ``image``, then recover it with lsqr, matrix-free and (``sparse``)
    through conv_matrix; returns the arrays, PSNRs and times."""
    size = image.shape[0]
    weight = gaussian_kernel()
    geometry = {"stride": STRIDE, "padding": KERNEL // 2}
    op = fd.linear_operator(weight, image.shape, **geometry)
    rng = np.random.default_rng(seed)
    observed = op @ image.ravel() + noise * rng.standard_normal(op.shape[0], dtype=np.float32)
    op.rmatvec(observed)  # with the matvec above, the first products load the compiled kernels (and may
    # calibrate): one-time costs of a process, not of a solve

    solve = {"damp": damp, "iter_lim": iterations, "atol": 0.0, "btol": 0.0}
    (x, _, itn, *_), seconds = timed(spla.lsqr, op, observed, **solve)
    restored = np.clip(x.reshape(image.shape), 0, 1)
    low = observed.reshape(op.output_shape[1:])
    baseline = fd.upsample_bilinear(low[None], STRIDE)[0]  # what the observation looks like just upsampled
    result = {"image": image, "observed": low, "baseline": baseline, "restored": restored, "iterations": itn,
              "psnr_baseline": psnr(np.clip(baseline, 0, 1), image), "psnr_restored": psnr(restored, image),
              "seconds_matrix_free": seconds}
    if sparse:
        matrix, build = timed(fd.conv_matrix, weight, image.shape, **geometry)
        (x_sparse, *_), seconds_sparse = timed(spla.lsqr, matrix, observed, **solve)
        result.update(nnz=matrix.nnz, seconds_build=build, seconds_sparse=seconds_sparse,
                      max_difference=float(np.abs(x_sparse - x).max()))
    result["size"] = size
    return result


def plot(result: dict, out: str, source: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(result["image"], f"{source}, {result['size']}²"),
              (np.repeat(np.repeat(result["observed"], STRIDE, 0), STRIDE, 1),
               f"observed: blurred, subsampled {STRIDE}x, noisy ({result['psnr_baseline']:.1f} dB upsampled)"),
              (result["restored"], f"lsqr, {result['iterations']} iterations ({result['psnr_restored']:.1f} dB)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), layout="constrained")
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle("C = fastdeconv.linear_operator (Gaussian blur + stride 2): lsqr on C and C.T, no matrix")
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the (square) image to recover")
    parser.add_argument("--iterations", type=int, default=10, help="lsqr iterations")
    parser.add_argument("--damp", type=float, default=0.05, help="lsqr's Tikhonov damping")
    parser.add_argument("--noise", type=float, default=0.01, help="standard deviation of the added noise")
    parser.add_argument("--no-sparse", action="store_true", help="skip the solve through conv_matrix")
    parser.add_argument("--out", default="deblur_lsqr.png", help="PNG to write")
    args = parser.parse_args(argv)
    if args.size < KERNEL:
        parser.error(f"--size must be at least {KERNEL}")
    image, source = load_image(args.size)
    result = run(image, args.iterations, args.damp, args.noise, sparse=not args.no_sparse)
    print(f"{source}, {args.size}x{args.size}: observed {result['observed'].shape[0]}x{result['observed'].shape[1]}"
          f" after a {KERNEL}x{KERNEL} Gaussian blur (sigma {SIGMA}), stride {STRIDE}, noise {args.noise}")
    print(f"PSNR: bilinear upsampling of the observation {result['psnr_baseline']:.2f} dB, "
          f"lsqr ({result['iterations']} iterations, damp {args.damp}) {result['psnr_restored']:.2f} dB")
    free = result["seconds_matrix_free"]
    print(f"lsqr on fastdeconv.linear_operator: {free:.3f} s")
    if "seconds_sparse" in result:
        build, sparse = result["seconds_build"], result["seconds_sparse"]
        print(f"lsqr on fastdeconv.conv_matrix:     {sparse:.3f} s + {build:.3f} s to build it ({result['nnz']:,} "
              f"stored entries); same iterates to {result['max_difference']:.1e}")
        print(f"sparse / matrix-free time: {sparse / free:.1f}x per solve, {(sparse + build) / free:.1f}x with the "
              f"build")
    plot(result, args.out, source)
    print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()
