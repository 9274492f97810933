"""No import cycles among psgan_fast's modules.

The graph is read from the source (ast), nothing is imported: an edge A -> B
for every `import B`, `import B as x`, `from B import name` and `from P import
B` (B a submodule of package P) in A, relative imports resolved. Importing
`a.b.c` also runs the packages `a.b` and `a`, so those get edges too (except
the importer's own packages, which are already running). Imports under `if
TYPE_CHECKING:` never run and are left out. Two graphs are checked: the
module-level imports (what runs when a module is imported) and all imports,
function-level ones included (what runs once the module is used).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "psgan_fast"


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (packages by their __init__.py)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module_level_only: bool):
    """(node) for every import statement that can run, skipping TYPE_CHECKING
    blocks and, when `module_level_only`, function bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)  # the else branch runs
                continue
            elif module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            else:
                stack.append(child)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path], module_level_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets: set[str] = set()
        for node in _imports(tree, module_level_only):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            else:
                base = _resolve(name, path.name == "__init__.py", node)
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules)
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c runs a and a.b first
                dep = ".".join(parts[:i])
                if dep in modules and dep not in own_packages:
                    graph[name].add(dep)
    return graph


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components that hold a cycle: more than one
    module, or a module importing itself (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle A -> ... -> A per component that has any."""
    return [_cycle_in(c, graph) for c in components(graph)]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A concrete cycle through the component's first module (breadth-first)."""
    members, start = set(component), component[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # unreachable for a strongly connected component


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "all-imports"])
def test_no_import_cycles(module_level_only):
    modules = module_names()
    assert f"{PACKAGE}.trainer" in modules and f"{PACKAGE}.models.psgan" in modules
    graph = import_graph(modules, module_level_only)
    groups = components(graph)
    assert not groups, "import cycles:\n" + "\n".join(
        f"{' -> '.join(_cycle_in(c, graph))}  (all modules on cycles with it: {', '.join(c)})" for c in groups)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_checker_finds_the_old_api_trainer_cycle(tmp_path):
    """The shape this project once had: api imported private helpers from
    trainer inside a function, trainer imported api's TrainedGenerator."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/api.py": "def load():\n    from pkg.trainer import _forked\n",
        "pkg/trainer.py": "from pkg import checkpoint\n\ndef evaluate():\n    from pkg.api import TrainedGenerator\n",
        "pkg/checkpoint.py": "import json\n",
    })
    modules = module_names(tmp_path, "pkg")
    assert not find_cycles(import_graph(modules, module_level_only=True))
    assert find_cycles(import_graph(modules, module_level_only=False)) == [["pkg.api", "pkg.trainer", "pkg.api"]]


def test_the_checker_reads_submodule_imports_relative_imports_and_type_checking(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "from . import b\n",            # the package runs pkg.sub.b
        "pkg/sub/b.py": "from pkg import c\n",                    # c is a submodule of pkg
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n"
                    "from .sub.b import x\n",                     # runs pkg.sub, then pkg.sub.b
        "pkg/d.py": "import pkg.c\n",
    })
    modules = module_names(tmp_path, "pkg")
    graph = import_graph(modules, module_level_only=True)
    assert graph["pkg.sub"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.d"] == {"pkg.c"}
    assert components(graph) == [["pkg.c", "pkg.sub", "pkg.sub.b"]]
    assert find_cycles(graph) == [["pkg.c", "pkg.sub.b", "pkg.c"]]  # the shortest one through pkg.c
