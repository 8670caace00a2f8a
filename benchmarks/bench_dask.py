"""asv: the Dask twin against the in-memory call on a moderately sized x2 upsample.

A 2048 x 2048 float32 image (16 MiB in, 64 MiB out), the 4x4 bilinear kernel, stride 2, padding 1. The Dask
version runs on in-memory chunks of several sizes (threaded scheduler), so the difference to the in-memory
call is the cost of chunking: halo copies, per-block kernel launches and scheduling. Skipped (asv's way:
``NotImplementedError`` in ``setup``) when dask is not installed.
"""

from __future__ import annotations

import numpy as np

import fastdeconv as fd

SIZE = 2048
KW = {"stride": 2, "padding": 1}


def _kernel() -> np.ndarray:
    k = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    return np.outer(k, k)[None, None].copy()


class DaskUpsample:
    """Chunked (fastdeconv.dask, threaded scheduler) vs in-memory (fastdeconv.conv_transpose)."""

    params = ["in-memory", 256, 512, 1024]
    param_names = ["chunk"]
    timeout = 120

    def setup(self, chunk):
        try:
            import dask.array as da

            import fastdeconv.dask as fdd
        except ImportError as exc:
            raise NotImplementedError(f"dask is not installed: {exc}") from None
        self.fdd = fdd
        self.x = np.random.default_rng(0).random((1, 1, SIZE, SIZE), dtype=np.float32)
        self.w = _kernel()
        self.xd = None if chunk == "in-memory" else da.from_array(self.x, chunks=(1, 1, chunk, chunk))
        fd.conv_transpose(self.x[..., :64, :64], self.w, **KW)  # compile / load the kernels outside the timing

    def time_upsample(self, chunk):
        if self.xd is None:
            fd.conv_transpose(self.x, self.w, **KW)
        else:
            self.fdd.conv_transpose(self.xd, self.w, **KW).compute(scheduler="threads")

    def track_output_mb_per_s(self, chunk):
        """Output throughput in MB/s (10**6 bytes), best of three calls."""
        import time

        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            self.time_upsample(chunk)
            best = min(best, time.perf_counter() - t0)
        return 4 * (2 * SIZE) ** 2 / best / 1e6

    track_output_mb_per_s.unit = "MB/s"


class DaskGraph:
    """Graph construction only (no compute): the per-call overhead that grows with the number of blocks."""

    params = [64, 256]
    param_names = ["chunk"]

    def setup(self, chunk):
        try:
            import dask.array as da

            import fastdeconv.dask as fdd
        except ImportError as exc:
            raise NotImplementedError(f"dask is not installed: {exc}") from None
        self.fdd = fdd
        self.xd = da.zeros((1, 1, SIZE, SIZE), dtype=np.float32, chunks=(1, 1, chunk, chunk))
        self.w = _kernel()

    def time_build_graph(self, chunk):
        self.fdd.conv_transpose(self.xd, self.w, **KW)
