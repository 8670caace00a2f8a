"""The README is the user's document: its python blocks run, its headline table is generated, its rules hold."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, flags=re.S | re.M)
OPTIONAL = ("dask", "torch", "onnxruntime", "tensorflow", "jax", "matplotlib")  # a block needing one may skip


def test_readme_is_short_and_self_contained():
    lines = TEXT.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines (at most 250)"
    assert BLOCKS, "the README has no python block"
    dated = [line for line in lines if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]
    assert not dated, f"dated measurements belong in docs/performance.md or the commit log: {dated}"
    outside = [line for line in lines if "../" in line or "/work/" in line]
    assert not outside, f"references outside the repository: {outside}"
    assert not re.search(r"seed \d\d\d", TEXT, flags=re.I), "say what the convention is, not which seed it came from"
    for target in re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", TEXT):
        assert (ROOT / target).exists(), f"README links to missing {target}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    source = BLOCKS[index]
    for module in OPTIONAL:
        if re.search(rf"^\s*(import|from) {module}\b", source, flags=re.M) and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}")
    monkeypatch.chdir(tmp_path)
    code = compile(source, f"README.md python block {index + 1}", "exec")
    exec(code, {"__name__": f"readme_block_{index + 1}"})


def test_headline_table_is_the_generated_one():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import make_performance_doc as doc
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    data, first_call = doc.load(doc.DEFAULT_JSON), doc.load_first_call(doc.DEFAULT_FIRST_CALL)
    start, end = TEXT.index(doc.HEADLINE_START), TEXT.index(doc.HEADLINE_END)
    assert TEXT[start + len(doc.HEADLINE_START):end].strip() == doc.headline(data, first_call).strip(), (
        "the README's headline table differs from benchmarks/results: run python benchmarks/make_performance_doc.py")
    perf = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert perf == doc.performance_doc(data, first_call), (
        "docs/performance.md is not the generated one: run python benchmarks/make_performance_doc.py")


def test_performance_history_has_one_home_that_regeneration_keeps(tmp_path, monkeypatch):
    """The history is written by hand in docs/performance.md only; regenerating the doc keeps it as it is."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import make_performance_doc as doc
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert not (ROOT / "benchmarks" / "results" / "tried_and_not_kept.md").exists()
    perf = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    edited = tmp_path / "performance.md"
    new = perf.replace("### Tried and not kept", "### Tried and not kept\n\n- a new entry")
    edited.write_text(new, encoding="utf-8")
    monkeypatch.setattr(doc, "PERFORMANCE", edited)
    monkeypatch.setattr(doc, "ROOT", tmp_path)
    data, first_call = doc.load(doc.DEFAULT_JSON), doc.load_first_call(doc.DEFAULT_FIRST_CALL)
    assert doc.performance_doc(data, first_call) == edited.read_text(encoding="utf-8")


def test_docs_stay_inside_the_repository():
    for path in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "CHANGELOG.md"]:
        text = path.read_text(encoding="utf-8")
        assert "../" not in text and "/work/" not in text, f"{path.name} refers outside the repository"
        for target in re.findall(r"\]\(((?!https?:)[^)#]+)", text):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
