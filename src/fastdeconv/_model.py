"""The cost model's constants, in one place, each name with one meaning: speeds from the machine profile, and the
facts of the kernels.

Every speed a variant's estimate reads is a *family rate* of this machine (``_profile``: measured by
micro-benchmarks, or coarse from the BLAS and copy rates alone) times a fixed within-family ratio. The ratios are
facts of the kernels (a col2im add from a pixels-major GEMM costs a third of a strided one, a plane pass four
taps' loads and stores, ...): they were fitted once, on single-thread process times of every variant on the
built-in workloads, and do not depend on the machine. The family rates are not fixed anywhere in ``src/``:
:func:`install` sets them from a profile, and until then they hold :data:`REFERENCE`'s values (the rates the
ratios were fitted against), so that a module reading a constant never finds it missing.

The variant modules read the constants at call time (``from .. import _model as M``; ``M.NAME``), so a new
profile reaches every estimate. What decides how work is cut (scatter-gemm's and Winograd's chunks, which fix the
order of the BLAS calls and so the bits) reads :data:`CHUNK` instead, the fixed reference rates: a result's bits
never depend on the profile, only which variant runs does.
"""

import threading
from pathlib import Path
from types import MappingProxyType, SimpleNamespace


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


L2_BYTES = _l2_bytes()

# The family rates of a profile (``_profile``), one core, fp32 (fp64 arithmetic in the numba kernels runs at half
# the rate; the BLAS GEMMs at ``dgemm_peak``). REFERENCE: the rates the within-family ratios were fitted against.
REFERENCE = MappingProxyType({
    "sgemm_peak": 180e9,       # FLOP/s of one core in BLAS sgemm on large sides
    "dgemm_peak": 90e9,        # ... dgemm
    # GEMM side (M, N, K) at which BLAS reaches half its peak along that side: fitted, with the other families as
    # they are, to every variant's measured time on the 31 workloads of one host (its reading below)
    "gemm_half": (12.0, 12.0, 13.0),
    "gemm_threads": 1.0,       # a T-thread GEMM's rate over T one-thread ones (BLAS's parallel efficiency)
    "bandwidth": 13e9,         # bytes/s of one core streaming (a copy: bytes read + written)
    "call": 1e-6,              # s per call of a compiled numba function from Python
    "direct_rate": 14e9,       # multiply-adds/s of the direct kernels on long rows with full channel blocks
    "col2im_element": 0.9e-9,  # s per column element added into the output (strided read-modify-write)
    "im2col_element": 0.25e-9,  # s per element copied into an im2col block
    "plane_tap": 0.03e-9,      # gather-plane: s per (element, tap) of a run (vectorized multiply-add from L1)
    "winograd_element": 0.07e-9,  # gather-winograd: s per transformed-input element (channels-last vector adds)
})
FAMILIES = tuple(REFERENCE)
# What ``_profile``'s micro-benchmarks read on a machine where REFERENCE's balance between the families holds
# (the BLAS and copy readings of a coarse profile; the numba families solved from their probes with the reference
# model). A profile's rate of such a family is its REFERENCE rate scaled by this machine's reading over this one:
# a reading is not what a variant sees (a probe is small and stays in cache; a copy streams better than a
# col2im), but the ratio between two machines' readings is. The GEMM rates and BLAS's parallel efficiency are
# absolute (an estimate uses them as measured), so they are not listed.
READING = MappingProxyType({
    "gemm_half": (13.0, 1.2, 12.8),
    "bandwidth": 33e9,
    "call": 0.675e-6,
    "direct_rate": 20e9,
    "col2im_element": 0.8e-9,
    "im2col_element": 0.14e-9,
    "plane_tap": 0.03e-9,  # (its probe's layer: where the reference rate matched larger layers' times)
    "winograd_element": 0.07e-9,
})


HALF_SPREAD = 2.0


def scaled(family: str, reading):
    """The model's rate of ``family`` for this machine's ``reading`` of it (see :data:`READING`)."""
    if family not in READING:
        return reading
    if family == "gemm_half":
        # (a half side read on one machine moves by 2x between processes: within HALF_SPREAD of the reference's)
        return tuple(r * min(HALF_SPREAD, max(1 / HALF_SPREAD, m / q))
                     for r, m, q in zip(REFERENCE[family], reading, READING[family]))
    return REFERENCE[family] * reading / READING[family]

