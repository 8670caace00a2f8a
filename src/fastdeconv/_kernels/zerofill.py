"""Zero-fill form (the zero-fill-then-correlate convention, the textbook route): dilate the input with zeros,
pad, correlate densely, crop.

``fill_planes`` writes ``x[i]`` to ``z[i * stride + pad_before]`` and zeros elsewhere (``pad_before`` may be
negative, which crops). Transposed convolution is then a dense stride-1 cross-correlation of ``z``
(``pad_before = (kernel - 1) * dilation - start``) with the spatially flipped, channel-swapped kernel
(``conv.correlate_tasks``; their drivers on the worker pool: ``_tasks.fill``, ``_tasks.correlate``). It
multiplies every inserted zero: stride**rank times the work of the other forms.
"""

from .._compiled import njit
from ..config import NJIT_FLAGS


@njit(**NJIT_FLAGS)
def fill_planes(x, z, stride, pad_before, plane_lo, plane_hi):
    """``_tasks.fill`` of the planes ``[plane_lo, plane_hi)`` (flat (sample, channel) index), in the calling thread."""
    chans, size_d, size_h, size_w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    z_d, z_h, z_w = z.shape[2], z.shape[3], z.shape[4]
    s_d, s_h, s_w = stride[0], stride[1], stride[2]
    p_d, p_h, p_w = pad_before[0], pad_before[1], pad_before[2]
    for plane in range(plane_lo, plane_hi):
        n = plane // chans
        c = plane - n * chans
        z[n, c] = 0
        for i_d in range(size_d):
            j_d = i_d * s_d + p_d
            if j_d < 0 or j_d >= z_d:
                continue
            for i_h in range(size_h):
                j_h = i_h * s_h + p_h
                if j_h < 0 or j_h >= z_h:
                    continue
                for i_w in range(size_w):
                    j_w = i_w * s_w + p_w
                    if 0 <= j_w < z_w:
                        z[n, c, j_d, j_h, j_w] = x[n, c, i_d, i_h, i_w]
