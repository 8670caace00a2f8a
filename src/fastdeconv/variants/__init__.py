"""The kernel variants: one module per variant, one record (:class:`Variant`) per variant, in :data:`VARIANT_LIST`.

A variant's module holds everything about it: when it applies, its schedule on this machine (estimated seconds,
scratch, and the same with the weight packed once), the reason line ``plan`` prints, its packing, its run, its
value check and the numba kernels it needs. Everything that needs the variants reads them from here: the planner
(``_cost``: it ranks what the records say and names no variant), the dispatcher (``_api.Prepared``), the operator
(``_operator.ConvTranspose``: the weight packed once per variant), the calibration and the tests that force a
variant. Adding a variant is one new module that builds a :class:`Variant` plus one line in :data:`VARIANT_LIST`
(``docs/development.md``, "Adding a variant").

A record's functions take a :class:`~fastdeconv._geometry.Plan`:

``applies(plan)``
    whether the variant can run the plan at all, the one definition of it (the memory rule is checked
    separately, from ``scratch``);
``requested(plan, method)``
    for a variant that runs only where its form is asked for: whether it is a candidate for the requested
    ``method`` (``"auto"`` or a form; the plan's request, not its geometry); None: for every request;
``cost(plan, threads)``
    estimated seconds of one call on ``threads`` threads; None when no schedule of a one-off call keeps the
    memory rule (the planner then leaves the variant out, as it does one whose ``scratch`` breaks the rule);
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
    holds alternatives, one of which runs depending on the geometry (readiness: :func:`ready`;
    warm-up: :func:`dispatchers`).

``kept_cost`` / ``kept_scratch`` are the cost and scratch when the weight was packed once (an operator), for the
variants where that differs. ``exact`` says whether the variant gives the definition's finite/Inf/NaN pattern
on any input (it multiplies no padding zero and no transform mixes the terms); ``check(plan, x5, w_max)`` of a
variant that is not exact says whether the call's values give that pattern anyway (otherwise ``_api`` runs the
cheapest exact gather variant). ``baseline`` marks a reference route (the zero-fill baseline): ``auto`` never
picks it, it runs only when its form is requested, and then without a ranking or a measurement.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from .. import _compiled, _model
from .. import _geometry as geo
from ._terms import weight_plan


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One kernel variant (see the module docstring for what each function does)."""

    name: str
    form: str  # the data-flow form it implements, one of ``_geometry.METHODS`` but "auto"
    applies: Callable[[geo.Plan], bool]
    cost: Callable[[geo.Plan, int], float | None]
    scratch: Callable[[geo.Plan], int]
    pack: Callable[[Hashable, np.ndarray], object]  # (pack_input(plan), w5)
    run: Callable[..., None]
    serial: Callable[[geo.Plan], bool]
    reason: str  # why it is fast, in a few words ("" for none): the parenthesis of ``plan``'s reason
    kernels: Callable[[], tuple]
    exact: bool
    baseline: bool = False
    call_pack: Callable[[geo.Plan, np.ndarray], object] | None = None
    pack_input: Callable[[geo.Plan], Hashable] = weight_plan
    kept_cost: Callable[[geo.Plan, int], float | None] | None = None
    kept_scratch: Callable[[geo.Plan], int] | None = None
    # the direct kernels' fast path: ``(kernel, args)`` called as ``kernel(x5, w5, bias, y5, *args)``
    direct: Callable[[geo.Plan], tuple] | None = None
    # a variant that is not exact: ``check(plan, x5, w_max)`` says whether these values (``w_max``: the weight's
    # ``scan.max_abs``) give the definition's finite/Inf/NaN pattern anyway (else the call runs an exact variant:
    # ``_api.exact_request``)
    check: Callable[[geo.Plan, np.ndarray, float], bool] | None = None
    # whether ``run`` reads and writes channels-last arrays, x5 (N, D, H, W, C_in) and y5 (N, oD, oH, oW, C_out):
    # a record applies only to plans of its layout (``applies`` is wrapped so, once)
    channels_last: bool = False
    # a variant ranked only for some requests: ``requested(plan, method)`` (see the module docstring)
    requested: Callable[[geo.Plan, str], bool] | None = None

    def __post_init__(self):
        inner = self.applies
        if getattr(inner, "_layout", None) == self.channels_last:
            return
        layout = self.channels_last

        def applies(plan: geo.Plan) -> bool:
            return plan.channels_last == layout and inner(plan)

        applies._layout = layout
        object.__setattr__(self, "applies", applies)

    def candidate_for(self, plan: geo.Plan, method: str) -> bool:
        """Whether the planner may rank this variant (where it applies) for the requested ``method``."""
        return self.requested is None or self.requested(plan, method)

    def packed_for_call(self, plan: geo.Plan, w5: np.ndarray) -> object:
        """What a one-off call hands ``run``."""
        if self.call_pack is not None:
            return self.call_pack(plan, w5)
        return self.pack(self.pack_input(plan), w5)

    def estimate(self, plan: geo.Plan, threads: int, kept: bool = False) -> float | None:
        """Seconds of one call: the variant's cost, plus the Python path every call takes (``CALL_PATH``: what a
        tiny call mostly is)."""
        cost = (self.kept_cost if kept and self.kept_cost is not None else self.cost)(plan, threads)
        return None if cost is None else cost + _model.CALL_PATH

    def scratch_elements(self, plan: geo.Plan, kept: bool = False) -> int:
        return (self.kept_scratch if kept and self.kept_scratch is not None else self.scratch)(plan)