# constant -> (family, ratio): the constant is ``profile[family] * ratio``
_DERIVED = {
    "GEMM_PEAK": ("sgemm_peak", 1.0),  # FLOP/s of one core in the BLAS GEMMs of the GEMM variants
    "GEMM_PEAK64": ("dgemm_peak", 1.0),
    # gather-winograd's (tiles x C_in) @ (C_in x C_out block) GEMMs, called from numba per transform point (their
    # shapes lower it: WINOGRAD_GEMM_HALF)
    "WINOGRAD_GEMM_RATE": ("sgemm_peak", 1.0),
    "BANDWIDTH": ("bandwidth", 1.0),
    "DIRECT_RATE": ("direct_rate", 1.0),
    "COL2IM_ELEMENT": ("col2im_element", 1.0),
    "COL2IM_WIDE_ELEMENT": ("col2im_element", 1 / 3),  # ... from a pixels-major GEMM, one run per pixel (iSTFT-like)
    "COL2IM_PLANE_TAP": ("col2im_element", 25 / 0.9),  # s per (channel, depth, tap, chunk) set-up in col2im
    "PHASE_STORE_ELEMENT": ("col2im_element", 1.0 / 0.9),  # gather-gemm: s per output element stored (strided)
    "PHASE_RELAYOUT_ELEMENT": ("col2im_element", 2.0 / 0.9),  # gather-gemm, *-gemm-rows: per weight element
    "WINOGRAD_STORE_ELEMENT": ("col2im_element", 1.6 / 0.9),  # per output element of the inverse transform
    "WINOGRAD_NHWC_STORE_ELEMENT": ("col2im_element", 1.0 / 0.9),  # ... into channels-last y (channel runs)
    "NHWC_RUN_ELEMENT": ("col2im_element", 0.3 / 0.9),  # gather-gemm-nhwc-runs: per cols element (whole runs)
    "NHWC_RUN_STORE": ("col2im_element", 0.5 / 0.9),  # ... per output element (zeroed, bias and activation)
    "WINOGRAD_RELAYOUT_ELEMENT": ("col2im_element", 0.8 / 0.9),  # per weight element re-laid out (tap-major)
    "WINOGRAD_SHARED_ELEMENT": ("col2im_element", 0.8 / 0.9),  # per shared transformed-weight element
    "IM2COL_ELEMENT": ("im2col_element", 1.0),
    "IM2COL_ROW": ("im2col_element", 12 / 0.25),  # s per row segment copied into an im2col block
    "PLANE_FILL": ("im2col_element", 0.3 / 0.25),  # gather-plane: per input element copied into the padded rows
    "PLANE_STORE": ("im2col_element", 1.0),  # gather-plane: per output element interleaved into the output
    "WINOGRAD_PACK_ELEMENT": ("im2col_element", 0.6 / 0.25),  # per input element packed channels-last
    "WINOGRAD_NHWC_PACK_ELEMENT": ("im2col_element", 0.3 / 0.25),  # ... from channels-last x (row copies)
    "PLANE_TAP": ("plane_tap", 1.0),
    "PLANE_PASS": ("plane_tap", 0.1 / 0.03),  # per element and pass (load and store of the phase buffer)
    "PLANE_TAP_BLOCK": ("plane_tap", 0.8),  # per (element, term) of a pass over a block of output channels
    "PLANE_QUAD": ("plane_tap", 30 / 0.03),  # per pass of up to four terms over a block's run: its set-up
    "PLANE_WEIGHT": ("plane_tap", 1 / 0.03),  # per entry of a task's weight table
    "PLANE_PHASE": ("plane_tap", 50 / 0.03),  # per (channel, row block, phase) run set-up and store call
    "PLANE_NHWC_TERM": ("plane_tap", 2.0),  # gather-plane-nhwc: per (element, term), the weights a second stream
    "PLANE_NHWC_PASS": ("plane_tap", 0.1 / 0.03),  # ... per element and pass of four terms (output load, store)
    "PLANE_NHWC_ROW": ("plane_tap", 400 / 0.03),  # ... per output row and column chunk: its terms' set-up, edges
    "PLANE_NHWC_PACK": ("call", 25.0),  # ... a one-off call's pack: its numpy calls
    "PLANE_NHWC_FILL": ("im2col_element", 0.5),  # ... per element of the repeated input rows in a scalar tail
    "PLANE_NHWC_FILL_VECTOR": ("im2col_element", 0.1),  # ... in a run's whole vector blocks
    "PLANE_NHWC_FILL_RUN": ("im2col_element", 6.0),  # ... per run (a pixel's channels, or one broadcast value)
    # conv's space-to-depth Winograd form (``_s2d``), per element on one core, cache-cold: the packed input (read
    # across x's channel planes), V, the point products (read by the inverse), U (read the weight, write its points)
    "S2D_PACK_ELEMENT": ("im2col_element", 1.2 / 0.25),
    "S2D_TRANSFORM_ELEMENT": ("col2im_element", 1.0 / 0.9),
    "S2D_INVERSE_ELEMENT": ("col2im_element", 1.0 / 0.9),
    "S2D_WEIGHT_ELEMENT": ("col2im_element", 0.8 / 0.9),
    "WINOGRAD_V_ELEMENT": ("winograd_element", 1.0),
    "WINOGRAD_U_ELEMENT": ("winograd_element", 0.35 / 0.07),  # per transformed-weight element (per point, chunk)
    "WINOGRAD_TILE_POINT": ("winograd_element", 3 / 0.07),  # per (tile, point): the transforms' loop and calls
    "CALL_PATH": ("call", 3.0),  # a call's Python path around its kernels (cached plan lookup, checks, output)
    "LAUNCH_SERIAL": ("call", 1.0),  # one serial numba call
    "LAUNCH_GEMM": ("call", 8.0),  # one BLAS call
    "LAUNCH_PARALLEL": ("call", 20.0),  # the fixed cost of one parallel call in the BLAS-backed variants
    "LAUNCH_POOL": ("call", 80.0),  # handing chunks to the Python worker pool (thread wake-ups, GIL hand-off)
    "WINOGRAD_POINT_CALL": ("call", 1.0),  # per point: BLAS call set-up from numba
    "WINOGRAD_TASK_CALL": ("call", 20.0),  # per chunk: the numba call from the worker's Python loop
}
# gather-gemm's own steps (weight relayout, im2col, phase stores) against the rates above, which were fitted on the
# other variants' in-cache steps: its im2col and stores sweep the whole input and output per phase and block of
# output channels, from and to memory, at about half those rates
GATHER_GEMM_STEPS = 2.0
# the second step of the row-block GEMM variants: (s per cols element, s per output element) by form and cols
# layout (pixels-major: strided reads of cols; channel-major: contiguous reads), both adding into output rows, as
# ratios to col2im_element
_ROWS_PIXELS_MAJOR = {"scatter": (0.7 / 0.9, 1.0 / 0.9), "gather": (0.93 / 0.9, 3.0 / 0.9)}
_ROWS_CHANNEL_MAJOR = {"scatter": (0.5 / 0.9, 1.0 / 0.9), "gather": (1.5 / 0.9, 3.0 / 0.9)}

