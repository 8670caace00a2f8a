"""asv benchmarks of the adjoint side on the project's workloads (``fastdeconv/workloads.json``), float32.

Each workload is a transposed convolution x -> y (``bench_conv_transpose``); here, with the same weight array
and geometry:

- ``TimeConv.time_conv``: its adjoint ``fastdeconv.conv(y, weight)`` (y of the transposed convolution's output
  shape, back to the shape of x), what ``grad_x`` and ``linear_operator``'s ``matvec`` run.
- ``TimeBackward.time_conv_transpose_backward``: ``fastdeconv.conv_transpose_backward(grad_y, x, weight)``
  (grad_x, grad_weight and grad_bias), what a training step runs after the forward call.
- ``PeakMemBackward.peakmem_conv_transpose_backward``: the process's peak RSS around one backward call.
"""

import numpy as np

import fastdeconv as fd

try:
    from .bench_conv_transpose import NAMES, WORKLOADS, arrays
except ImportError:  # run as a plain script directory
    from bench_conv_transpose import NAMES, WORKLOADS, arrays


def geometry(w):
    """The keyword arguments conv and the backward share with the workload's transposed convolution."""
    return {"stride": w["stride"], "padding": w["padding"], "groups": w["groups"], "dilation": w["dilation"]}


def grad_output(w, x, weight, seed=1):
    """A standard normal array of the transposed convolution's output shape (its dL/dy, or conv's input)."""
    spatial = tuple((i - 1) * w["stride"] - 2 * w["padding"] + w["dilation"] * (k - 1) + w["output_padding"] + 1
                    for i, k in zip(x.shape[2:], weight.shape[2:]))
    shape = (x.shape[0], weight.shape[1] * w["groups"]) + spatial
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


class TimeConv:
    """Seconds per ``conv`` call, the adjoint of every workload."""

    params = NAMES
    param_names = ["workload"]
    timeout = 300

    def setup(self, name):
        w = WORKLOADS[name]
        x, self.weight = arrays(w)
        self.y = grad_output(w, x, self.weight)
        self.kw = geometry(w)
        back = fd.conv(self.y, self.weight, **self.kw)  # loads the kernels; the shape closes the loop
        if back.shape != x.shape:
            raise RuntimeError(f"conv of {name}'s output has shape {back.shape}, not x's {x.shape}")

    def time_conv(self, name):
        fd.conv(self.y, self.weight, **self.kw)


class _Backward:
    """Inputs of one backward call of the workload, after a warm-up call."""

    params = NAMES
    param_names = ["workload"]
    timeout = 300

    def setup(self, name):
        w = WORKLOADS[name]
        self.x, self.weight = arrays(w)
        self.gy = grad_output(w, self.x, self.weight)
        self.kw = dict(geometry(w), output_padding=w["output_padding"])
        fd.conv_transpose_backward(self.gy, self.x, self.weight, **self.kw)


class TimeBackward(_Backward):
    """Seconds per ``conv_transpose_backward`` call (grad_x, grad_weight, grad_bias) on every workload."""

    def time_conv_transpose_backward(self, name):
        fd.conv_transpose_backward(self.gy, self.x, self.weight, **self.kw)


class PeakMemBackward(_Backward):
    """Peak resident memory of the benchmark process around one backward call (inputs included)."""

    def peakmem_conv_transpose_backward(self, name):
        fd.conv_transpose_backward(self.gy, self.x, self.weight, **self.kw)