# the modules import ``Variant`` from here: imported after it
from . import (  # noqa: E402
    channels_last,
    gather_direct,
    gather_gemm,
    gather_gemm_cols,
    gather_gemm_nhwc_runs,
    gather_plane,
    gather_plane_nhwc,
    gather_winograd,
    gather_winograd_nhwc,
    gemm_rows,
    scatter_direct,
    scatter_gemm,
    scatter_gemm_phases,
    zerofill,
)

# The order is the ranking's tie-break (equal estimates keep it) and the order names() lists.
VARIANT_LIST: tuple[Variant, ...] = (
    scatter_direct.VARIANT,
    scatter_gemm.VARIANT,
    gemm_rows.SCATTER,
    scatter_gemm_phases.VARIANT,
    gather_direct.VARIANT,
    gather_gemm.VARIANT,
    gemm_rows.GATHER,
    gather_gemm_cols.VARIANT,
    gather_winograd.VARIANT,
    gather_plane.VARIANT,
    zerofill.VARIANT,
    channels_last.NATIVE,
    channels_last.DIRECT,
    gather_winograd_nhwc.VARIANT,
    gather_gemm_nhwc_runs.VARIANT,
    gather_plane_nhwc.VARIANT,
    # channels-first GEMM variants reading channels-last x in place where the output has one channel
    *(channels_last.reading_in_place(v) for v in (gemm_rows.SCATTER, scatter_gemm_phases.VARIANT, gemm_rows.GATHER)),
    # channels-first variants run on channels-last data: one channel (the same bytes), or a requested form with
    # no channels-last kernel (between two transposes)
    *(channels_last.transposing(v) for v in (scatter_direct.VARIANT, scatter_gemm.VARIANT, gemm_rows.SCATTER,
                                             gather_direct.VARIANT, gather_gemm.VARIANT, gemm_rows.GATHER,
                                             gather_gemm_cols.VARIANT, gather_winograd.VARIANT,
                                             gather_plane.VARIANT, zerofill.VARIANT)),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in VARIANT_LIST}
FORM_OF: dict[str, str] = geo.VARIANT_FORMS  # (the same dict: ``method=`` accepts every registered name)
FORM_OF.update({v.name: v.form for v in VARIANT_LIST})


_changing = threading.Lock()  # one register / unregister at a time


def register(variant: Variant, before: str | None = None) -> None:
    """Add ``variant`` to the list (before the variant named ``before``, else at the end): what the line in
    :data:`VARIANT_LIST` does for the built-in ones (tests register a toy variant through it). Readers in other
    threads see the old list or the new one, never a mix (one assignment each); the planner's caches hold
    choices made before, so the caller clears them (as for any change of the model)."""
    global VARIANT_LIST
    if not isinstance(variant, Variant):
        raise TypeError(f"variant must be a Variant, got {type(variant).__name__}")
    with _changing:
        if variant.name in VARIANTS:
            raise ValueError(f"variant {variant.name!r} is already registered")
        items = list(VARIANT_LIST)
        items.insert(items.index(get(before)) if before is not None else len(items), variant)
        # the name first, then the list: whatever the list holds can be looked up
        FORM_OF[variant.name] = variant.form
        VARIANTS[variant.name] = variant
        VARIANT_LIST = tuple(items)


