"""No module of fastdeconv reaches into another one's private names.

A name with a leading underscore is its module's own (``_geometry`` and ``_api`` are modules whose names are
imported freely; it is the attributes that matter): ``other._name``, ``from .other import _name`` and
``obj._name`` on an object another module made (``op._run_plan``) are refused, for the private names that
fastdeconv's modules define. A module's own names (those it defines, assigns or sets as attributes) and dunders
are allowed.
"""

import ast
from pathlib import Path

import fastdeconv

SRC = Path(fastdeconv.__file__).resolve().parent


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(tree: ast.Module) -> set[str]:
    """Names defined in this module (functions, classes, assignments at any level, attributes of its classes)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)  # (attributes this module's objects set: ``self._w = ...``)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    for node in ast.walk(tree):  # __slots__ entries are attribute names of this module's classes
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__"
                                                for t in node.targets):
            names.update(e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant)
                         and isinstance(e.value, str))
    return names


def _package_private_names() -> set[str]:
    """The private names fastdeconv's modules define (``sys._getframe`` or argparse's ``_subparsers`` are not
    ours to police)."""
    return {n for path in SRC.rglob("*.py") for n in _own_names(ast.parse(path.read_text(), str(path)))
            if _private(n)}


def violations(path: Path, ours: set[str] | None = None) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    own = _own_names(tree)
    ours = _package_private_names() if ours is None else ours
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fastdeconv")):
            for alias in node.names:
                # a private module (``from . import _api``) is fine; a private name of a module is not
                if _private(alias.name) and not _is_module(path, node, alias.name):
                    found.append(f"{path.name}:{node.lineno}: from {node.module or '.'} import {alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own and node.attr in ours:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def _is_module(path: Path, node: ast.ImportFrom, name: str) -> bool:
    base = path.parent
    for _ in range(node.level - 1):
        base = base.parent
    if node.level == 0:
        base = SRC.parent
    for part in (node.module or "").split(".") if node.module else ():
        base = base / part
    return (base / f"{name}.py").exists() or (base / name / "__init__.py").exists()


def test_no_module_uses_another_modules_private_names():
    ours = _package_private_names()
    found = [v for path in sorted(SRC.rglob("*.py")) for v in violations(path, ours)]
    assert not found, "private names used across modules:\n" + "\n".join(found)
