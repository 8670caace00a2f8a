"""Seed 002's autoencoder, Conv -> MaxPool -> MaxUnpool -> ConvTranspose, trained with fastdeconv and NumPy.

The network of seed 002 (there on MNIST with PyTorch) on scikit-learn's bundled 8x8 digits (offline):

    8x8 --conv 3x3--> 6x6 --max-pool 2x2--> 3x3 --max-unpool--> 6x6 --conv_transpose 3x3--> 8x8

Forward passes use ``fastdeconv.conv`` and ``fastdeconv.conv_transpose``; the gradients come from
``fastdeconv.conv_transpose_backward`` (for the convolution too: a convolution's weight gradient is the
transposed convolution's weight gradient with input and output swapped, its adjoint) and plain NumPy SGD with
momentum updates the weights. It prints the falling loss and writes a PNG of originals vs reconstructions and
of the learned conv and conv_transpose weights -- seed 002's point: they are learned separately, not
transposes of each other.

Run ``python examples/autoencoder.py [--out autoencoder.png] [--epochs 30] [--channels 1] [--small]``.
Needs scikit-learn and matplotlib (``pip install fastdeconv[examples]``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastdeconv as fd


def load_digits(limit: int | None = None) -> np.ndarray:
    """scikit-learn's 1797 8x8 digits (shipped with it, nothing is downloaded), as (N, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    images = sk_load_digits().images.astype(np.float32) / 16.0
    return images[:limit, None]


