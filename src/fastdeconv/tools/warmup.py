"""``python -m fastdeconv warmup``: compile every kernel into numba's on-disk cache, once, on every core.

numba compiles a kernel the first time it is called with a new signature (seconds per kernel) and, with
``cache=True``, stores the machine code beside the module, so later processes only load it (tens of
milliseconds). Without a warm-up the first call of a layer pays the compilation of whichever variant it runs.
Here each variant (and the zero-fill baseline, the forward convolution, the gradients and ``zero_fill``) is run
on tiny representative layers for every dtype, several variants at once in worker processes that each
compile a disjoint set of them; then (with float32) the machine profile is measured on the compiled kernels and
stored (``fastdeconv.machine``), so that ``auto`` decides from this machine's full profile.

:func:`tasks` is the one list of what gets compiled.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from .. import _interrupts

DTYPES = ("float32", "float64")

# Tiny layers that together make every variant applicable, with each of its kernels where it has several
# (scatter-direct walks the definition below TINY_WORK multiply-adds with a kernel of its own; the serial and
# the parallel paths of a kernel are one compiled kernel): (x shape, weight shape, keyword arguments).
GEOMETRIES: tuple[tuple[tuple[int, ...], tuple[int, ...], dict], ...] = (
    ((1, 4, 3, 3), (4, 2, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),  # tiny: walks the definition
    ((2, 8, 8, 8), (8, 8, 3, 3), {"stride": 1, "padding": 1}),  # serial direct kernels, 3x3 stride 1
    ((2, 32, 8, 8), (32, 16, 4, 4), {"stride": 2, "padding": 1}),  # DCGAN-like: GEMM and Winograd variants
    ((8, 32, 4, 4), (32, 16, 4, 4), {"stride": 2, "padding": 1}),  # small samples, one per chunk
    ((64, 8, 4, 4), (8, 16, 4, 4), {"stride": 2, "padding": 1}),  # DCGAN batch: sample-minor blocks of samples
    ((2, 16, 16, 16), (16, 3, 4, 4), {"stride": 2, "padding": 1}),  # RGB output: plane and row-block variants
    ((1, 8, 32, 32), (8, 1, 4, 4), {"stride": 2, "padding": 1, "groups": 8}),  # depthwise / bilinear
    ((1, 1, 96, 96), (1, 1, 4, 4), {"stride": 2, "padding": 1}),  # single-channel image, parallel
    ((1, 16, 48), (16, 8, 64), {"stride": 32}),  # 1-D wide stride: pixels-major GEMM
    ((1, 16, 64), (16, 8, 6), {"stride": 2, "padding": 2}),  # 1-D GAN-like: interleaved col2im
    ((1, 8, 4, 4, 4), (8, 4, 2, 2, 2), {"stride": 2}),  # 3-D up-convolution
    ((1, 8, 12, 12), (8, 8, 3, 3), {"stride": 1, "padding": 2, "dilation": 2}),  # dilated
)
# The other numba kernels: the zero-fill baseline, the forward convolution (direct and GEMM), its gradients, and
# the channels-last routes that transpose around a channels-first variant ("channels_last").
EXTRAS = ("zerofill", "conv", "backward", "zero_fill", "channels_last")


def _native_channels_last() -> tuple[str, ...]:
    """The channels-last variants with kernels of their own (not a transposing route to a channels-first one)."""
    from .. import variants

    routes = {"transpose-" + name for name in variants.names(baseline=True)}
    return tuple(n for n in variants.names(layout="channels_last") if n not in routes)


def tasks(dtypes: Sequence[str] = DTYPES) -> list[tuple[str, str]]:
    """What warm-up compiles: ``(variant or extra, dtype)`` pairs, each a disjoint unit of work.

    Every variant of the list (``fastdeconv.variants``, both layouts) is listed; :func:`run_task` runs it,
    forced, on each representative geometry where it applies, with the value check of the variants that have
    one. The units whose compiles take longest come first, each with its dtypes side by side, so that the
    workers finish together rather than one compiling the last long unit alone.
    """
    from .. import variants

    names = (["conv", "backward"] + list(_native_channels_last()) + list(variants.names())
             + ["channels_last", "zerofill", "zero_fill"])
    return [(name, dtype) for name in names for dtype in dtypes]


def plan_format(record) -> str:
    return "channels_last" if record.channels_last else "channels_first"


def forced(variant: str, x, w, kw: dict) -> bool:
    """Run ``variant`` on (x, w) whatever the cost model would pick; False when it does not apply there."""
    import numpy as np

    from .. import _geometry as geo
    from .. import variants
    from .._scan import max_abs

    record = variants.get(variant)
    if record.channels_last:  # (N, *spatial, C) data
        x = np.ascontiguousarray(np.moveaxis(x, x.ndim - w.ndim + 1, -1))
    plan = geo.make_plan(x.shape, w.shape, x.dtype, w.dtype, kw.get("stride", 1), kw.get("padding", 0),
                         kw.get("output_padding", 0), kw.get("groups", 1), kw.get("dilation", 1),
                         options=geo.PlanOptions(data_format=plan_format(record)))
    if not (record.applies(plan) and record.candidate_for(plan, record.form)) or record.estimate(plan, 1) is None:
        return False
    spatial_in, spatial_out = tuple(a.size_in for a in plan.axes), tuple(a.size_out for a in plan.axes)
    if plan.channels_last:
        x5 = x.reshape((plan.batch,) + spatial_in + (plan.c_in,))
        y5 = np.empty((plan.batch,) + spatial_out + (plan.c_out,), plan.dtype)
    else:
        x5 = x.reshape((plan.batch, plan.c_in) + spatial_in)
        y5 = np.empty((plan.batch, plan.c_out) + spatial_out, plan.dtype)
    w5 = w.reshape((plan.c_in, plan.c_out // plan.groups) + tuple(a.kernel for a in plan.axes))
    if record.check is not None:
        record.check(plan, x5, max_abs(w5))
    variants.forced(variant, plan, x5, w5, np.zeros(plan.c_out, plan.dtype), y5)
    return True


def run_task(name: str, dtype: str) -> tuple[str, str, float, int, list[str]]:
    """Compile (by running) one unit of :func:`tasks`; returns (name, dtype, seconds, layers run, errors)."""
    import numpy as np

    import fastdeconv as fd

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    ran, errors = 0, []
    for x_shape, w_shape, kw in GEOMETRIES:
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        try:
            if name == "conv":  # the forward convolution (the adjoint: same weight array, output -> input)
                y = fd.conv_transpose(x, w, **kw)
                geometry = {"stride": kw.get("stride", 1), "padding": kw.get("padding", 0),
                            "dilation": kw.get("dilation", 1), "groups": kw.get("groups", 1)}
                fd.conv(y, w, **geometry)
                fd.conv_matrix(w, y.shape[2:], **geometry)
            elif name == "backward":
                y = fd.conv_transpose(x, w, **kw)
                fd.conv_transpose_backward(y, x, w, **kw)
            elif name == "zero_fill":
                fd.zero_fill(x, kw.get("stride", 1), kw.get("padding", 0))
            elif name == "channels_last":  # the transposing channels-last routes, forced, on channels-last data
                from .. import variants

                natives = _native_channels_last()
                if not any([forced(v, x, w, kw) for v in variants.names(baseline=True, layout=name)
                            if v not in natives]):
                    continue
            elif not forced(name, x, w, kw):
                continue
            ran += 1
        except Exception as exc:  # reported, and the other units still compile
            errors.append(f"{name} {dtype} on x{x_shape} w{w_shape} {kw}: {type(exc).__name__}: {exc}")
    return name, dtype, time.perf_counter() - t0, ran, errors


def worker_init() -> None:
    from .._compiled import no_children

    os.environ["FASTDECONV_CALIBRATE"] = "0"  # forced variants only: nothing to measure or record
    no_children()  # (the workers already compile on every core)
    # A Ctrl-C reaches every process of the terminal's group: the parent stops the workers, and a worker goes on
    # compiling until then, rather than failing its unit and taking the next
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Bar:
    """tqdm when installed, else one plain line per finished unit (or nothing)."""

    def __init__(self, total: int, enabled: bool, write: Callable[[str], None]):
        self.bar, self.total, self.done, self.write = None, total, 0, write
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, unit="kernel set", desc="warmup")
            except ImportError:
                pass

    def step(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(label)
            self.bar.update(1)
        elif self.enabled:
            self.write(f"[{self.done}/{self.total}] {label}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def warmup(dtypes: Sequence[str] = DTYPES, jobs: int | None = None, progress: bool = True,
           write: Callable[[str], None] = print) -> dict:
    """Compile every kernel for ``dtypes`` into numba's on-disk cache.

    Parameters
    ----------
    dtypes : sequence of {"float32", "float64"}
        The dtypes to compile for (each is a separate set of machine code).
    jobs : int, optional
        Worker processes (default: the number of CPU cores). With 1 everything runs in this process.
    progress : bool
        Show a progress bar (tqdm when installed, else a line per finished unit).
    write : callable
        Receives the summary line (and the progress lines without tqdm).

    Returns
    -------
    dict
        ``seconds`` (wall time), ``jobs``, ``errors`` (one line per layer that failed to run) and ``units``
        (one entry per :func:`tasks` unit: name, dtype, seconds, layers run).

    Raises
    ------
    ValueError
        An unknown dtype, or ``jobs`` < 1.
    """
    dtypes = list(dtypes)
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise ValueError(f"dtypes must be among {', '.join(DTYPES)}, got {dtypes!r}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    units = tasks(dtypes)
    bar = _Bar(len(units), progress, write)
    t0 = time.perf_counter()
    done = []
    try:
        if jobs == 1:
            os.environ["FASTDECONV_CALIBRATE"] = "0"
            for unit in units:
                done.append(run_task(*unit))
                bar.step(f"{unit[0]} {unit[1]} {done[-1][2]:.1f} s")
        else:
            import multiprocessing

            # spawn: a fresh interpreter per worker (numba's threading layer must not be forked)
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=worker_init)
            try:
                futures = [pool.submit(run_task, *unit) for unit in units]
                for ok, result in _interrupts.results_as_completed(futures):
                    if not ok:
                        raise result
                    done.append(result)
                    bar.step(f"{done[-1][0]} {done[-1][1]} {done[-1][2]:.1f} s")
            except BaseException:  # a Ctrl-C above all: the workers stop now, not after every queued unit
                _interrupts.stop_workers(pool)
                raise
            pool.shutdown()
    finally:
        bar.close()
    profile_seconds = None
    if "float32" in dtypes:  # the machine profile, on the kernels just compiled (``fastdeconv.machine``)
        from .. import machine

        profile_seconds = machine.measure(full=True)["seconds"]
    seconds = time.perf_counter() - t0
    errors = [e for unit in done for e in unit[4]]
    for error in errors:
        write(f"warmup: FAILED {error}")
    write(f"warmup: {len(units)} kernel set(s) ({', '.join(dtypes)}) compiled into numba's cache in {seconds:.1f} s "
          f"with {jobs} process(es)" + (f"; {len(errors)} failure(s)" if errors else "")
          + (f"; machine profile measured in {profile_seconds:.2f} s" if profile_seconds is not None else ""))
    return {"seconds": seconds, "jobs": jobs, "errors": errors, "profile_seconds": profile_seconds,
            "units": [{"name": n, "dtype": d, "seconds": s, "layers": r} for n, d, s, r, _ in done]}
