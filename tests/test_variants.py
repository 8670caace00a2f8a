"""The variant list (``fastdeconv.variants``): a variant registered through the same path as the built-in ones is
ranked by the planner and run by every call path, and the planner itself names no variant."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import tolerance
from reference import conv_transpose_ref

import fastdeconv as fd
from fastdeconv import _calibrate, _cost, _model, calibration, variants
from fastdeconv import _geometry as geo
from fastdeconv._kernels import gather as _gd
from fastdeconv.variants._direct import direct_run
from fastdeconv.variants._terms import none, same

BUILT_IN = variants.names(baseline=True, layout=None)
X_SHAPE, W_SHAPE, GEOMETRY = (1, 3, 13, 11), (3, 7, 2, 3), {"stride": 2, "padding": 1}  # the toy's marker


def _marker(plan: geo.Plan) -> bool:
    return plan.c_in == 3 and plan.c_out == 7 and tuple(a.size_in for a in plan.axes[1:]) == (13, 11)


def _clear() -> None:
    calibration.clear()  # (also empties the caches: fastdeconv.clear_caches)


@pytest.fixture
def toy():
    """A gather variant that applies only to the marker geometry, estimated far cheaper than any other, and runs
    the direct gather kernel (counting its runs)."""
    runs = []
    gather = direct_run("gather")

    def run(plan, x5, w5, bias, y5):
        runs.append(plan)
        gather(plan, x5, w5, bias, y5)

    record = variants.Variant(
        name="toy-direct", form="gather", applies=_marker, cost=lambda plan, threads: 1e-9, scratch=none,
        pack=same, run=run, serial=lambda plan: False, reason="a test's toy", kernels=lambda: (_gd.gather_tasks,),
        exact=True)
    _clear()
    variants.register(record, before="gather-plane")
    try:
        yield runs
    finally:
        variants.unregister("toy-direct")
        _clear()


def test_registered_variant_is_ranked_and_runs(toy, rng):
    assert "toy-direct" in variants.names("gather") and "toy-direct" in _calibrate.variant_names()
    assert variants.dispatchers("toy-direct") == (_gd.gather_tasks,)
    choice = fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY)
    assert choice.variant == "toy-direct" and choice.method == "gather", choice
    # (its cost, plus the Python path every call takes)
    assert choice.estimates[0] == ("toy-direct", 1e-9 + _model.CALL_PATH) and len(choice.estimates) > 1
    assert "(a test's toy)" in choice.reason
    # elsewhere it does not apply: not ranked
    other = fd.plan((1, 3, 12, 11), W_SHAPE, **GEOMETRY)
    assert "toy-direct" not in dict(other.estimates)

    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    w = rng.standard_normal(W_SHAPE).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    expected = conv_transpose_ref(x, w, b, **GEOMETRY)
    for method in ("auto", "gather"):
        before = len(toy)
        y = fd.conv_transpose(x, w, b, method=method, **GEOMETRY)
        assert len(toy) == before + 1, method  # it ran
        np.testing.assert_allclose(y, expected, **tolerance(np.float32))
    assert len(toy) == 2
    y = fd.conv_transpose(x, w, b, method="scatter", **GEOMETRY)  # another form: not a candidate
    assert len(toy) == 2
    op = fd.ConvTranspose(w, b, **GEOMETRY)
    assert op.plan(X_SHAPE).variant == "toy-direct"
    np.testing.assert_allclose(op(x), expected, **tolerance(np.float32))
    assert len(toy) == 3


def test_unregistered_variant_is_gone(rng):
    names = variants.names()
    choice = fd.plan(X_SHAPE, W_SHAPE, **GEOMETRY)
    assert choice.variant in names and "toy-direct" not in variants.VARIANTS
    assert variants.names(baseline=True, layout=None) == BUILT_IN and tuple(variants.VARIANTS) == BUILT_IN
    assert tuple(variants.FORM_OF) == BUILT_IN
    with pytest.raises(ValueError, match="unknown variant 'toy-direct'"):
        variants.get("toy-direct")


def test_register_validates():
    with pytest.raises(TypeError, match="variant must be a Variant"):
        variants.register("scatter-direct")
    with pytest.raises(ValueError, match="already registered"):
        variants.register(variants.get("scatter-direct"))
    with pytest.raises(TypeError):  # keyword arguments only
        variants.Variant("x", "gather")


def test_planner_names_no_variant():
    """The planner, the dispatcher and the calibration read the records; no literal variant name in them."""
    src = Path(fd.__file__).parent
    names = variants.names(baseline=True)
    for module in ("_cost.py", "_api.py", "_calibrate.py", "variants/__init__.py"):
        code = (src / module).read_text(encoding="utf-8")
        # the method strings (``"zerofill"`` is also a method, documented as such) are not variant names
        code = re.sub(r'method : \{[^}]*\}', "", code)
        code = code.replace('"zerofill"', "").replace("``zerofill``", "")
        code = re.sub(r'Examples\n\s*-+\n.*?"""', "", code, flags=re.S)  # a doctest's output names what it picks
        found = [n for n in names if re.search(rf"[\"'`]{re.escape(n)}[\"'`]", code)]
        assert not found, (module, found)


def test_baseline_is_a_record_attribute():
    record = variants.get("zerofill")
    assert record.baseline and record.form == "zerofill" and "zerofill" not in variants.names()
    plan = geo.make_plan((2, 4, 5, 5), (4, 3, 3, 3), np.dtype(np.float32), np.dtype(np.float32), 2, 1, 0, 1, 1)
    assert record.applies(plan) and record.estimate(plan, 2) > 0  # it has an estimate like the others ...
    assert "zerofill" not in dict(_cost.choose(plan).estimates)  # ... but auto never ranks it


# every kernel module is numba code that imports only numpy, numba, the compile-routing decorator, config and
# the kernel layer itself; the drivers live above it (``_tasks``, ``_scan``, the variants). ``lint-imports``
# checks the package's layers as a whole; this also pins the third-party imports.
KERNEL_ONLY = sorted(p.stem for p in (Path(__file__).parents[1] / "src" / "fastdeconv" / "_kernels").glob("*.py")
                     if p.stem != "__init__")
ALLOWED_ABOVE = {"_compiled", "config"}


@pytest.mark.parametrize("module", KERNEL_ONLY)
def test_kernel_modules_import_no_upper_layer(module):
    import ast

    tree = ast.parse((Path(fd.__file__).parent / "_kernels" / f"{module}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level == 1:
                continue  # the kernel layer itself
            names = {node.module} if node.module else {a.name for a in node.names}
            assert names <= ALLOWED_ABOVE, (module, names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] in {"numpy", "numba", "scipy", "__future__", "functools", "typing"}, \
                (module, node.module)
        elif isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] in {"numpy", "numba", "scipy"} for a in node.names), module
