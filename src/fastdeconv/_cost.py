"""Cost model: which kernel variant runs a plan, and :func:`plan`, which says why.

Nine optimized variants implement the two data-flow forms:

``scatter-direct`` / ``gather-direct``
    numba kernels that walk the definition directly (``_kernels/scatter.py``, ``_kernels/gather.py``), run
    serially in the calling thread when the problem is tiny (waking the thread pool costs more than the work).
``scatter-gemm``
    ``cols = W^T @ X`` on BLAS (the channel contraction), then a parallel col2im (``_kernels/scatter_gemm.py``).
``gather-gemm-cols``
    scatter-gemm's chunks and GEMMs, then each output element sums its ``cols`` entries in a register and is
    stored once (``_kernels/scatter_gemm.py``): the gather form of weight-heavy layers.
``gather-gemm``
    per output phase, im2col of the undilated input and one GEMM (``_kernels/gather_gemm.py``).
``gather-winograd``
    Winograd F(2, r) on the output phases when each phase is an r-tap correlation with evenly spaced sources
    (``kernel % stride == 0``; dilation allowed; 1-D to 3-D): one GEMM per transform point with 1.78x (r = 2,
    2-D) to 2.25x (r = 3, 2-D) fewer multiplications than the definition (``_kernels/winograd.py``).
``gather-plane``
    one input channel per group (depthwise, single-channel), or few output channels per group (RGB output
    layers, class maps): per output phase and (input channel, tap) one contiguous run over a zero-bordered copy
    of a block of input rows, four terms per pass, three output channels at once (``_kernels/plane.py``).
``scatter-gemm-rows`` / ``gather-gemm-rows``
    per (sample, block of output rows) one GEMM over the input rows it needs, pixels-major
    ``cols (pixels, C_out_g * K) = X^T @ W`` when ``C_out_g * K`` is long enough for BLAS, else channel-major,
    then a footprint add (scatter) or per-output register sums (gather) (``_kernels/pixel_gemm.py``); wins when
    ``C_out_g * K`` is short (RGB output layers).

Each estimate is arithmetic time at a calibrated rate plus bytes moved at a calibrated bandwidth plus a
per-launch overhead. The constants (``_model``) are fitted to single-thread times on a 2-core AVX-512 machine
(fp32; fp64 runs at half the arithmetic rate); only their ratios matter for the choice. The variants themselves are
records of ``_registry``. ``method="auto"`` takes the cheapest
variant; ``method="scatter"``/``"gather"`` take the cheaper variant of that form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from math import prod as _prod

import numpy as np

from . import _calibrate, _registry
from . import _geometry as geo
from ._kernels import gather_gemm as _gg
from ._kernels import pixel_gemm as _pg
from ._kernels import plane as _pl
from ._kernels import scatter_gemm as _sg
from ._kernels import winograd as _wg
from ._model import (  # the fitted constants, under the names the formulas below use
    BANDWIDTH,
    COL2IM_ELEMENT,
    COL2IM_PLANE_TAP,
    COL2IM_WIDE_ELEMENT,
    DIRECT_CHANNEL_BLOCK,
    DIRECT_RATE,
    DIRECT_ROW_HALF,
    GATHER_DIRECT_LONG,
    GATHER_DIRECT_SHORT,
    GATHER_LONG_ROW,
    GEMM_HALF,
    GEMM_PEAK,
    IM2COL_ELEMENT,
    IM2COL_ROW,
    LAUNCH_GEMM,
    LAUNCH_PARALLEL,
    LAUNCH_POOL,
    LAUNCH_SERIAL,
    PHASE_RELAYOUT_ELEMENT,
    PHASE_STORE_ELEMENT,
    PIXEL_GEMM_COLUMNS,
    PIXEL_GEMM_GAIN_MAX,
    PIXEL_GEMM_GAIN_MIN,
    PLANE_FILL,
    PLANE_PASS,
    PLANE_PHASE,
    PLANE_SERIAL_WORK,
    PLANE_STORE,
    PLANE_TAP,
    PLANE_TAP_BLOCK,
    PLANE_WEIGHT,
    ROWS_STEP_CHANNEL_MAJOR,
    ROWS_STEP_PIXELS_MAJOR,
    SERIAL_WORK,
)
from ._threads import max_threads

VARIANTS = _registry.names()  # the nine optimized variants, in registry order
FORM_OF = _registry.FORM_OF



@dataclass(frozen=True)
class Choice:
    """The variant :func:`plan` expects fastest, and the estimated time of every variant.

    Attributes
    ----------
    method : str
        The data-flow form that runs: ``"scatter"``, ``"gather"`` or ``"zerofill"``.
    variant : str
        The kernel variant: ``"scatter-direct"``, ``"scatter-gemm"``, ``"scatter-gemm-rows"``, ``"gather-direct"``,
        ``"gather-gemm"``, ``"gather-gemm-rows"``, ``"gather-gemm-cols"``, ``"gather-winograd"``, ``"gather-plane"``
        or ``"zerofill"``.
    estimates : tuple of (str, float)
        Estimated seconds per call of each candidate variant, cheapest first.
    flops : int
        Floating-point operations of the definition (2 x multiply-adds; no zero is multiplied).
    threads : int
        Thread count the estimates are for: numba's pool size (``NUMBA_NUM_THREADS``). The choice never
        depends on :func:`fastdeconv.set_num_threads`, so results are bitwise identical across its values.
    serial : bool
        Whether a direct variant runs in the calling thread (tiny problems: waking the pool costs more than
        the work); the serial kernel runs the same tasks in the same order, so the result is the same.
    reason : str
        One line on why this variant wins.
    """

    method: str
    variant: str
    estimates: tuple[tuple[str, float], ...]
    flops: int
    threads: int
    serial: bool
    reason: str

    def __repr__(self) -> str:
        costs = ", ".join(f"{name}={_fmt_time(sec)}" for name, sec in self.estimates)
        return (f"Choice(method={self.method!r}, variant={self.variant!r}, flops={self.flops:.3g}, "
                f"threads={self.threads}, estimates: {costs}; {self.reason})")


def _fmt_time(sec: float) -> str:
    if sec >= 1:
        return f"{sec:.2f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.3g} ms"
    return f"{sec * 1e6:.3g} us"


def _gemm_time(flops: float, m: int, n: int, k: int, threads: int, scale: float) -> float:
    """Seconds of one GEMM of ``flops`` with sides (M, N, K) on ``threads`` cores."""
    if flops <= 0:
        return 0.0
    eff = 1.0
    for side, half in zip((m, n, k), GEMM_HALF):
        eff *= side / (side + half)
    # BLAS splits over M and N: small sides leave the second core without work
    usable = max(1.0, min(threads, (m * n) / 4096))
    return flops / (GEMM_PEAK * scale * eff * usable)


def _mem_time(nbytes: float, threads: int) -> float:
    """Seconds to stream ``nbytes`` on ``threads`` cores."""
    return nbytes / (BANDWIDTH * threads)


def estimate(plan: geo.Plan, threads: int) -> dict[str, float]:
    """Estimated seconds of each variant for ``plan`` on ``threads`` threads."""
    item = plan.dtype.itemsize
    scale = 1.0 if item == 4 else 0.5  # fp64 arithmetic runs at half the rate
    g = plan.groups
    cin_g, cout_g = plan.c_in // g, plan.c_out // g
    macs = plan.macs
    k = _prod(a.kernel for a in plan.axes)
    pix_in = _prod(a.size_in for a in plan.axes)
    pix_out = _prod(a.size_out for a in plan.axes)
    x_elems = plan.batch * plan.c_in * pix_in
    y_elems = plan.batch * plan.c_out * pix_out
    w_elems = plan.c_in * cout_g * k
    last = plan.axes[2]
    out = {}

    # direct kernels: rate grows with the contiguous run along the last axis and with channel blocking
    long_rows = last.stride > 1 and last.size_in >= GATHER_LONG_ROW
    for form, slower in (("scatter", 1.0), ("gather", GATHER_DIRECT_LONG if long_rows else GATHER_DIRECT_SHORT)):
        run = last.size_in
        row_eff = run / (run + DIRECT_ROW_HALF)
        block_eff = min(cout_g, DIRECT_CHANNEL_BLOCK) / DIRECT_CHANNEL_BLOCK
        rate = DIRECT_RATE * scale * row_eff * (0.3 + 0.7 * block_eff)
        work = (macs / rate + (x_elems + y_elems + w_elems) * item / BANDWIDTH) * slower
        serial = work + LAUNCH_SERIAL
        parallel = work / threads + LAUNCH_POOL  # chunks on the worker pool (``_kernels/_tasks.py``)
        out[f"{form}-direct"] = min(serial, parallel) if macs < SERIAL_WORK else parallel

    if _pl.applies(plan):
        # gather-plane: per phase, runs over a padded block of rows (``pitch`` columns per phase row, some of
        # them beyond the phase's outputs), four terms per pass, for one output channel or a block of them;
        # the store; the padded copy of the input rows; each task's weight table
        lay = _pl.layout(plan)
        pitch, block, cb = int(lay.geometry[3]), int(lay.geometry[4]), int(lay.geometry[6])
        computed = y_elems * pitch / max(1, int(lay.tables[2][0, 0]))
        taps = macs / max(1, y_elems)  # per output element, on average
        halo = (block + int(lay.geometry[1]) + 1) / block
        tasks = _pl.task_count(plan)
        passes = -(-cout_g // cb)  # per task and phase
        phases = tasks * passes * _prod(t.shape[0] for t in lay.tables[1:])  # phases with outputs
        if cb == 1:
            terms = computed * (taps * PLANE_TAP + -(-taps // 4) * PLANE_PASS)
        else:  # the last block of channels may compute zero-weight extras
            terms = computed * passes * cb / cout_g * taps * PLANE_TAP_BLOCK
        work = (terms + y_elems * PLANE_STORE + x_elems * halo * PLANE_FILL) * (1.0 if item == 4 else 1.5) \
            + phases * PLANE_PHASE + tasks * passes * cb * cin_g * k * PLANE_WEIGHT
        if macs < PLANE_SERIAL_WORK:  # in the calling thread (``_registry``: the same rule)
            out["gather-plane"] = work + LAUNCH_SERIAL
        else:  # chunks on the worker pool
            out["gather-plane"] = work / max(1, min(threads, tasks)) + LAUNCH_POOL

    if cin_g and cout_g and plan.batch:
        # scatter-gemm: GEMM (cout_g*K, n*P, cin_g) per chunk and slab, pack, cols written then read by col2im
        found = _sg.chunks(plan)
        if found is not None:
            n, cb, slab = found
            slabs = -(-plan.axes[_sg.slab_axis(plan)].size_in // max(1, slab))
            calls = g * -(-plan.batch // n) * -(-cout_g // cb)
            cols = plan.c_out * k * plan.batch * pix_in
            # col2im set-ups: per channel, depth, chunk and slab
            set_ups = plan.c_out * plan.axes[0].size_out * -(-plan.batch // n) * slabs
            workers = min(threads, calls)  # workers take whole chunks, each with single-threaded BLAS
            gemm = g * _gemm_time(2.0 * macs / g, cb * k, n * pix_in // slabs, cin_g, 1, scale) / workers
            pack = _mem_time(2 * x_elems * item, workers) if n > 1 else 0.0
            element = COL2IM_WIDE_ELEMENT if _sg.pixels_major(plan, n) else COL2IM_ELEMENT
            col2im = (cols * element + set_ups * k * COL2IM_PLANE_TAP) / workers
            out["scatter-gemm"] = gemm + pack + col2im + calls * slabs * LAUNCH_GEMM / workers + LAUNCH_PARALLEL
            # gather-gemm-cols: the same chunks and GEMMs, then per-output sums by phase (a later slab re-reads
            # the partial sums it adds to)
            element, store = ROWS_STEP_CHANNEL_MAJOR["gather"]
            gather = (cols * element + y_elems * store * min(slabs, 2)) / workers
            out["gather-gemm-cols"] = gemm + pack + gather + calls * slabs * LAUNCH_GEMM / workers + LAUNCH_PARALLEL

        # gather-gemm: weight relayout; per phase and output-channel block, im2col (C_in_g*T, cols),
        # GEMM (cb, cols, cin_g*T), store
        table = _gg.phase_table(plan)
        rows, cb = _gg.chunks(plan)
        c_blocks = -(-cout_g // cb)
        total = w_elems * PHASE_RELAYOUT_ELEMENT
        n_chunks = 0
        for _phase, m_shape, counts, _taps, _bases in table:
            n_t = int(counts[0] * counts[1] * counts[2])
            m_rows = plan.batch * int(m_shape[0] * m_shape[1])
            m_w = int(m_shape[2])
            if n_t == 0 or m_rows * m_w == 0:
                continue
            width = m_rows * m_w
            phase_macs = cin_g * n_t * cout_g * width * g
            chunks = g * c_blocks * -(-m_rows // rows)
            total += g * _gemm_time(2.0 * phase_macs / g, cb, min(rows, m_rows) * m_w, cin_g * n_t, 1, scale)
            total += c_blocks * plan.c_in * n_t * (width * IM2COL_ELEMENT + m_rows * IM2COL_ROW)
            total += plan.c_out * width * PHASE_STORE_ELEMENT + chunks * LAUNCH_GEMM
            n_chunks += chunks
        if _gg.bias_phases(plan):  # the bias stored first into every output (some phases have no tap)
            total += y_elems * PHASE_STORE_ELEMENT
        out["gather-gemm"] = total / max(1, min(threads, n_chunks)) + LAUNCH_PARALLEL

        # gather-winograd: F(2, r) on the output (sub-)phases (kernel % stride == 0); its own model
        winograd = _wg.estimate(plan, threads)
        if winograd is not None:
            out["gather-winograd"] = winograd + LAUNCH_PARALLEL

        # scatter-gemm-rows / gather-gemm-rows: per task (sample, block of output rows; halo rows recomputed)
        # one GEMM into cols, pixels-major (X^T @ W) when C_out_g*K is long enough, else channel-major, then a
        # footprint add (scatter) or per-output register sums (gather)
        task_list, max_pixels = _pg.tasks(plan)
        plane = plan.axes[0].size_in * plan.axes[2].size_in
        pixels = sum(t[2] * (t[6] - t[5]) * plane for t in task_list)  # per group, incl. halo rows
        workers = max(1, min(threads, len(task_list)))
        width = cout_g * k
        major = _pg.pixels_major(plan)
        gain = min(PIXEL_GEMM_GAIN_MAX, max(PIXEL_GEMM_GAIN_MIN, width / PIXEL_GEMM_COLUMNS)) if major else 1.0
        gemm_macs = pixels * cin_g * width  # all groups (tasks run per group)
        gemm = _gemm_time(2.0 * gemm_macs, width, max(1, max_pixels), cin_g, 1, scale) / gain
        cols_elems = pixels * width
        fixed = (w_elems * PHASE_RELAYOUT_ELEMENT if major else 0.0) + len(task_list) * LAUNCH_GEMM
        constants = ROWS_STEP_PIXELS_MAJOR if major else ROWS_STEP_CHANNEL_MAJOR
        for form, (element, store) in constants.items():
            step = cols_elems * element + y_elems * store
            out[f"{form}-gemm-rows"] = (gemm + step + fixed) / workers + LAUNCH_PARALLEL
    return out


@lru_cache(maxsize=512)
def estimates(plan: geo.Plan, threads: int) -> dict[str, float]:
    """:func:`estimate`, cached per (plan, threads): the registry's ``cost`` of each variant reads it."""
    return estimate(plan, threads)


