"""A DCGAN generator (Radford et al. 2015) in inference: latent 100 -> 4 transposed-convolution blocks -> 64x64 RGB.

Each block is a ``fastdeconv.ConvTranspose`` whose eval-mode batch norm is folded into its weight and bias
(``fastdeconv.fold_batchnorm``: the scale goes along weight axis 1, a transposed convolution's output channels)
and whose activation runs in the kernels' store (``activation="relu"``; ``"tanh"`` on the RGB layer): one pass
over each layer's output, no NumPy passes after it. The same network is built in PyTorch (ConvTranspose2d ->
BatchNorm2d -> ReLU, eval mode, random running statistics) with the same weights: the script checks that both
give the same images (to 1e-5) and times a batch-64 forward of each at the same thread count.

Run ``python examples/dcgan_generator.py [--batch 64] [--threads 2] [--repeats 10] [--channels-last]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastdeconv as fd

LATENT, FEATURES = 100, 64
# (C_in, C_out, stride, padding) per block: 1x1 -> 4x4 -> 8x8 -> 16x16 -> 32x32 -> 64x64 (4x4 kernels)
BLOCKS = [(LATENT, FEATURES * 8, 1, 0), (FEATURES * 8, FEATURES * 4, 2, 1), (FEATURES * 4, FEATURES * 2, 2, 1),
          (FEATURES * 2, FEATURES, 2, 1), (FEATURES, 3, 2, 1)]


def torch_generator(seed: int = 0):
    """The DCGAN generator in PyTorch, eval mode, with random weights and batch-norm statistics."""
    import torch

    torch.manual_seed(seed)
    layers = []
    for i, (c_in, c_out, stride, padding) in enumerate(BLOCKS):
        last = i == len(BLOCKS) - 1
        layers.append(torch.nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=last))
        if last:
            layers.append(torch.nn.Tanh())
        else:
            bn = torch.nn.BatchNorm2d(c_out)
            with torch.no_grad():  # trained-looking statistics, so that folding them matters
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0, 0.1)
                bn.running_mean.normal_(0, 0.1)
                bn.running_var.uniform_(0.5, 2.0)
            layers += [bn, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval()


def fastdeconv_generator(net, data_format: str = "channels_first") -> list[fd.ConvTranspose]:
    """The same network as ``ConvTranspose`` operators: batch norm folded, the activation fused."""
    import torch

    mods = list(net)
    ops = []
    i = 0
    while i < len(mods):
        conv = mods[i]
        w = conv.weight.detach().numpy()
        b = None if conv.bias is None else conv.bias.detach().numpy()
        if isinstance(mods[i + 1], torch.nn.BatchNorm2d):
            bn = mods[i + 1]
            w, b = fd.fold_batchnorm(w, b, bn.weight.detach().numpy(), bn.bias.detach().numpy(),
                                     bn.running_mean.numpy(), bn.running_var.numpy(), eps=bn.eps)
            activation, i = "relu", i + 3
        else:
            activation, i = "tanh", i + 2
        ops.append(fd.ConvTranspose(w, b, stride=conv.stride[0], padding=conv.padding[0], activation=activation,
                                    data_format=data_format))
    return ops


def generate(ops: list[fd.ConvTranspose], z: np.ndarray) -> np.ndarray:
    y = z
    for op in ops:
        y = op(y)
    return y


def median_time(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(batch: int = 64, threads: int = 2, repeats: int = 10, channels_last: bool = False, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(threads)
    fd.set_num_threads(threads)
    net = torch_generator(seed)
    data_format = "channels_last" if channels_last else "channels_first"
    ops = fastdeconv_generator(net, data_format)
    z = np.random.default_rng(seed).standard_normal((batch, LATENT, 1, 1)).astype(np.float32)
    zf = np.ascontiguousarray(np.moveaxis(z, 1, -1)) if channels_last else z
    with torch.no_grad():
        expected = net(torch.from_numpy(z)).numpy()
    images = generate(ops, zf)
    if channels_last:
        images = np.moveaxis(images, -1, 1)
    difference = float(np.abs(images - expected).max())
    tz = torch.from_numpy(z)
    generate(ops, zf)  # (warm: plans and packed weights are made on the first calls)
    seconds, torch_seconds = [], []
    for _ in range(repeats):  # alternating, so that a drift of the machine's speed hits both
        seconds.append(median_time(lambda: generate(ops, zf), 1))
        with torch.no_grad():
            torch_seconds.append(median_time(lambda: net(tz), 1))
    return {"images": images, "max_difference": difference, "seconds": float(np.median(seconds)),
            "torch_seconds": float(np.median(torch_seconds)), "variants": [op.plan(s).variant for op, s in
                                                                             zip(ops, _shapes(zf, ops))]}


def _shapes(z: np.ndarray, ops: list[fd.ConvTranspose]) -> list[tuple[int, ...]]:
    shapes, y = [], z
    for op in ops:
        shapes.append(y.shape)
        y = op(y)
    return shapes


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--channels-last", action="store_true", help="NHWC data (torch stays NCHW)")
    a = ap.parse_args(argv)
    result = run(a.batch, a.threads, a.repeats, a.channels_last)
    assert result["max_difference"] < 1e-5, f"fastdeconv and torch differ by {result['max_difference']:.3g}"
    print(f"images {result['images'].shape}, max |fastdeconv - torch| = {result['max_difference']:.2e}")
    print(f"variants: {', '.join(result['variants'])}")
    print(f"batch-{a.batch} forward on {a.threads} threads: fastdeconv {result['seconds'] * 1e3:.1f} ms, "
          f"torch {result['torch_seconds'] * 1e3:.1f} ms ({result['torch_seconds'] / result['seconds']:.2f}x)")
    return result


if __name__ == "__main__":
    main()