def pool_2x2(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max-pool with stride 2 (even sizes): the maxima and the one-hot mask of where they were."""
    n, ch, h, w = c.shape
    windows = c.reshape(n, ch, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, ch, h // 2, w // 2, 4)
    arg = windows.argmax(axis=-1)
    mask = np.zeros_like(windows)
    np.put_along_axis(mask, arg[..., None], 1.0, axis=-1)
    return windows.max(axis=-1), _unwindow(mask)


def unpool_2x2(p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """MaxUnpool: every maximum goes back where the mask says, zeros elsewhere."""
    return np.repeat(np.repeat(p, 2, axis=2), 2, axis=3) * mask


def _unwindow(windows: np.ndarray) -> np.ndarray:
    n, ch, hh, ww, _ = windows.shape
    return windows.reshape(n, ch, hh, ww, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, ch, 2 * hh, 2 * ww)


class AutoEncoder:
    """Seed 002's CNNMNIST: conv (1 -> C, 3x3), max-pool, max-unpool, conv_transpose (C -> 1, 3x3)."""

    def __init__(self, channels: int = 1, seed: int = 0):
        rng = np.random.default_rng(seed)
        bound = 1 / 3.0  # PyTorch's default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a 3x3 kernel
        self.params = {
            "w_conv": rng.uniform(-bound, bound, (channels, 1, 3, 3)).astype(np.float32),  # (C_out, C_in, 3, 3)
            "b_conv": rng.uniform(-bound, bound, channels).astype(np.float32),
            "w_deconv": rng.uniform(-bound, bound, (channels, 1, 3, 3)).astype(np.float32),  # (C_in, C_out, 3, 3)
            "b_deconv": rng.uniform(-bound, bound, 1).astype(np.float32),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        p = self.params
        c = fd.conv(x, p["w_conv"], p["b_conv"])               # 8x8 -> 6x6
        pooled, mask = pool_2x2(c)                            # 6x6 -> 3x3
        u = unpool_2x2(pooled, mask)                          # 3x3 -> 6x6
        y = fd.conv_transpose(u, p["w_deconv"], p["b_deconv"])  # 6x6 -> 8x8
        return y, {"x": x, "mask": mask, "u": u}

    def backward(self, grad_y: np.ndarray, cache: dict) -> dict:
        p = self.params
        grad_u, grad_w_deconv, grad_b_deconv = fd.conv_transpose_backward(grad_y, cache["u"], p["w_deconv"])
        grad_c = grad_u * cache["mask"]  # unpool(pool(c)) keeps c where the mask is 1
        # conv's weight gradient = conv_transpose's weight gradient with input and output swapped (adjoints)
        grad_w_conv = fd.conv_transpose_backward(cache["x"], grad_c, p["w_conv"])[1]
        grad_b_conv = grad_c.sum(axis=(0, 2, 3))
        return {"w_conv": grad_w_conv, "b_conv": grad_b_conv, "w_deconv": grad_w_deconv,
                "b_deconv": grad_b_deconv}


def train(images: np.ndarray, channels: int = 1, epochs: int = 30, batch_size: int = 32, lr: float = 0.1,
          momentum: float = 0.9, seed: int = 0, verbose: bool = True) -> tuple[AutoEncoder, list[float]]:
    """Minibatch SGD with momentum on the mean squared reconstruction error; returns the net and epoch losses."""
    rng = np.random.default_rng(seed)
    net = AutoEncoder(channels, seed)
    velocity = {k: np.zeros_like(v) for k, v in net.params.items()}
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        total = 0.0
        for start in range(0, len(images), batch_size):
            x = images[order[start:start + batch_size]]
            y, cache = net.forward(x)
            diff = y - x
            total += float(np.sum(diff.astype(np.float64) ** 2))
            grads = net.backward(2 * diff / diff.size, cache)
            for k, g in grads.items():
                velocity[k] = momentum * velocity[k] - lr * g
                net.params[k] += velocity[k]
        losses.append(total / images.size)
        if verbose:
            print(f"epoch {epoch + 1:3d}/{epochs}  mse {losses[-1]:.5f}")
    return net, losses


def plot(net: AutoEncoder, images: np.ndarray, out: str, losses: list[float]) -> None:
    """Originals vs reconstructions, the loss curve, and the learned conv vs conv_transpose weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = images[:10]
    recon, _ = net.forward(shown)
    channels = net.params["w_conv"].shape[0]
    fig = plt.figure(figsize=(10, 2.8 + 1.4 * max(channels, 2)), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4, 1.4 * max(channels, 2)])
    axes = top.subplots(2, len(shown))
    for i in range(len(shown)):
        for row, data, label in ((0, shown, "original"), (1, recon, "reconstruction")):
            ax = axes[row, i]
            ax.imshow(data[i, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    grid = bottom.add_gridspec(channels, 5)
    ax = bottom.add_subplot(grid[:, 3:])
    ax.plot(np.arange(1, len(losses) + 1), losses, marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.set_yscale("log")
    for c in range(channels):
        panels = ((net.params["w_conv"][c, 0], f"conv w[{c}]"),
                  (net.params["w_deconv"][c, 0], f"conv_transpose w[{c}]"),
                  (net.params["w_conv"][c, 0, ::-1, ::-1], f"conv w[{c}] flipped"))
        for j, (kernel, title) in enumerate(panels):
            ax = bottom.add_subplot(grid[c, j])
            ax.imshow(kernel, cmap="coolwarm", vmin=-np.abs(kernel).max(), vmax=np.abs(kernel).max())
            for (r, q), v in np.ndenumerate(kernel):
                ax.text(q, r, f"{v:.2f}", ha="center", va="center", fontsize=6)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("seed 002's autoencoder on sklearn digits: conv -> maxpool -> maxunpool -> conv_transpose",
                 fontsize=10)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the epoch losses and the learned weights."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="autoencoder.png", help="PNG to write")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--channels", type=int, default=1, help="feature maps (seed 002: 1)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--small", action="store_true", help="200 digits, 4 epochs (a quick check)")
    args = parser.parse_args(argv)
    images = load_digits(200 if args.small else None)
    epochs = min(args.epochs, 4) if args.small else args.epochs
    t0 = time.perf_counter()
    net, losses = train(images, channels=args.channels, epochs=epochs, lr=args.lr)
    print(f"trained on {len(images)} digits in {time.perf_counter() - t0:.1f} s")
    w_conv, w_deconv = net.params["w_conv"][:, 0], net.params["w_deconv"][:, 0]
    print("learned conv weight:\n", np.round(w_conv, 3))
    print("learned conv_transpose weight:\n", np.round(w_deconv, 3))
    print("max |conv_transpose w - flipped conv w| =", float(np.abs(w_deconv - w_conv[:, ::-1, ::-1]).max()),
          "(learned separately, not transposes of each other)")
    plot(net, images, args.out, losses)
    print("wrote", args.out)
    return {"losses": losses, "w_conv": net.params["w_conv"], "w_deconv": net.params["w_deconv"]}


if __name__ == "__main__":
    main()
