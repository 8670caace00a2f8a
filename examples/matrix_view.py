"""Seed 002's matrix view: a convolution is a sparse matrix C, the transposed convolution multiplies by C.T.

A 4x4 input and a 3x3 kernel give a 2x2 output; flattened, that is ``y = C @ x`` with a 4x16 matrix C whose
rows hold the kernel rows with gaps (9 entries a row: many-to-one). The transposed convolution of a 2x2
input is ``C.T @ y``: each of its 4 numbers reaches 9 of the 16 outputs (one-to-many). ``conv_matrix`` builds C
(scipy.sparse CSR) and ``conv_transpose`` with the same weight array computes exactly ``C.T @ y``.

Run ``python examples/matrix_view.py [--out matrix_view.png]``; the picture needs matplotlib.
"""

from __future__ import annotations

import argparse

import numpy as np

import fastdeconv as fd

# the numbers of seed 002's figures (from "Up-sampling with Transposed Convolution")
INPUT = np.array([[4, 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]], dtype=np.float64)
KERNEL = np.array([[1, 4, 1], [1, 4, 3], [3, 3, 1]], dtype=np.float64)
SMALL = np.array([[2, 1], [4, 4]], dtype=np.float64)


def compute() -> dict:
    """C, the convolution both ways, and the transposed convolution both ways."""
    weight = KERNEL[None, None]  # (C_out, C_in, 3, 3) for conv; the same array is conv_transpose's (C_in, C_out, ..)
    c = fd.conv_matrix(weight, INPUT.shape)
    conv = fd.conv(INPUT[None, None], weight)[0, 0]
    conv_by_matrix = (c @ INPUT.ravel()).reshape(conv.shape)
    deconv = fd.conv_transpose(SMALL[None, None], weight)[0, 0]
    deconv_by_matrix = (c.T @ SMALL.ravel()).reshape(deconv.shape)
    if not (np.array_equal(conv, conv_by_matrix) and np.array_equal(deconv, deconv_by_matrix)):
        raise AssertionError("conv_matrix disagrees with conv / conv_transpose")
    return {"C": c, "conv": conv, "deconv": deconv}


def plot(result: dict, out: str) -> None:
    """C and C.T as annotated grids, and the two products with their inputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = result["C"].toarray()
    fig = plt.figure(figsize=(10, 6.2), layout="constrained")
    grid = fig.add_gridspec(3, 5, height_ratios=[1.1, 1, 1], width_ratios=[1, 1, 1, 0.9, 1.1])

    def grid_plot(ax, values, title, cmap="Blues", fmt="{:.0f}"):
        top = max(values.max(), 1)
        ax.imshow(values, cmap=cmap, vmin=0, vmax=1.6 * top)  # light colours: the numbers stay readable
        for (r, q), v in np.ndenumerate(values):
            if v:
                ax.text(q, r, fmt.format(v), ha="center", va="center", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])

    grid_plot(fig.add_subplot(grid[0, :4]), dense, "C (4 x 16): conv(x) = C @ x.ravel(), 9 entries a row")
    grid_plot(fig.add_subplot(grid[:, 4]), dense.T, "C.T (16 x 4)")
    grid_plot(fig.add_subplot(grid[1, 0]), INPUT, "x (4x4)", "Greens")
    grid_plot(fig.add_subplot(grid[1, 1]), KERNEL, "kernel (3x3)", "Oranges")
    grid_plot(fig.add_subplot(grid[1, 2]), result["conv"], "conv(x) = C @ x", "Purples")
    grid_plot(fig.add_subplot(grid[2, 0]), SMALL, "y (2x2)", "Greens")
    grid_plot(fig.add_subplot(grid[2, 1]), KERNEL, "same kernel", "Oranges")
    grid_plot(fig.add_subplot(grid[2, 2]), result["deconv"], "conv_transpose(y) = C.T @ y", "Purples")
    fig.suptitle("seed 002: convolution as a sparse matrix C, transposed convolution as C.T", fontsize=11)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Print C, C.T and both products; write the picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="matrix_view.png", help="PNG to write")
    args = parser.parse_args(argv)
    result = compute()
    c = result["C"]
    np.set_printoptions(linewidth=120)
    print(f"C: {c.shape[0]}x{c.shape[1]} scipy.sparse CSR, {c.nnz} stored entries "
          f"({np.diff(c.indptr).tolist()} a row)")
    print(c.toarray().astype(int))
    print("C.T:")
    print(c.T.toarray().astype(int))
    print("conv(x) = C @ x.ravel() ->\n", result["conv"].astype(int))
    print("conv_transpose(y) = C.T @ y.ravel() ->\n", result["deconv"].astype(int))
    plot(result, args.out)
    print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()
