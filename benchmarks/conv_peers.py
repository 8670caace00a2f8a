"""fastdeconv's adjoint side against torch, side by side, at a fixed thread count (not an asv benchmark).

For every workload of the package's ``workloads.json`` and ``unseen_workloads.json`` (a transposed convolution x -> y):

- ``conv``: ``fastdeconv.conv(gy, weight)`` against ``torch.nn.functional.conv{1,2,3}d(gy, weight)`` with the
  layer's stride, padding, dilation and groups (gy shaped like the layer's output);
- ``backward``: ``fastdeconv.conv_transpose_backward(gy, x, weight)`` against ``torch.autograd.grad`` of
  ``conv_transpose{1,2,3}d(x, weight, bias)`` with respect to x, weight and bias (the graph built once).

The two sides run in alternating blocks (fd x4, torch x4, fd x4, ...; the first call of a block is not
counted) and the medians are printed with their ratio (torch / fd: above 1 means fastdeconv is faster).
The machine may be shared: repeat and trust only differences that repeat.

Usage: ``python benchmarks/conv_peers.py [--threads 2] [--only name ...] [--what conv backward] [--seconds 1]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import fastdeconv as fd

HERE = Path(__file__).resolve().parent


def workloads():
    out = []
    for path in (Path(fd.__file__).resolve().parent / "workloads.json", HERE / "unseen_workloads.json"):
        with open(path, encoding="utf-8") as fh:
            out += json.load(fh)["workloads"]
    return out


def make(w, seed=0):
    rng = np.random.default_rng(seed)
    rank = len(w["spatial"])
    x = rng.standard_normal((w["N"], w["C_in"]) + tuple(w["spatial"]), dtype=np.float32)
    weight = rng.standard_normal((w["C_in"], w["C_out"] // w["groups"]) + (w["kernel"],) * rank,
                                 dtype=np.float32)
    spatial = tuple((i - 1) * w["stride"] - 2 * w["padding"] + w["dilation"] * (w["kernel"] - 1)
                    + w["output_padding"] + 1 for i in w["spatial"])
    gy = rng.standard_normal((w["N"], w["C_out"]) + spatial, dtype=np.float32)
    return x, weight, gy


def timed(fns, seconds, min_rounds=3, max_rounds=100, block=3):
    """Median seconds of each function, run in alternating blocks until ``seconds`` have passed.

    Each round runs every function ``block + 1`` times in a row and keeps the last ``block``: the first call
    after the other library's may find that library's threads still spinning on the cores (an OpenMP pool
    waits busily for a while after its parallel region), which would charge it to the wrong side.
    """
    times = [[] for _ in fns]
    for fn in fns:
        fn()  # warm-up (numba load, torch's first-call work)
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < seconds):
        for t, fn in zip(times, fns):
            for i in range(block + 1):
                t0 = time.perf_counter()
                fn()
                if i:
                    t.append(time.perf_counter() - t0)
        rounds += 1
    return [float(np.median(t)) for t in times]


def pair(w, what):
    """(fastdeconv's call, torch's call) of one workload."""
    x, weight, gy = make(w)
    rank = len(w["spatial"])
    geo = dict(stride=w["stride"], padding=w["padding"], dilation=w["dilation"], groups=w["groups"])
    gy_t, w_t = torch.from_numpy(gy), torch.from_numpy(weight)
    if what == "conv":
        tconv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]

        def theirs():
            with torch.no_grad():
                return tconv(gy_t, w_t, **geo)

        return (lambda: fd.conv(gy, weight, **geo)), theirs
    tconvt = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[rank - 1]
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(weight).requires_grad_()
    bt = torch.zeros(w["C_out"], requires_grad=True)
    y = tconvt(xt, wt, bt, output_padding=w["output_padding"], **geo)
    return ((lambda: fd.conv_transpose_backward(gy, x, weight, output_padding=w["output_padding"], **geo)),
            (lambda: torch.autograd.grad(y, (xt, wt, bt), gy_t, retain_graph=True)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--what", nargs="*", default=["conv", "backward"], choices=["conv", "backward"])
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fd.set_num_threads(args.threads)
    print(f"{'workload':16s} {'what':9s} {'fd ms':>9s} {'torch ms':>9s} {'torch/fd':>8s}")
    for w in workloads():
        if args.only and w["name"] not in args.only:
            continue
        for what in args.what:
            a, b = timed(pair(w, what), args.seconds)
            print(f"{w['name']:16s} {what:9s} {a * 1e3:9.3f} {b * 1e3:9.3f} {b / a:8.2f}", flush=True)


if __name__ == "__main__":
    main()
