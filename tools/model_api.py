"""Write docs/model-api.md from the code: every module of `streamer.model`, its docstring's first paragraph,
and its public classes and functions with their signatures and first docstring lines.

    python tools/model_api.py            # rewrite docs/model-api.md
    python tools/model_api.py --check    # exit 1 when the file is out of date (tests/core/test_model_api_doc.py)

Generated, so it cannot name functions that do not exist. Imports only modules that need no GPU
(the fast path's modules are read with `ast`, since importing them imports Triton).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "streamer" / "model"
DOC = ROOT / "docs" / "model-api.md"
HEADER = """# Model API

Generated from the code by `python tools/model_api.py` (a test fails when this file is out of date).
One section per module of `streamer/model/`: what it is for, then its public classes and functions.
The chunk step both paths run is `streamer.model.step.chunk_step`; the DiT's forward calls the named ops of
`streamer.model.ops`, which the fast path (`streamer/model/fast/`) swaps for fused kernels.
"""


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    args = ast.unparse(node.args)
    ret = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{node.name}({args}){ret}"


def _public(name: str) -> bool:
    return not name.startswith("_")


def _module_section(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(ROOT).as_posix()
    lines = [f"## `{rel}`", "", _first_paragraph(ast.get_docstring(tree)), ""]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and _public(node.name):
            lines.append(f"- class `{node.name}`: {_first_paragraph(ast.get_docstring(node))}")
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    _public(item.name) or item.name in ("__init__", "__call__")
                ):
                    doc = _first_paragraph(ast.get_docstring(item))
                    lines.append(f"  - `{_signature(item)}`" + (f": {doc}" if doc else ""))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
            doc = _first_paragraph(ast.get_docstring(node))
            lines.append(f"- `{_signature(node)}`" + (f": {doc}" if doc else ""))
    lines.append("")
    return lines


def render() -> str:
    files = sorted(p for p in PACKAGE.rglob("*.py") if "embedded" not in p.parts)
    out = [HEADER]
    for path in files:
        out += _module_section(path)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when docs/model-api.md differs")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if DOC.read_text() != text:
            print(f"{DOC} is out of date: run python tools/model_api.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