def scratch_elements(plan: geo.Plan, variant: str, kept: bool = False) -> int:
    """Scratch (elements, all workers) one call of ``variant`` allocates; the direct kernels' is negligible.
    ``kept``: with the weight-only work done once (an operator's packed weights are not per-call scratch)."""
    return _registry.get(variant).scratch_elements(plan, kept)


def choose(plan: geo.Plan, kept: bool = False) -> Choice:
    """The :class:`Choice` for a plan (cached; independent of the current thread count). ``kept``: for an
    operator, whose weight-only work (``Variant.pack``) is done once: its cost and memory are not per call."""
    return _choose(plan, kept)


@lru_cache(maxsize=512)
def _choose(plan: geo.Plan, kept: bool) -> Choice:
    flops = 2 * plan.macs
    if plan.method == "zerofill":
        return Choice("zerofill", "zerofill", (), flops, max_threads(), False,
                      "zerofill was requested: the textbook baseline (zero-insert, pad, dense correlation)")
    # the ranking uses the pool size, not the current count: the variant (and so every bit of the result) must
    # not change with set_num_threads; only whether a direct kernel runs serially does (same terms, same order)
    pool = max_threads()
    costs = {}
    for v in _registry.VARIANTS.values():
        if v.form != "zerofill" and v.applies(plan):
            cost = v.estimate(plan, pool, kept)
            if cost is not None:
                costs[v.name] = cost
    # the memory rule: no variant whose scratch exceeds one output's size (the direct kernels have none)
    output = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    candidates = {v: c for v, c in costs.items() if (plan.method == "auto" or FORM_OF[v] == plan.method)
                  and scratch_elements(plan, v, kept) <= output}
    if plan.variant in costs:  # fixed by the caller (the Dask twin's blocks run the whole call's variant, which
        # applies to them: the memory rule is the whole call's, checked there)
        candidates = {plan.variant: costs[plan.variant]}
    ranked = tuple(sorted(candidates.items(), key=lambda kv: kv[1]))
    variant, best = ranked[0]
    serial = runs_serially(plan, variant)
    if len(ranked) > 1:
        runner_up, second = ranked[1]
        why = f"{variant} is estimated {second / best:.2f}x faster than {runner_up}"
    else:
        why = f"{variant} is the only candidate"
    reason = _registry.get(variant).reason
    if reason:
        why += f" ({reason})"
    elif serial:
        why += " (tiny problem: runs in the calling thread)"
    scope = "" if plan.method == "auto" else f" among the {plan.method} variants"
    return Choice(FORM_OF[variant], variant, ranked, flops, pool, serial, why + scope)


