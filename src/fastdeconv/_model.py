"""The fitted constants of the cost model, in one place, each name with one meaning.

The variant modules (``variants/``: every variant's estimate), ``variants/scatter_gemm.chunks`` (its chunk choice)
and ``_kernels/winograd`` (its chunk choice and estimate) read them; kernel-internal tuning (buffer sizes, chunk
targets) stays in the kernels. Only their ratios matter for the choice.
"""

import os
from pathlib import Path

from ._store import cpu_info


def _l2_bytes(default: int = 1 << 20) -> int:
    """The L2 (per-core) cache size of this machine's first CPU, from Linux's sysfs; ``default`` elsewhere or when
    unreadable. The chunk choices keep a worker's working set within it (it differs between CPU families, so it is
    read, not assumed)."""
    try:
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                text = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
                size = int(text.rstrip("KM")) * scale
                if 1 << 16 <= size <= 1 << 26:  # a plausible L2 (64 KiB to 64 MiB)
                    return size
    except (OSError, ValueError):
        pass
    return default


def _core_gemm_rate() -> float:
    """fp32 FLOP/s of one core in OpenBLAS's sgemm, by kind of CPU: Intel cores with AVX-512 run two 512-bit FMA
    pipes, so about twice the rate of the others (cores whose AVX-512 is double-pumped 256-bit, as on AMD's, and
    AVX2 cores). ``OPENBLAS_CORETYPE`` naming a kernel without AVX-512 (which some machines set) caps it there
    too. Only the ratios to the other kernels' rates matter, and one rate for every kind of machine would make
    the GEMM variants' estimates wrong by that factor of two on one of them."""
    info = cpu_info()
    vendor, flags = info.get("vendor_id", ""), set(info.get("flags", "").split())
    forced = os.environ.get("OPENBLAS_CORETYPE", "").strip().lower()
    avx512_kernel = not forced or forced in ("skylakex", "cooperlake", "sapphirerapids")
    return 180e9 if vendor == "GenuineIntel" and "avx512f" in flags and avx512_kernel else 100e9


L2_BYTES = _l2_bytes()

# Fitted to single-thread CPU times (process time, so that other load on the machine does not distort them) of
# every variant on the built-in workloads, on a 2-core AVX-512 machine (fp32, one core; fp64 arithmetic runs at
# half the rate); ``threads`` cores divide the parallel parts.
GEMM_PEAK = _core_gemm_rate()  # FLOP/s of one core in the BLAS GEMMs of the GEMM variants
WINOGRAD_GEMM_RATE = GEMM_PEAK  # ... and in gather-winograd's (tiles x C_in) @ (C_in x C_out block) GEMMs, called
                                # from numba per transform point (their shapes lower it: WINOGRAD_GEMM_HALF)
CHUNK_GEMM_RATE = 100e9    # the GEMM rate scatter-gemm's chunk choice compares its chunkings with (against
                           # CHUNK_CALL); fixed, so that the chunks, hence the bits, stay as they are
GEMM_HALF = (24, 48, 32)   # GEMM side (M, N, K) at which BLAS reaches half its peak along that side
DIRECT_RATE = 14e9         # multiply-adds/s of the direct kernels on long rows with full channel blocks
DIRECT_ROW_HALF = 40       # input row length at which the direct kernels reach half DIRECT_RATE
DIRECT_CHANNEL_BLOCK = 4   # output channels the direct kernels update per input load
# direct gather's time relative to direct scatter's: lower on long strided rows (its phase-major rows stay dense),
# higher on short ones (where its per-phase set-up is not amortized)
GATHER_DIRECT_LONG, GATHER_DIRECT_SHORT, GATHER_LONG_ROW = 0.8, 1.3, 128
BANDWIDTH = 13e9           # bytes/s of one core streaming (26 GB/s for two)
COL2IM_ELEMENT = 0.9e-9    # s per column element added into the output (strided read-modify-write)
COL2IM_WIDE_ELEMENT = 0.3e-9  # ... from a pixels-major GEMM, one run per pixel (wide strides: iSTFT-like)
COL2IM_PLANE_TAP = 25e-9   # s per (channel, depth, tap, chunk) set-up in col2im
IM2COL_ELEMENT = 0.25e-9   # s per element copied into an im2col block
IM2COL_ROW = 12e-9         # s per row segment copied into an im2col block
PHASE_STORE_ELEMENT = 1.0e-9     # gather-gemm: s per output element stored from a phase block (strided)
PHASE_RELAYOUT_ELEMENT = 2.0e-9  # gather-gemm, *-gemm-rows: s per weight element re-laid out (phase / tap-major)
# pixels-major GEMM (X^T @ W, ``*-gemm-rows``) relative to the channel-major one at the same sides: faster when
# the (C_out_g * K) side is long enough for BLAS's register blocking (about 48 or more), slower when it is short
PIXEL_GEMM_GAIN_MAX, PIXEL_GEMM_GAIN_MIN, PIXEL_GEMM_COLUMNS = 1.2, 0.85, 40
# the second step of the row-block GEMM variants: (s per cols element, s per output element) by form and cols
# layout (pixels-major: strided reads of cols; channel-major: contiguous reads), both adding into output rows
ROWS_STEP_PIXELS_MAJOR = {"scatter": (0.7e-9, 1.0e-9), "gather": (0.93e-9, 3.0e-9)}
ROWS_STEP_CHANNEL_MAJOR = {"scatter": (0.5e-9, 1.0e-9), "gather": (1.5e-9, 3.0e-9)}
PLANE_TAP = 0.03e-9        # gather-plane: s per (element, tap) of a run (vectorized multiply-add from L1)
PLANE_PASS = 0.1e-9        # gather-plane: s per element and pass (load and store of the phase buffer)
PLANE_TAP_BLOCK = 0.03e-9  # gather-plane: s per (element, term) of a pass over a block of output channels
PLANE_WEIGHT = 1e-9        # gather-plane: s per entry of a task's weight table
PLANE_STORE = 0.25e-9      # gather-plane: s per output element interleaved into the output
PLANE_FILL = 0.3e-9        # gather-plane: s per input element copied into the padded rows
PLANE_PHASE = 50e-9        # gather-plane: s per (channel, row block, phase) run set-up and store call
LAUNCH_PARALLEL = 20e-6    # the fixed cost of one parallel call in the BLAS-backed variants' estimates
LAUNCH_SERIAL = 1e-6       # one serial numba call
LAUNCH_GEMM = 8e-6         # one BLAS call
SERIAL_WORK = 1.5e6        # multiply-adds below which a serial direct kernel (or the zero-fill copy, the
                           # correlation, the weight gradient) beats handing chunks to the pool (LAUNCH_POOL)
