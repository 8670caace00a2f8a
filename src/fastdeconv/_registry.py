"""The variant registry: one record per kernel variant (the nine optimized ones and ``zerofill``).

Everything that needs to know the variants reads them from here: the cost model (``_cost``: which apply, their
estimates, the memory rule, the reason ``plan`` prints), the dispatcher (``_api._Prepared``), the operator
(``_operator.ConvTranspose``: the weight packed once per variant), the calibration, and the tests that force a
variant. Adding a variant is one record below plus its kernel module.

A record's functions take a :class:`~fastdeconv._geometry.Plan`:

``applies(plan)``
    whether the variant can run the plan at all (the memory rule is checked separately, from ``scratch``);
``cost(plan, threads)``
    estimated seconds of one call on ``threads`` threads (None: does not apply);
``scratch(plan)``
    elements one call allocates beside the output (all workers; what ``call_pack`` makes per call included);
``pack(pack_input(plan), w5)``
    the weight-only work of the variant, done once and kept by an operator: the weight (C_in, C_out_g, kd, kh, kw)
    in the plan's dtype, C-contiguous, is turned into whatever ``run`` reads (itself, a relayout, transformed
    weights);
``pack_input(plan)``
    everything ``pack`` reads besides the weight, hashable: the plan reduced to what the pack depends on (by
    default the weight's geometry alone: ``weight_plan``), or a variant's own spec. ``pack`` gets nothing else,
    so an operator keys its kept packs by it (with the variant and dtype): plans with equal inputs share a pack,
    and no plan can get a pack made for inputs it does not have (e.g. another set of output phases);
``call_pack(plan, w5)``
    the same for a one-off ``conv_transpose`` call (defaults to ``pack(pack_input(plan), w5)``; a variant may
    instead hand ``run`` the weight itself and re-lay it out chunk by chunk, when a whole relayout per call would
    break the memory rule);
``run(plan, x5, packed, bias, y5)``
    writes every element of ``y5`` from the canonical 5-D input, the packed weight and the bias vector;
``serial(plan)``
    whether the variant runs in the calling thread (tiny problems);
``kernels()``
    the numba entry points its Python driver calls (their callees compile and load with them); a tuple inside
    holds alternatives, one of which runs depending on the geometry (readiness: ``_compiled.groups_ready``;
    warm-up: :func:`dispatchers`).

``kept_cost`` / ``kept_scratch`` are the cost and scratch when the weight was packed once (an operator), for the
variants where that differs. ``exact`` says whether the variant gives the definition's finite/Inf/NaN pattern
on any input (it multiplies no padding zero and no transform mixes the terms); ``check(plan, x5, w5)`` of a
variant that is not exact says whether the call's values give that pattern anyway (otherwise ``_api`` runs the
cheapest exact gather variant); the zero-fill baseline is neither exact nor checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from . import _geometry as geo
from ._kernels import gather as _gd
from ._kernels import gather_gemm as _gg
from ._kernels import pixel_gemm as _pg
from ._kernels import plane as _pl
from ._kernels import scan as _scan
from ._kernels import scatter as _sd
from ._kernels import scatter_gemm as _sg
from ._kernels import winograd as _wg
from ._kernels import zerofill as _zf
from ._kernels._blocks import CHANNEL_BLOCK
from ._kernels.conv import correlate, correlate_tasks
from ._tiling import tile_for


def _same(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """The pack of the variants that read the weight as it is (in the plan's dtype, C-contiguous)."""
    return w5


@lru_cache(maxsize=256)
def weight_plan(plan: geo.Plan) -> geo.Plan:
    """The plan reduced to the weight's geometry (channels, groups, kernel, dtype): the ``pack_input`` of the
    variants whose pack depends on nothing else (no size, stride, dilation or crop)."""
    axes = tuple(geo.Axis(1, a.kernel, 1, 1, 0, 1) for a in plan.axes)
    return replace(plan, batch=1, batched=True, axes=axes, method="auto", variant=None)


def _none(plan: geo.Plan) -> int:
    return 0


def _never(plan: geo.Plan) -> bool:
    return False


@dataclass(frozen=True)
class Variant:
    """One kernel variant (see the module docstring for what each function does)."""

    name: str
    form: str  # "scatter" | "gather" | "zerofill"
    applies: Callable[[geo.Plan], bool]
    cost: Callable[[geo.Plan, int], float | None]
    scratch: Callable[[geo.Plan], int]
    pack: Callable[[Hashable, np.ndarray], object]  # (pack_input(plan), w5)
    run: Callable[..., None]
    serial: Callable[[geo.Plan], bool]
    reason: str  # why it is fast, in a few words ("" for none): the parenthesis of ``plan``'s reason
    kernels: Callable[[], tuple]
    exact: bool
    call_pack: Callable[[geo.Plan, np.ndarray], object] | None = None
    pack_input: Callable[[geo.Plan], Hashable] = weight_plan
    kept_cost: Callable[[geo.Plan, int], float | None] | None = None
    kept_scratch: Callable[[geo.Plan], int] | None = None
    # the direct kernels' fast path: ``(kernel, args)`` called as ``kernel(x5, w5, bias, y5, *args)``
    direct: Callable[[geo.Plan], tuple] | None = None
    # a variant that is not exact: ``check(plan, x5, w_max)`` says whether these values (``w_max``: the weight's
    # ``scan.max_abs``) give the definition's finite/Inf/NaN pattern anyway (else the call runs an exact variant:
    # ``_api.exact_plan``)
    check: Callable[[geo.Plan, np.ndarray, float], bool] | None = None

    def packed_for_call(self, plan: geo.Plan, w5: np.ndarray) -> object:
        """What a one-off call hands ``run``."""
        if self.call_pack is not None:
            return self.call_pack(plan, w5)
        return self.pack(self.pack_input(plan), w5)

    def estimate(self, plan: geo.Plan, threads: int, kept: bool = False) -> float | None:
        return (self.kept_cost if kept and self.kept_cost is not None else self.cost)(plan, threads)

    def scratch_elements(self, plan: geo.Plan, kept: bool = False) -> int:
        return (self.kept_scratch if kept and self.kept_scratch is not None else self.scratch)(plan)


# --------------------------------------------------------------------------- the records' functions


def _estimated(name: str) -> Callable[[geo.Plan, int], float | None]:
    """The variant's estimate from the cost model's table (``_cost.estimate``: its formulas share terms)."""

    def cost(plan: geo.Plan, threads: int) -> float | None:
        from . import _cost  # (``_cost`` reads this registry)

        return _cost.estimates(plan, threads).get(name)

    return cost


def _runs_serially(plan: geo.Plan) -> bool:
    """A direct kernel on a small problem: handing chunks to the worker pool costs more than it saves."""
    from . import _model

    return plan.macs < _model.SERIAL_WORK


def _plane_serially(plan: geo.Plan) -> bool:
    """gather-plane on a small problem: handing chunks to the worker pool costs more than it saves."""
    from . import _model

    return plan.macs < _model.PLANE_SERIAL_WORK


@lru_cache(maxsize=512)
def direct_call(plan: geo.Plan, form: str) -> tuple:
    """(kernel, its arguments after x, w, bias, y) of a direct variant for ``plan``: on small problems the numba
    kernel over all the tasks in the calling thread (below ``TINY_WORK`` scatter walks the definition: the same
    bits as ``scatter_serial``), else the function that hands chunks of them to the worker pool."""
    from . import _model

    tile = tile_for(plan) if plan.batch * plan.c_out else np.ones(3, np.int64)  # empty: never launched
    args = (plan.groups, plan.arrays("stride"), plan.arrays("dilation"), plan.arrays("start"), tile)
    if not _runs_serially(plan):
        return (_sd.scatter if form == "scatter" else _gd.gather), args
    if form == "scatter" and plan.macs < _model.TINY_WORK:
        return _sd.scatter_tiny, args
    # the task count of ``_blocks.task_count``: (sample, group x channel block, output tile)
    blocks = -(-(plan.c_out // plan.groups) // CHANNEL_BLOCK)
    n_tasks = plan.batch * plan.groups * blocks * math.prod(-(-a.size_out // int(t)) for a, t in zip(plan.axes, tile))
    return (_sd.scatter_tasks if form == "scatter" else _gd.gather_tasks), args + (0, n_tasks)


def _direct_run(form: str):
    def run(plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
        kernel, args = direct_call(plan, form)
        kernel(x5, w5, bias, y5, *args)

    return run


def _gemm_applies(plan: geo.Plan) -> bool:
    return bool(plan.c_in // plan.groups and plan.c_out // plan.groups and plan.batch)


def _plane_run(plan, x5, w5, bias, y5) -> None:
    _pl.gather_plane(plan, x5, w5, bias, y5, _plane_serially(plan))


def _zerofill_run(plan: geo.Plan, x5: np.ndarray, wc: np.ndarray, b: np.ndarray, y5: np.ndarray) -> None:
    """The zero-fill-then-correlate route: zero-fill + pad into a buffer, then a dense correlation with the flipped
    kernel."""
    spans = [a.span for a in plan.axes]
    z_shape = (plan.batch, plan.c_in) + tuple(a.size_out + s - 1 for a, s in zip(plan.axes, spans))
    geo.check_memory(z_shape, plan.dtype, "the zero-fill buffer")
    z = np.empty(z_shape, plan.dtype)
    _zf.fill(x5, z, plan.arrays("stride"), np.array([s - 1 - a.start for a, s in zip(plan.axes, spans)], np.int64))
    ones = np.ones(3, np.int64)
    correlate(z, wc, b, y5, plan.groups, ones, plan.arrays("dilation"), tile_for(plan))


def _zerofill_pack(plan: geo.Plan, w5: np.ndarray) -> np.ndarray:
    """(C_in, C_out_g, k) -> (C_out, C_in_g, k), flipped: the weights of the zero-fill-then-correlate route."""
    g, c_in_g, c_out_g = plan.groups, plan.c_in // plan.groups, plan.c_out // plan.groups
    kernel = w5.shape[2:]
    wc = w5.reshape((g, c_in_g, c_out_g) + kernel).swapaxes(1, 2).reshape((plan.c_out, c_in_g) + kernel)
    return np.ascontiguousarray(wc[:, :, ::-1, ::-1, ::-1])


def _kept_winograd(plan: geo.Plan, threads: int) -> float | None:
    from . import _model

    seconds = _wg.kept_estimate(plan, threads)
    return None if seconds is None else seconds + _model.LAUNCH_PARALLEL


def _kernels_of(*functions) -> Callable[[], tuple]:
    return lambda: functions


_ROWS_REASON = "BLAS GEMM per block of output rows: few output channels x taps"

_VARIANT_LIST = (
    Variant("scatter-direct", "scatter", lambda plan: True, _estimated("scatter-direct"), _none, _same,
            _direct_run("scatter"), _runs_serially, "",
            _kernels_of((_sd.scatter_tasks, _sd.scatter_tiny)), exact=True,
            direct=lambda plan: direct_call(plan, "scatter")),
    Variant("scatter-gemm", "scatter", _gemm_applies, _estimated("scatter-gemm"), _sg.scratch_elements, _sg.pack,
            _sg.scatter_gemm, _never, "channel contraction on BLAS",
            _kernels_of((_sg.col2im, _sg.col2im_minor)), exact=True, call_pack=_same),
    Variant("scatter-gemm-rows", "scatter", _gemm_applies, _estimated("scatter-gemm-rows"), _pg.scratch_elements,
            _pg.pack, _pg.scatter_pixels_packed, _never, _ROWS_REASON,
            _kernels_of(_pg.scatter_rows), exact=True),
    Variant("gather-direct", "gather", lambda plan: True, _estimated("gather-direct"), _none, _same,
            _direct_run("gather"), _runs_serially, "", _kernels_of(_gd.gather_tasks), exact=True,
            direct=lambda plan: direct_call(plan, "gather")),
    Variant("gather-gemm", "gather", _gemm_applies, _estimated("gather-gemm"), _gg.scratch_elements, _gg.pack,
            _gg.gather_gemm, _never, "channel contraction on BLAS",
            _kernels_of(_gg.phase_weights, _gg.im2col, _gg.phase_store), exact=False, call_pack=_same,
            pack_input=_gg.pack_input, check=_scan.finite_weights),
    Variant("gather-gemm-rows", "gather", _gemm_applies, _estimated("gather-gemm-rows"), _pg.scratch_elements,
            _pg.pack, _pg.gather_pixels_packed, _never, _ROWS_REASON,
            _kernels_of((_pg.gather_rows, _pg.gather_rows_cm)), exact=True),
    Variant("gather-gemm-cols", "gather", _gemm_applies, _estimated("gather-gemm-cols"), _sg.scratch_elements,
            _sg.pack, _sg.gather_cols, _never, "channel contraction on BLAS, then per-output sums of the terms: "
            "the gather twin of scatter-gemm", _kernels_of(_sg.gather_phases),
            exact=True, call_pack=_same),
    Variant("gather-winograd", "gather", lambda plan: _wg.layout(plan) is not None, _estimated("gather-winograd"),
            _wg.scratch_elements, _wg.pack_kept, _wg.run, _never,
            "Winograd F(2, r) on the output phases: fewer multiplications, channel contraction on BLAS",
            _kernels_of(_wg.run_task, (_wg.transform_weights, _wg.relayout)), exact=False, call_pack=_wg.pack_call,
            pack_input=_wg.pack_input, kept_cost=_kept_winograd,
            kept_scratch=_wg.kept_scratch, check=_wg.safe),
    Variant("gather-plane", "gather", _pl.applies, _estimated("gather-plane"), _pl.scratch_elements, _same,
            _plane_run, _plane_serially, "one input channel or few output channels per group: long vectorized runs "
            "over a padded copy of the input rows", _kernels_of(_pl.plane_tasks), exact=False,
            check=_scan.finite_weights),
    Variant("zerofill", "zerofill", lambda plan: True, lambda plan, threads: None, _none, _zerofill_pack,
            _zerofill_run, _never, "", _kernels_of(_zf.fill_planes, correlate_tasks), exact=False),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in _VARIANT_LIST}
FORM_OF: dict[str, str] = {v.name: v.form for v in _VARIANT_LIST}


def dispatchers(name: str | None = None) -> tuple:
    """Every numba entry point of variant ``name`` (of all variants when None), alternatives included, each once."""
    found: dict[int, object] = {}

    def walk(items):
        for item in items:
            if isinstance(item, tuple):
                walk(item)
            else:
                found.setdefault(id(item), item)

    for v in (_VARIANT_LIST if name is None else (get(name),)):
        walk(v.kernels())
    return tuple(found.values())


def names(form: str | None = None, *, zerofill: bool = False) -> tuple[str, ...]:
    """The variant names in registry order: all optimized ones, or those of one ``form`` (``zerofill=True``
    includes the zero-fill baseline)."""
    return tuple(v.name for v in _VARIANT_LIST
                 if (form is None or v.form == form) and (zerofill or v.form != "zerofill" or form == "zerofill"))


def get(name: str) -> Variant:
    """The record of ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def forced(name: str, plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Run variant ``name`` on canonical arrays as a one-off call does (``call_pack`` then ``run``), whatever the
    cost model would pick (tests; the caller checks that it applies)."""
    v = get(name)
    v.run(plan, x5, v.packed_for_call(plan, w5), bias, y5)
