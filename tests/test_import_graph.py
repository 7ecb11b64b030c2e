"""Imports run one way: no cycle between autoseg's modules, ``TYPE_CHECKING`` imports included.

The graph is read with ``ast`` (nothing is imported): every ``import`` and ``from .. import``
anywhere in a module (top level, function bodies, ``if TYPE_CHECKING:``), relative imports
resolved, and ``from pkg import sub`` counted as an edge to the submodule ``pkg.sub``. The
root package ``autoseg`` itself is left out: its ``__init__`` only loads the facade lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import autoseg

PACKAGE = Path(autoseg.__file__).parent
FACADE = {"autoseg.predictor", "autoseg.cli"}
"""The top: the package root (a lazy re-export) and ``demo`` (it runs a fit) sit beside it."""


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package``."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    root = name.split(".")[0]
    return {target for target in found if target in known and target not in (name, root)}


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    modules = module_files(package)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_autoseg_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 40 and sum(map(len, graph.values())) > 100  # the walk saw the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_below_the_facade_imports_it():
    graph = import_graph(PACKAGE)
    upward = {
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name not in FACADE | {"autoseg", "autoseg.demo"}
        for target in targets & FACADE
    }
    assert not upward, f"modules below the facade import it: {sorted(upward)}"


def test_a_type_checking_or_function_level_cycle_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import b\n"
    )
    (package / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (package / "c.py").write_text("from .a import x\n")
    (package / "d.py").write_text("import pkg.c\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.d"] == {"pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