# ---------------------------------------------------------------------------- facts of the kernels (fixed)
DIRECT_ROW_HALF = 40       # input row length at which the direct kernels reach half DIRECT_RATE
DIRECT_CHANNEL_BLOCK = 4   # output channels the direct kernels update per input load
# direct gather's time relative to direct scatter's: lower on long strided rows (its phase-major rows stay dense),
# higher on short ones (where its per-phase set-up is not amortized)
GATHER_DIRECT_LONG, GATHER_DIRECT_SHORT, GATHER_LONG_ROW = 0.8, 1.3, 128
# pixels-major GEMM (X^T @ W, ``*-gemm-rows``) relative to the channel-major one at the same sides: faster when
# the (C_out_g * K) side is long enough for BLAS's register blocking (about 48 or more), slower when it is short
PIXEL_GEMM_GAIN_MAX, PIXEL_GEMM_GAIN_MIN, PIXEL_GEMM_COLUMNS = 1.2, 0.85, 40
SERIAL_WORK = 1.5e6        # multiply-adds below which a serial direct kernel (or the zero-fill copy, the
                           # correlation, the weight gradient) beats handing chunks to the pool (LAUNCH_POOL)
PLANE_SERIAL_WORK = 2e6    # multiply-adds below which gather-plane runs in the calling thread: there its work
                           # on two threads plus the pool's hand-off takes longer than the work on one
TINY_WORK = 2000           # ... and below which walking the definition beats setting up buffered runs (the
                           # fixed set-up dominates a few hundred multiply-adds; the two are even near 5000)
