"""The slow, obviously correct definition of transposed convolution, in float64 NumPy.

Independent of fastdeconv's code (it imports none of it): its own argument handling, the scatter definition
taken literally, one tap at a time (``full[k * dilation + stride * i] += x[i] * w[k]``), read through the crop /
zero extension (only the output window is built, and no product outside the definition's terms is formed, so
the finite/Inf/NaN pattern is the definition's). Every kernel and adapter is tested against it
(``tests/reference.py`` re-exports it) and ``compare`` checks every engine with it.
"""

import itertools

import numpy as np


def _tuple(v, rank):
    return tuple(int(a) for a in v) if np.ndim(v) else (int(v),) * rank


def _pairs(padding, rank):
    if np.ndim(padding) == 0:
        return ((int(padding), int(padding)),) * rank
    return tuple((int(p), int(p)) if np.ndim(p) == 0 else (int(p[0]), int(p[1])) for p in padding)


def cropped_output(x, w, stride, groups, dilation, starts, sizes):
    """The output window ``full[..., start:start + size]`` (zeros outside ``full``) of the uncropped scatter output
    of batched float64 x (N, C_in, *in), built tap by tap: tap ``t`` adds ``x[i] * w[t]`` (summed over input
    channels) at ``i * stride + t * dilation - start`` for the inputs ``i`` that land inside the window. Only the
    definition's terms are ever multiplied, and nothing of the size of the uncropped output is allocated (so
    huge strides and dilations with a small window stay cheap)."""
    rank = w.ndim - 2
    n, c_in = x.shape[:2]
    c_out_g = w.shape[1]
    c_in_g = c_in // groups
    kernel = w.shape[2:]
    y = np.zeros((n, c_out_g * groups) + tuple(sizes))
    for g in range(groups):
        xg = x[:, g * c_in_g:(g + 1) * c_in_g]
        wg = w[g * c_in_g:(g + 1) * c_in_g]
        for tap in itertools.product(*(range(k) for k in kernel)):
            src, dst = [slice(None)] * 2, [slice(None), slice(g * c_out_g, (g + 1) * c_out_g)]
            for t, d, s, i, st, sz in zip(tap, dilation, stride, x.shape[2:], starts, sizes):
                offset = t * d - st  # input i lands on output i * s + offset
                lo = max(0, -(offset // s))  # first i with i * s + offset >= 0
                hi = min(i, (sz - 1 - offset) // s + 1) if sz - 1 - offset >= 0 else 0  # last one < size, plus 1
                if hi <= lo:
                    break
                src.append(slice(lo, hi))
                dst.append(slice(lo * s + offset, (hi - 1) * s + offset + 1, s))
            else:
                # sum over the group's input channels of x[:, i] * w[i, :, tap]: one tensordot (BLAS) per tap
                with np.errstate(invalid="ignore", over="ignore"):  # Inf * 0 is NaN by the definition too
                    contrib = np.tensordot(xg[tuple(src)], wg[(slice(None), slice(None)) + tap], axes=([1], [0]))
                y[tuple(dst)] += np.moveaxis(contrib, -1, 1)
    assert y.ndim == rank + 2
    return y


def full_output(x, w, stride, groups, dilation):
    """The uncropped scatter output (N, C_out, *full) of batched float64 x (N, C_in, *in)."""
    fulls = tuple((i - 1) * s + (k - 1) * d + 1 for i, k, s, d in zip(x.shape[2:], w.shape[2:], stride, dilation))
    return cropped_output(x, w, stride, groups, dilation, (0,) * len(fulls), fulls)


def crop(full, starts, sizes):
    """``full[..., start:start + size]`` per spatial axis, reading zeros outside ``full``."""
    rank = len(starts)
    y = np.zeros(full.shape[:2] + tuple(sizes))
    src, dst = [slice(None)] * 2, [slice(None)] * 2
    for f, st, sz in zip(full.shape[2:], starts, sizes):
        lo, hi = max(st, 0), min(st + sz, f)
        if hi <= lo:
            return y
        src.append(slice(lo, hi))
        dst.append(slice(lo - st, hi - st))
    assert len(src) == rank + 2
    y[tuple(dst)] = full[tuple(src)]
    return y


def conv_transpose_ref(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                       output_size=None):
    """Reference transposed convolution with fastdeconv's (PyTorch's + 'same'/pairs) arguments."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    rank = w.ndim - 2
    unbatched = x.ndim == rank + 1
    if unbatched:
        x = x[None]
    stride, dilation = _tuple(stride, rank), _tuple(dilation, rank)
    op = _tuple(output_padding, rank)
    fulls = tuple((i - 1) * s + (k - 1) * d + 1 for i, k, s, d in zip(x.shape[2:], w.shape[2:], stride, dilation))
    if isinstance(padding, str) and padding.lower() == "same":
        sizes = [i * s for i, s in zip(x.shape[2:], stride)]
        starts = [max(0, f - o) // 2 for f, o in zip(fulls, sizes)]
    else:
        pairs = ((0, 0),) * rank if isinstance(padding, str) else _pairs(padding, rank)
        starts = [b for b, _ in pairs]
        if output_size is not None:
            sizes = list(output_size)[-rank:]
        else:
            sizes = [f - b - a + o for f, (b, a), o in zip(fulls, pairs, op)]
    y = cropped_output(x, w, stride, groups, dilation, starts, sizes)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape((1, -1) + (1,) * rank)
    return y[0] if unbatched else y