def plan(x_shape, w_shape, *, stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1,
         output_size=None, method: str = "auto", dtype=np.float32) -> Choice:
    """Which variant ``conv_transpose`` runs for these shapes, and the estimated cost of every variant.

    Parameters
    ----------
    x_shape : sequence of int
        Input shape (N, C_in, *spatial) or unbatched (C_in, *spatial).
    w_shape : sequence of int
        Weight shape (C_in, C_out // groups, *kernel).
    stride, padding, output_padding, groups, dilation, output_size
        The geometry, exactly as for :func:`fastdeconv.conv_transpose`.
    method : {"auto", "scatter", "gather", "zerofill"}
        The requested form; ``"auto"`` compares all variants.
    dtype : numpy dtype, default float32
        Data type of x and weight (float32, or anything else meaning float64).

    Returns
    -------
    Choice
        ``method`` (form that runs), ``variant``, ``estimates`` (seconds per variant, cheapest first),
        ``flops``, ``threads``, ``serial`` and a one-line ``reason``. When the model rates several
        variants within 1.6x of each other, the first ``conv_transpose`` call of these shapes times them and
        keeps the fastest (a one-time calibration, stored on disk); ``plan`` then reports that measured
        choice and the times.

    Raises
    ------
    TypeError, ValueError
        For shapes or geometry that ``conv_transpose`` would refuse, with the same messages.

    Examples
    --------
    >>> import fastdeconv as fd
    >>> fd.plan((64, 512, 4, 4), (512, 256, 4, 4), stride=2, padding=1).variant
    'scatter-gemm'
    """
    x_shape = _shape(x_shape, "x_shape")
    w_shape = _shape(w_shape, "w_shape")
    dt = np.dtype(dtype)
    p = geo.make_plan(x_shape, w_shape, dt, dt, stride, padding, output_padding, groups, dilation, output_size,
                      method)
    return current(p)


