"""``import fastdeconv`` is cheap: the public names (and numba) load on first use."""

import subprocess
import sys

import pytest

import fastdeconv


def test_import_does_not_load_numba():
    code = ("import sys, fastdeconv; assert 'numba' not in sys.modules and 'numpy' not in sys.modules; "
            "fastdeconv.conv_transpose; assert 'numba' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_resolve():
    for name in fastdeconv.__all__ + ["compat"]:
        assert getattr(fastdeconv, name) is not None
        assert name in dir(fastdeconv)
    from fastdeconv import Choice, conv_transpose, plan  # noqa: F401
    assert fastdeconv.compat.tf_conv2d_transpose.__module__ == "fastdeconv.compat"


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        fastdeconv.nope  # noqa: B018


def test_the_core_never_imports_the_tools():
    """The tools (compare, roofline, warm-up, command line) live in ``fastdeconv.tools``, above the library: no
    core module imports them, and a call loads none of them nor what they set up."""
    import ast
    from pathlib import Path

    root = Path(fastdeconv.__file__).parent
    assert {p.stem for p in (root / "tools").glob("*.py")} >= {"compare", "roofline", "warmup", "cli"}
    tool_names = {"tools", "_compare", "_roofline", "_warmup", "__main__"}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] == "tools" or rel.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            parts = {part for name in names for part in name.split(".")}
            assert not parts & tool_names, f"{rel}:{node.lineno} imports a tool ({ast.unparse(node)})"
    code = ("import sys, numpy as np, fastdeconv; "
            "fastdeconv.conv_transpose(np.ones((1, 2, 3, 3), np.float32), np.ones((2, 1, 2, 2), np.float32)); "
            "bad = [m for m in sys.modules if m.startswith(('fastdeconv.tools', 'fastdeconv.__main__')) "
            "or m.split('.')[0] in ('torch', 'tensorflow', 'jax', 'onnxruntime', 'matplotlib', 'tqdm')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