LAUNCH_POOL = 80e-6        # handing chunks to the Python worker pool (run_parallel: thread wake-ups, GIL hand-off)
PLANE_SERIAL_WORK = 2e6    # multiply-adds below which gather-plane runs in the calling thread: there its work
                           # on two threads plus the pool's hand-off takes longer than the work on one
TINY_WORK = 2000           # ... and below which walking the definition beats setting up buffered runs (the
                           # fixed set-up dominates a few hundred multiply-adds; the two are even near 5000)

# scatter-gemm's chunk choice (``variants/scatter_gemm.chunks``): GEMM efficiency credited to a chunk cut into slabs
# (relative to whole samples), seconds per (chunk, slab) of calls from the worker's loop (GEMM and col2im)
SLAB_DISCOUNT = 0.85
CHUNK_CALL = 20e-6

# gather-winograd (``_kernels/winograd``). OpenBLAS sgemm on one core through numba's np.dot: products with
# M * N * K <= WINOGRAD_SMALL_GEMM run a no-packing kernel at full rate (or a little above) whatever their shape;
# larger ones pack, and then a thin side (few tiles, a small C_out block or few input channels) lowers the rate.
# WINOGRAD_GEMM_HALF: (tiles, C_out block, C_in_g) at which the packing kernel reaches half its rate along that side.
WINOGRAD_GEMM_HALF = (18, 6, 6)
WINOGRAD_SMALL_GEMM, WINOGRAD_SMALL_GEMM_GAIN = 1 << 19, 1.1
WINOGRAD_U_ELEMENT = 0.35e-9   # s per transformed-weight element (per point, per chunk)
WINOGRAD_V_ELEMENT = 0.07e-9   # s per transformed-input element (channels-last vector adds)
WINOGRAD_PACK_ELEMENT = 0.6e-9  # s per input element packed channels-last
WINOGRAD_STORE_ELEMENT = 1.6e-9  # s per output element of the inverse transform (sums + strided store)
# A chunk whose packed rows, V and M blocks outgrow the core's L2 cache streams them from L3 in the transforms
# and the inverse (the same GEMMs, up to 1.5x the time of the whole call): the chunk choice keeps chunks in L2.
WINOGRAD_L2_BYTES = L2_BYTES
WINOGRAD_SPILL = 2.0           # factor on the transforms' per-element costs once a chunk exceeds WINOGRAD_L2_BYTES
WINOGRAD_RELAYOUT_ELEMENT = 0.8e-9  # s per weight element re-laid out (tap-major, per point)
WINOGRAD_POINT_CALL = 1e-6     # s per point: BLAS call set-up from numba
WINOGRAD_TASK_CALL = 20e-6     # s per chunk: the numba call from the worker's Python loop
WINOGRAD_TILE_POINT = 3e-9     # s per (tile, point): loop and call overhead of the transforms and small GEMMs
WINOGRAD_SHARED_ELEMENT = 0.8e-9  # s per shared transformed-weight element, made in the calling thread