def unregister(name: str) -> None:
    """Remove the variant ``name`` (the inverse of :func:`register`)."""
    global VARIANT_LIST
    with _changing:
        record = get(name)
        VARIANT_LIST = tuple(v for v in VARIANT_LIST if v is not record)  # the list first, then the name
        del VARIANTS[name], FORM_OF[name]


def dispatchers(name: str | None = None) -> tuple:
    """Every numba entry point of variant ``name`` (of all variants when None), alternatives included, each once."""
    found: dict[int, object] = {}

    def walk(items):
        for item in items:
            if isinstance(item, tuple):
                walk(item)
            else:
                found.setdefault(id(item), item)

    for v in (VARIANT_LIST if name is None else (get(name),)):
        walk(v.kernels())
    return tuple(found.values())


def names(form: str | None = None, *, baseline: bool = False, layout: str | None = "channels_first"
          ) -> tuple[str, ...]:
    """The variant names in list order: all that ``auto`` ranks, or those of one ``form`` (``baseline=True``
    includes the baseline routes; asking for the form of a baseline lists it), of one data layout
    (``"channels_first"``, the default, or ``"channels_last"``; None: both)."""
    return tuple(v.name for v in VARIANT_LIST
                 if (form is None or v.form == form) and (baseline or not v.baseline or form is not None)
                 and (layout is None or v.channels_last == (layout == "channels_last")))


def get(name: str) -> Variant:
    """The record of ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def ready(name: str, dtype) -> bool:
    """Whether the kernels of variant ``name`` (its ``kernels()``) run for ``dtype`` without compiling (False for
    an unknown variant): the calibration measures only those."""
    try:
        return _compiled.groups_ready(get(name).kernels(), dtype)
    except Exception:
        return False


def forced(name: str, plan: geo.Plan, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray, y5: np.ndarray) -> None:
    """Run variant ``name`` on canonical arrays as a one-off call does (``call_pack`` then ``run``), whatever the
    cost model would pick (tests; the caller checks that it applies)."""
    v = get(name)
    v.run(plan, x5, v.packed_for_call(plan, w5), bias, y5)


def describe() -> tuple[dict, ...]:
    """Every variant, in list order: ``{"name", "form", "data_format", "description", "baseline", "exact"}``
    (``data_format``: the layout of the plans it applies to); the description
    is the first sentence of the variant's module docstring (``"<name>: <what it does>"``), else its reason."""
    return tuple({"name": v.name, "form": v.form,
                  "data_format": "channels_last" if v.channels_last else "channels_first",
                  "description": _summary(v), "baseline": v.baseline, "exact": v.exact} for v in VARIANT_LIST)


def _summary(record: Variant) -> str:
    """The first sentence of the docstring of the module that defines ``record`` (its name prefix, file
    references and markup left out)."""
    import re

    module = next((m for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith(__name__ + ".")
                   and any(obj is record for obj in vars(m).values())), None)
    doc = (getattr(module, "__doc__", None) or "").split("\n\n")[0].replace("\n", " ")
    doc = doc.split(": ", 1)[1] if ": " in doc and record.name in doc.split(": ", 1)[0] else ""
    doc = re.sub(r"\s*\((?:the numba kernels: )?``_kernels[^)]*\)", "", doc)
    depth, cut = 0, len(doc)
    for i, ch in enumerate(doc):  # the first sentence: up to a ". " or "; " outside parentheses
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch in ".;" and (i + 1 == len(doc) or doc[i + 1] == " "):
            cut = i
            break
    return doc[:cut].replace("``", "").strip() or record.reason


class _Module(types.ModuleType):
    """This package, callable: ``fastdeconv.variants()`` is :func:`describe` (the name is both the public
    function and this subpackage, which an import binds on ``fastdeconv``)."""

    def __call__(self) -> tuple[dict, ...]:
        """The kernel variants: ``{"name", "form", "description", "baseline", "exact"}`` each, in list order.

        ``name`` is what ``method=`` accepts to pin the variant (``conv_transpose(..., method=name)``);
        ``form`` its data-flow form; ``baseline`` marks a reference route ``auto`` never picks; ``exact`` says
        whether it gives the definition's Inf/NaN pattern on any input.

        Returns
        -------
        tuple of dict

        Examples
        --------
        >>> import fastdeconv as fd
        >>> "scatter-gemm" in [v["name"] for v in fd.variants()]
        True
        """
        return describe()


sys.modules[__name__].__class__ = _Module
