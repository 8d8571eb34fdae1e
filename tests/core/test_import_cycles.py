"""No module-level import cycle inside `streamer/`.

Each module's imports are read from its source (ast): only those that run at import time count, i.e.
not the ones inside functions (deliberately lazy: Triton, CUDA-only paths) or under
`if TYPE_CHECKING:`. A cycle among the rest means two modules cannot be understood (or imported) one
without the other; the fix is a leaf module, not a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import streamer

ROOT = Path(streamer.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_nodes(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements executed at import: the module body, into if/try/with blocks, not into defs."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                out += _import_time_nodes(node.body)
            out += _import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            out += _import_time_nodes(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                out += _import_time_nodes(handler.body)
        elif isinstance(node, ast.With):
            out += _import_time_nodes(node.body)
        elif isinstance(node, ast.ClassDef):
            out += _import_time_nodes(node.body)
        else:
            out.append(node)
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_time_nodes(tree.body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_level_import_cycle_in_streamer() -> None:
    known = _modules()
    assert "streamer.model.step" in known and "streamer.model.engine" in known
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert "streamer.model.step" in graph["streamer.model.engine"]  # the reader sees real edges
    assert _cycles(graph) == []
