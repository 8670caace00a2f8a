"""Upsample an image larger than you would like to hold in memory: zarr -> fastdeconv.dask -> zarr.

A ``--size`` x ``--size`` float32 image (default 16384 x 16384 = 1 GiB) is written to a zarr store, upsampled
x2 with the 4x4 bilinear kernel (stride 2, padding 1, the classic learned-upsampling layer) by
:func:`fastdeconv.dask.conv_transpose`, and streamed into a second zarr store (4 GiB), block by block, with a
Dask progress bar. The upsampling runs in a subprocess whose peak resident memory (``ru_maxrss``) is
reported and checked against ``--rss-limit-gib``. The throughput (MB = 10**6 bytes of output per second) is
compared with the in-memory :func:`fastdeconv.conv_transpose` and with the Dask version on in-memory data,
on a ``--baseline-size`` image that fits comfortably. Finally a strip of the zarr output is checked against
the in-memory call (``--verify-all`` checks all of it: small sizes only), and both stores are deleted
(unless ``--keep``).

Usage::

    python examples/huge_upsample.py                                   # the full 16384^2 run, ~5.1 GiB on disk
    python examples/huge_upsample.py --size 600 --chunk 128 --baseline-size 512 --verify-all   # a quick one
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STRIDE, PADDING = 2, 1
BILINEAR = np.array([0.25, 0.75, 0.75, 0.25], np.float32)


def kernel() -> np.ndarray:
    """The (C_in, C_out, 4, 4) = (1, 1, 4, 4) bilinear x2 kernel."""
    return np.outer(BILINEAR, BILINEAR)[None, None].copy()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (sizes are kept small in tests)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=16384, help="input image side (default 16384: 1 GiB of float32)")
    p.add_argument("--chunk", type=int, default=1024, help="input chunk side (output chunks are 2x; default 1024)")
    p.add_argument("--baseline-size", type=int, default=4096,
                   help="image side for the in-memory comparison (default 4096)")
    p.add_argument("--workdir", default=tempfile.gettempdir(), help="where the two zarr stores go (default /tmp)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Dask worker threads (default: cores)")
    p.add_argument("--repeat", type=int, default=3, help="timings of the baseline, best of (default 3)")
    p.add_argument("--rss-limit-gib", type=float, default=1.5, help="fail when the peak RSS exceeds it (1.5)")
    p.add_argument("--verify-all", action="store_true", help="compare the whole output with the in-memory call")
    p.add_argument("--keep", action="store_true", help="keep the zarr stores")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run the upsampling, write results to this file
    args = p.parse_args(argv)
    for name in ("size", "chunk", "baseline_size", "threads", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.rss_limit_gib <= 0:
        p.error(f"--rss-limit-gib must be > 0, got {args.rss_limit_gib}")
    return args


def out_size(size: int) -> int:
    """Output side: ``(size - 1) * 2 - 2 * 1 + 4 = 2 * size``."""
    return (size - 1) * STRIDE - 2 * PADDING + BILINEAR.size


def create_input(path: Path, size: int, chunk: int) -> None:
    """A random float32 image, generated and written chunk by chunk (never whole in memory)."""
    import dask.array as da
    import zarr

    store = zarr.create_array(path, shape=(size, size), chunks=(chunk, chunk), dtype="float32", compressors=None,
                              overwrite=True)
    image = da.random.default_rng(2026).random((size, size), chunks=chunk, dtype=np.float32)
    da.store(image, store, lock=False, scheduler="threads")


def run_upsample(args: argparse.Namespace) -> None:
    """The measured part (in its own process): zarr in -> fastdeconv.dask -> zarr out, with a progress bar."""
    import dask
    import dask.array as da
    import zarr
    from dask.diagnostics import ProgressBar

    import fastdeconv.dask as fdd

    workdir = Path(args.workdir)
    x = da.from_zarr(str(workdir / "huge_upsample_in.zarr"))[None, None]  # (1, 1, H, W)
    y = fdd.conv_transpose(x, kernel(), stride=STRIDE, padding=PADDING)[0, 0]
    side = out_size(args.size)
    out = zarr.create_array(workdir / "huge_upsample_out.zarr", shape=(side, side),
                            chunks=(STRIDE * args.chunk, STRIDE * args.chunk), dtype="float32", compressors=None,
                            overwrite=True)
    # warm the numba kernels (cached on disk) outside the timing, on a block-sized piece
    fdd.conv_transpose(x[..., :8, :8], kernel(), stride=STRIDE, padding=PADDING).compute(scheduler="sync")
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=args.threads), ProgressBar(dt=0.5):
        da.store(y, out, lock=False)
        seconds = time.perf_counter() - start  # before the progress bar's final redraw
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    Path(args.child).write_text(json.dumps({"seconds": seconds, "peak_rss": peak, "blocks": y.npartitions}))


def baseline(size: int, chunk: int, threads: int, repeat: int) -> dict:
    """Throughput (MB/s of output) of the in-memory call and of the Dask twin on in-memory data."""
    import dask.array as da

    import fastdeconv as fd
    import fastdeconv.dask as fdd

    x = np.random.default_rng(1).random((1, 1, size, size), dtype=np.float32)
    w = kernel()
    nbytes = out_size(size) ** 2 * 4

    def best(f):
        f()  # warm-up (compilation, page faults)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_mem = best(lambda: fd.conv_transpose(x, w, stride=STRIDE, padding=PADDING))
    xd = da.from_array(x, chunks=(1, 1, chunk, chunk))
    t_dask = best(lambda: fdd.conv_transpose(xd, w, stride=STRIDE, padding=PADDING).compute(
        scheduler="threads", num_workers=threads))
    return {"in_memory": nbytes / t_mem / 1e6, "dask_in_memory": nbytes / t_dask / 1e6, "output_mb": nbytes / 1e6}


def verify(workdir: Path, size: int, verify_all: bool) -> str:
    """Compare the zarr output with the in-memory call: all of it, or a 64-row strip from the middle."""
    import zarr

    import fastdeconv as fd

    src = zarr.open_array(workdir / "huge_upsample_in.zarr", mode="r")
    dst = zarr.open_array(workdir / "huge_upsample_out.zarr", mode="r")
    w = kernel()
    if verify_all:
        expected = fd.conv_transpose(src[...][None, None], w, stride=STRIDE, padding=PADDING)[0, 0]
        np.testing.assert_array_equal(dst[...], expected)
        return f"all {expected.size} elements"
    # input rows [r0, r1) with no crop along the rows give full rows 2*r0 + q; those with every input row
    # inside the strip are q in [3, 2*(r1 - r0) - 2], i.e. output rows 2*r0 + q - PADDING
    r0 = max(0, size // 2 - 32)
    r1 = min(size, r0 + 64)
    strip = fd.conv_transpose(src[r0:r1][None, None], w, stride=STRIDE, padding=((0, 0), (PADDING, PADDING)))[0, 0]
    q_lo, q_hi = BILINEAR.size - 1, STRIDE * (r1 - r0) - 1
    o_lo = STRIDE * r0 + q_lo - PADDING
    got = dst[o_lo:o_lo + q_hi - q_lo]
    np.testing.assert_array_equal(got, strip[q_lo:q_hi])
    return f"output rows [{o_lo}, {o_lo + q_hi - q_lo}) x all columns"


def main(argv: list[str] | None = None) -> int:
    """Run the example; returns the exit status (1 when the peak RSS exceeds the limit)."""
    args = parse_args(argv)
    if args.child:
        run_upsample(args)
        return 0
    workdir = Path(args.workdir)
    side = out_size(args.size)
    in_bytes, out_bytes = 4 * args.size ** 2, 4 * side ** 2
    free = shutil.disk_usage(workdir).free
    if free < 1.05 * (in_bytes + out_bytes):
        print(f"not enough space in {workdir}: need {(in_bytes + out_bytes) / 2**30:.2f} GiB, "
              f"{free / 2**30:.2f} GiB free", file=sys.stderr)
        return 2
    print(f"input  {args.size} x {args.size} float32 ({in_bytes / 2**30:.3f} GiB), chunks {args.chunk}^2")
    print(f"output {side} x {side} float32 ({out_bytes / 2**30:.3f} GiB), chunks {STRIDE * args.chunk}^2; "
          f"4x4 bilinear kernel, stride {STRIDE}, padding {PADDING}; {args.threads} Dask threads")
    try:
        t0 = time.perf_counter()
        create_input(workdir / "huge_upsample_in.zarr", args.size, args.chunk)
        print(f"wrote the input store in {time.perf_counter() - t0:.1f} s")

        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            result_file = Path(handle.name)
        try:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(result_file)] + \
                  [a for a in (argv if argv is not None else sys.argv[1:])]
            subprocess.run(cmd, check=True)
            result = json.loads(result_file.read_text())
        finally:
            result_file.unlink(missing_ok=True)
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(f"verified: the zarr output equals fastdeconv.conv_transpose "
              f"({verify(workdir, args.size, args.verify_all)})")

        base = baseline(args.baseline_size, args.chunk, args.threads, args.repeat)
    finally:
        if not args.keep:
            for name in ("huge_upsample_in.zarr", "huge_upsample_out.zarr"):
                shutil.rmtree(workdir / name, ignore_errors=True)

    zarr_mbs = out_bytes / result["seconds"] / 1e6
    peak_gib = result["peak_rss"] / 2**30
    print()
    print(f"zarr -> fastdeconv.dask -> zarr, {args.size}^2 -> {side}^2: {result['seconds']:.1f} s, "
          f"{zarr_mbs:.0f} MB/s of output, {result['blocks']} blocks")
    print(f"peak RSS of the upsampling process: {peak_gib:.3f} GiB (getrusage of the child: "
          f"{child_peak / 2**30:.3f} GiB; limit {args.rss_limit_gib} GiB)")
    print(f"in-memory, {args.baseline_size}^2 -> {out_size(args.baseline_size)}^2 ({base['output_mb']:.0f} MB of "
          f"output): fastdeconv.conv_transpose {base['in_memory']:.0f} MB/s, fastdeconv.dask on in-memory chunks "
          f"{base['dask_in_memory']:.0f} MB/s")
    print(f"ratio zarr-streamed / in-memory call: {zarr_mbs / base['in_memory']:.2f}")
    if peak_gib > args.rss_limit_gib:
        print(f"FAIL: peak RSS {peak_gib:.3f} GiB exceeds {args.rss_limit_gib} GiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
