"""gather-winograd's transforms: F(M, r) in correlation form by Toom-Cook, in exact fractions (the numba
kernels that apply them: ``_kernels/winograd.py``)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .._caches import memo

# F(M, r) in correlation form, y_i = sum_u d[i + u] g[u]:  y = AT @ ((G @ g) * (BT @ d)), from Toom-Cook on
# the interpolation points below (plus infinity): F(2, 2) has only 0 and +-1, F(2, 3) adds 1/2. (F(4, 2) on
# points 0, +-1, 2 is no faster on the DCGAN and super-resolution layers, whose transforms grow denser, and
# has 10x the rounding error, ~5e-6 relative in float32; so M = 2.)
POINTS = {(1, 1): (), (2, 2): (0, -1), (2, 3): (0, 1, -1)}
TILES = {1: (1,), 2: (2,), 3: (2,)}  # candidate M per sub-kernel length r


@memo(64)
def matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T (alpha, alpha), G (alpha, r), A^T (M, alpha)) of F(M, r), float64 (rows of B^T and G: points).

    Linear convolution by Toom-Cook evaluates at the points (``A``, ``G``: Vandermonde rows, infinity the
    leading coefficient) and interpolates (``C = V^-1``); correlation is its transpose: ``B^T = C^T``,
    ``A^T = A^T`` (Winograd's transposition principle). Computed in exact fractions.
    """
    alpha = m + r - 1
    pts = [Fraction(p) for p in POINTS[m, r]]

    def rows(n):
        return [[p ** i for i in range(n)] for p in pts] + [[Fraction(int(i == n - 1)) for i in range(n)]]

    v, a, g = rows(alpha), rows(m), rows(r)
    # invert the Vandermonde matrix v (Gauss-Jordan in fractions)
    aug = [row + [Fraction(int(i == j)) for j in range(alpha)] for i, row in enumerate(v)]
    for c in range(alpha):
        pivot = next(i for i in range(c, alpha) if aug[i][c] != 0)
        aug[c], aug[pivot] = aug[pivot], aug[c]
        aug[c] = [e / aug[c][c] for e in aug[c]]
        for i in range(alpha):
            if i != c and aug[i][c] != 0:
                aug[i] = [e - aug[i][c] * f for e, f in zip(aug[i], aug[c])]
    inverse = [row[alpha:] for row in aug]
    bt = [[inverse[j][i] for j in range(alpha)] for i in range(alpha)]
    at = [[a[j][i] for j in range(alpha)] for i in range(m)]
    return tuple(np.array([[float(e) for e in row] for row in mat]) for mat in (bt, g, at))


def tile_size(r: int, mcounts: list[int]) -> int:
    """M for an axis: the candidate with the fewest transform points over the phase's tiles (ties: smaller M)."""
    return min(TILES[r], key=lambda m: (sum(-(-c // m) for c in mcounts) * (m + r - 1), m))


@memo(64)
def weight_transform(msize: tuple[int, int, int], r: tuple[int, int, int]) -> np.ndarray:
    """(points, taps) coefficients of the weight transform ``G`` over the three axes of F(M, r) (``Layout.u_coefs``):
    a function of the tile sizes and tap counts alone, so that kept weights are made from their key
    (``WeightSpec``)."""
    mats = [matrices(m, rr) for m, rr in zip(msize, r)]
    grid = [(a, b, c) for a in range(mats[0][0].shape[0]) for b in range(mats[1][0].shape[0])
            for c in range(mats[2][0].shape[0])]
    taps_grid = [(a, b, c) for a in range(r[0]) for b in range(r[1]) for c in range(r[2])]
    coefs = np.array([[mats[0][1][point[0], u[0]] * mats[1][1][point[1], u[1]] * mats[2][1][point[2], u[2]]
                       for u in taps_grid] for point in grid])
    coefs.flags.writeable = False  # (shared by every layout of these sizes)
    return coefs
