"""The planner: which kernel variant runs a plan, and :func:`plan`, which says why.

The variants are the records of :mod:`fastdeconv.variants`, one module each (what each one does, when it applies
and its estimate are there). The planner ranks what the records say and names none of them: among the variants
that apply to the plan and are of the requested form (``auto``: every variant but a ``baseline``), those whose
schedule keeps the memory rule (scratch within one output's size), cheapest estimate first. A requested form
whose only variant is a baseline runs it unranked. Each estimate is arithmetic time at a measured rate plus
bytes moved at a measured bandwidth plus a per-launch overhead: the rates are this machine's profile
(``_profile``), the within-family ratios fixed facts of the kernels (``_model``). A pinned variant (``method=``
a variant's name) runs unranked, refused where it does not apply. The planner's input is a plan (the problem)
and a request (``_geometry.Request``: the form asked for, a variant pinned); its answer, a :class:`Choice`, is
cached per (plan, request, kept) and profile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import prod as _prod

import numpy as np

from . import _calibrate, _model, _profile, variants
from . import _geometry as geo
from ._caches import memo
from ._threads import max_threads

VARIANTS = variants.names()  # the variants ``auto`` ranks, in list order
FORM_OF = variants.FORM_OF


@dataclass(frozen=True)
class Choice:
    """The variant :func:`plan` expects fastest, and the estimated time of every variant.

    Attributes
    ----------
    method : str
        The data-flow form that runs (the variant's ``form``: one of the methods but ``"auto"``).
    variant : str
        The kernel variant: the name of one of :mod:`fastdeconv.variants`' records (``fastdeconv.variants.names``).
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

    def ranking(self) -> tuple[tuple[str, float], ...]:
        """What a decision starts from: the estimates, or the unranked pick alone (a requested baseline)."""
        return self.estimates or ((self.variant, 0.0),)

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


def _ranked(plan: geo.Plan, request: geo.Request) -> list[variants.Variant]:
    """The variants the planner may rank for ``plan``: those of the requested form (``auto``: all but the
    baselines) that apply and are candidates for the request."""
    method = request.method
    return [v for v in variants.VARIANT_LIST if v.applies(plan) and v.candidate_for(plan, method)
            and (v.form == method if method != "auto" else not v.baseline)]


def estimate(plan: geo.Plan, threads: int) -> dict[str, float]:
    """Estimated seconds on ``threads`` threads of each variant ``auto`` ranks that a one-off call of ``plan`` can
    run (before the memory rule on scratch)."""
    _profile.ensure()
    out = {}
    for v in variants.VARIANT_LIST:
        if not v.baseline and v.applies(plan) and v.candidate_for(plan, "auto"):
            seconds = v.estimate(plan, threads)
            if seconds is not None:
                out[v.name] = seconds
    return out


def scratch_elements(plan: geo.Plan, variant: str, kept: bool = False) -> int:
    """Scratch (elements, all workers) one call of ``variant`` allocates; the direct kernels' is negligible.
    ``kept``: with the weight-only work done once (an operator's packed weights are not per-call scratch)."""
    return variants.get(variant).scratch_elements(plan, kept)


def choose(plan: geo.Plan, request: geo.Request = geo.AUTO, kept: bool = False) -> Choice:
    """The :class:`Choice` for a plan and request (cached; independent of the current thread count). ``kept``:
    for an operator, whose weight-only work (``Variant.pack``) is done once: its cost and memory are not per
    call."""
    _profile.ensure()
    return _choose(plan, request, kept, _model.generation)


@memo(512)
def _choose(plan: geo.Plan, request: geo.Request, kept: bool, generation: int) -> Choice:
    """(``generation``: the model's, so that a choice made on another profile is never reused)"""
    flops = 2 * plan.macs
    # the ranking uses the pool size, not the current count: the variant (and so every bit of the result) must
    # not change with set_num_threads; only whether a direct kernel runs serially does (same terms, same order)
    pool = max_threads()
    allowed = _ranked(plan, request)
    if allowed and all(v.baseline for v in allowed):  # a baseline was asked for: nothing to rank
        v = allowed[0]
        return Choice(v.form, v.name, (), flops, pool, v.serial(plan), f"{v.name} was requested: {v.reason}")
    costs = {}
    for v in allowed:
        cost = v.estimate(plan, pool, kept)
        if cost is not None:
            costs[v.name] = cost
    # the memory rule: no variant whose scratch exceeds one output's size (the direct kernels have none)
    output = plan.batch * plan.c_out * _prod(a.size_out for a in plan.axes)
    candidates = {v: c for v, c in costs.items() if scratch_elements(plan, v, kept) <= output}
    if request.variant in costs:  # fixed by the caller (the Dask twin's blocks run the whole call's variant,
        # which applies to them: the memory rule is the whole call's, checked there)
        candidates = {request.variant: costs[request.variant]}
    if not candidates and costs:  # every candidate needs more scratch than the output (a requested form on a
        # small layer, e.g. a transposing route whose copy of x outgrows y): the least scratch, not a failure
        least = min(costs, key=lambda v: (scratch_elements(plan, v, kept), costs[v]))
        candidates = {least: costs[least]}
    if not candidates:
        raise ValueError(f"method {request.method!r}: no variant of that form can run this layer")
    ranked = tuple(sorted(candidates.items(), key=lambda kv: kv[1]))
    variant, best = ranked[0]
    serial = runs_serially(plan, variant)
    if len(ranked) > 1:
        runner_up, second = ranked[1]
        why = f"{variant} is estimated {second / best:.2f}x faster than {runner_up}"
    else:
        why = f"{variant} is the only candidate"
    reason = variants.get(variant).reason
    if reason:
        why += f" ({reason})"
    elif serial:
        why += " (tiny problem: runs in the calling thread)"
    scope = "" if request.method == "auto" else f" among the {request.method} variants"
    return Choice(FORM_OF[variant], variant, ranked, flops, pool, serial, why + scope)


def plan(x_shape, w_shape, *, stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1,
         output_size=None, method: str = "auto", dtype=np.float32, data_format: str = "channels_first") -> Choice:
    """Which variant ``conv_transpose`` runs for these shapes, and the estimated cost of every variant.

    Parameters
    ----------
    x_shape : sequence of int
        Input shape (N, C_in, *spatial) or unbatched (C_in, *spatial).
    w_shape : sequence of int
        Weight shape (C_in, C_out // groups, *kernel).
    stride, padding, output_padding, groups, dilation, output_size
        The geometry, exactly as for :func:`fastdeconv.conv_transpose`.
    method : {"auto", "scatter", "gather", "zerofill"} or a variant's name
        The requested form; ``"auto"`` compares all variants; a variant's name (``fastdeconv.variants()``) pins
        it (a ValueError lists the applicable variants where it does not apply).
    dtype : numpy dtype, default float32
        Data type of x and weight (float32, or anything else meaning float64).
    data_format : {"channels_first", "channels_last"}
        The layout of x, as for :func:`fastdeconv.conv_transpose` (channels-last: x_shape is (N, *spatial, C_in)).

    Returns
    -------
    Choice
        ``method`` (form that runs), ``variant``, ``estimates`` (seconds per variant, cheapest first),
        ``flops``, ``threads``, ``serial`` and a one-line ``reason``. The estimates come from the cost model on
        this machine's profile (:mod:`fastdeconv.machine`); nothing is timed. When wisdom is recorded for these
        shapes (``ConvTranspose(..., tune=True)``, ``python -m fastdeconv tune``, or imported: see
        :mod:`fastdeconv.calibration`), ``plan`` reports that measured choice and the times.

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
    x_shape = check_shape(x_shape, "x_shape")
    w_shape = check_shape(w_shape, "w_shape")
    dt = np.dtype(dtype)
    request = geo.make_request(method)
    p = geo.make_plan(x_shape, w_shape, dt, dt, stride, padding, output_padding, groups, dilation, output_size,
                      options=geo.PlanOptions(data_format=data_format))
    choice = current(p, request)
    check_pinned(p, request, choice)
    return choice


def current(plan: geo.Plan, request: geo.Request = geo.AUTO) -> Choice:
    """The :class:`Choice` a call of ``plan`` runs now: the model's, or the measured one recorded for it."""
    choice = choose(plan, request)
    variant, record = _calibrate.current(plan, choice.estimates, request=request) if choice.estimates else \
        (choice.variant, None)
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


def _kept_only(plan: geo.Plan, request: geo.Request, pool: int) -> bool:
    """Whether the pinned variant applies but only an operator can run it (its one-off schedule breaks the memory
    rule): the one-off ranking then stands, and a one-off call refuses it (:func:`check_pinned`)."""
    v = variants.get(request.variant)
    return v.applies(plan) and v.candidate_for(plan, request.method) and v.estimate(plan, pool, True) is not None


def refuse(plan: geo.Plan, request: geo.Request, kept: bool = False) -> None:
    """The ValueError of a variant pinned by ``method=`` where it cannot run, listing those that can."""
    pool = max_threads()
    usable = [v.name for v in variants.VARIANT_LIST if v.applies(plan) and v.candidate_for(plan, request.method)
              and v.estimate(plan, pool, kept) is not None]
    where = "an operator" if kept else "a one-off call (an operator, which keeps its packed weights, may run it)" \
        if _kept_only(plan, request, pool) else "this layer"
    raise ValueError(f"method {request.variant!r} does not apply to {where}: input {plan.batch}x{plan.c_in}, weight "
                     f"{plan.c_in}x{plan.c_out // plan.groups}x"
                     f"{'x'.join(str(a.kernel) for a in plan.axes[3 - plan.rank:])}, groups {plan.groups}; "
                     f"variants that apply: {', '.join(usable)}")


def check_pinned(plan: geo.Plan, request: geo.Request, choice: Choice, kept: bool = False) -> None:
    """Refuse a variant pinned by ``method=`` that the choice could not honour (it does not apply, or only an
    operator can run it). The user's entry points call it; a variant fixed inside (the Dask twin's blocks, which
    run the whole call's variant where it applies to them) is not refused: ``choose`` ranks the others then."""
    if request.variant is not None and choice.variant != request.variant:
        refuse(plan, request, kept)


def runs_serially(plan: geo.Plan, variant: str) -> bool:
    """Whether ``variant`` runs in the calling thread: a direct kernel on a tiny problem."""
    return variants.get(variant).serial(plan)


def check_shape(shape, name: str) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or np.ndim(shape) != 1:
        raise TypeError(f"{name} must be a sequence of ints, got {shape!r}")
    values = tuple(geo.as_int(v, name) for v in shape)
    if any(v < 0 for v in values):
        raise ValueError(f"{name} entries must be >= 0, got {values}")
    return values