CONV_TINY_WORK = 8192      # multiply-adds below which ``conv`` reads x directly, bounds checked per term (about
                           # 2 ns each), rather than through a padded copy and its hand-offs (about 15 us fixed)

# gather-winograd (``_kernels/winograd``). BLAS sgemm on one core through numba's np.dot: products with
# M * N * K <= WINOGRAD_SMALL_GEMM run a no-packing kernel at full rate (or a little above) whatever their shape;
# larger ones pack, and then a thin side (few tiles, a small C_out block or few input channels) lowers the rate.
# WINOGRAD_GEMM_HALF: (tiles, C_out block, C_in_g) at which the packing kernel reaches half its rate along that side.
WINOGRAD_GEMM_HALF = (18, 6, 6)
WINOGRAD_SMALL_GEMM, WINOGRAD_SMALL_GEMM_GAIN = 1 << 19, 1.1
# A chunk whose packed rows, V and M blocks outgrow the core's L2 cache streams them from L3 in the transforms
# and the inverse (the same GEMMs, up to 1.5x the time of the whole call): the chunk choice keeps chunks in L2.
WINOGRAD_L2_BYTES = L2_BYTES
WINOGRAD_SPILL = 2.0           # factor on the transforms' per-element costs once a chunk exceeds WINOGRAD_L2_BYTES
# gather-winograd-nhwc: a C_out block of fewer channels than this runs the point GEMMs proportionally below
# their rate (the (C_in_g, C_out block) operand is thinner than BLAS's register block: few output channels)
WINOGRAD_NHWC_THIN_BLOCK = 16
# gather-gemm-nhwc-runs applies up to this many output channels (beyond, gather-gemm-nhwc's C_out-long loops are
# long enough)
NHWC_RUNS_CHANNELS = 16

# scatter-gemm's chunk choice (``variants/scatter_gemm.chunks``): the GEMM rate and half sides it compares its
# chunkings with, GEMM efficiency credited to a chunk cut into slabs (relative to whole samples), seconds per
# (chunk, slab) of calls from the worker's loop. Fixed (never the profile's), so the chunks, hence the bits, are
# a function of the shapes alone.
CHUNK_GEMM_RATE = 100e9
CHUNK_GEMM_HALF = (24, 48, 32)
SLAB_DISCOUNT = 0.85
CHUNK_CALL = 20e-6

_lock = threading.Lock()
generation = 0  # bumped by every install: what a cache of estimates keys on


def derived(rates) -> dict:
    """The constants of a profile's family rates (``rates``: every name of :data:`REFERENCE`)."""
    out = {name: rates[family] * ratio for name, (family, ratio) in _DERIVED.items()}
    col2im = rates["col2im_element"]
    out["ROWS_STEP_PIXELS_MAJOR"] = {f: (a * col2im, b * col2im) for f, (a, b) in _ROWS_PIXELS_MAJOR.items()}
    out["ROWS_STEP_CHANNEL_MAJOR"] = {f: (a * col2im, b * col2im) for f, (a, b) in _ROWS_CHANNEL_MAJOR.items()}
    out["GEMM_HALF"] = tuple(float(h) for h in rates["gemm_half"])
    out["GEMM_THREADS"] = float(rates["gemm_threads"])
    return out


# The reference constants as a namespace: what the chunk choices read (Winograd's estimates its chunkings with
# them), so that the chunks never depend on the profile. Both chunk choices compare their chunkings at the one fixed
# GEMM rate CHUNK_GEMM_RATE: at REFERENCE's higher rate, Winograd's choice cut weight-heavy layers into chunks whose
# transforms outweighed their GEMMs on cores whose sgemm runs near CHUNK_GEMM_RATE.
CHUNK = SimpleNamespace(**{k: v for k, v in globals().items() if k.isupper()},
                        **derived(dict(REFERENCE, sgemm_peak=CHUNK_GEMM_RATE)))


def install(rates) -> None:
    """Make ``rates`` (a profile's family rates, validated by ``_profile``) the model's: every derived constant
    is replaced in one step (one dict update under the GIL: a reader sees the old set or the new one), then
    :data:`generation` moves on so that caches of estimates made before are not used again."""
    global generation
    new = derived(rates)
    with _lock:
        globals().update(new)
        generation += 1


globals().update(derived(REFERENCE))