def current(plan: geo.Plan) -> Choice:
    """The :class:`Choice` a call of ``plan`` runs now: the model's, or the measured one recorded for it."""
    choice = choose(plan)
    variant, record = _calibrate.current(plan, choice.estimates) if choice.estimates else (choice.variant, None)
    if record is None:
        return choice
    measured = ", ".join(f"{name}={_fmt_time(sec)}" for name, sec in sorted(record["seconds"].items(),
                                                                            key=lambda kv: kv[1]))
    if variant == choice.variant:  # a tie, or the model's pick measured fastest
        return dataclasses.replace(choice, reason=f"{choice.reason}; measured on this machine ({measured}), "
                                                  "no other candidate consistently faster")
    return dataclasses.replace(choice, method=FORM_OF[variant], variant=variant,
                               serial=runs_serially(plan, variant),
                               reason=f"measured fastest on this machine ({measured}); the model alone would "
                                      f"pick {choice.variant}")


def runs_serially(plan: geo.Plan, variant: str) -> bool:
    """Whether ``variant`` runs in the calling thread: a direct kernel on a tiny problem."""
    return _registry.get(variant).serial(plan)


def _shape(shape, name: str) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or np.ndim(shape) != 1:
        raise TypeError(f"{name} must be a sequence of ints, got {shape!r}")
    values = tuple(geo.as_int(v, name) for v in shape)
    if any(v < 0 for v in values):
        raise ValueError(f"{name} entries must be >= 0, got {values}")
    return values
