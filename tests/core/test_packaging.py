"""The installed package layout: the import names are the project's own, and none is left out.

pyproject.toml lists the packages by hand because setuptools' find cannot install the folders
kernels/ and overlays/ under other names; this test is what keeps that list complete, since a
missing sub-package only shows up in a non-editable `pip install .` (the editable one finds it anyway).
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_streamer_package_is_listed_in_pyproject() -> None:
    listed = set(_setuptools_table()["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "streamer").rglob("__init__.py")
    }
    missing = sorted(on_disk - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml (pip install . drops them)"
    stale = sorted(n for n in listed - on_disk if n.startswith("streamer."))
    assert not stale, f"remove {stale} from [tool.setuptools] packages in pyproject.toml: no such folder"


def test_kernels_and_overlays_install_under_the_projects_own_names() -> None:
    table = _setuptools_table()
    assert table["package-dir"] == {"streamer_kernels": "kernels", "streamer_overlays": "overlays"}
    for module, folder in (("streamer_kernels.backend", "kernels"), ("streamer_overlays", "overlays")):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, f"{module} is not importable: pip install -e ."
        assert Path(spec.origin).parent == ROOT / folder, f"{module} resolves to {spec.origin}, not {ROOT / folder}"
    assert not (ROOT / "kernels" / "__init__.py").exists(), "see kernels/backend.py: it would shadow HF's kernels"


def _imported_top_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_streamer_imports_the_kernels_under_its_own_name_even_beside_another_kernels_package(tmp_path: Path) -> None:
    """Hugging Face's `kernels` (a transformers dependency) may be installed, and a Python started in the
    checkout has the checkout first on sys.path: `kernels` is still that package, not the folder
    kernels/, and every streamer module that uses the fused kernels gets streamer's own."""
    users = []
    for path in sorted((ROOT / "streamer").rglob("*.py")):
        names = _imported_top_names(path)
        assert not names & {"kernels", "overlays"}, f"{path} imports the bare name; use streamer_kernels/_overlays"
        if "streamer_kernels" in names:
            users.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert users, "no streamer module imports streamer_kernels: the fast path moved, update this test"
    (tmp_path / "kernels").mkdir()  # a stand-in for Hugging Face's package, installed (on the path)
    (tmp_path / "kernels" / "__init__.py").write_text("FAKE = True\n")
    script = (
        "import importlib, importlib.util, json, sys\n"
        "import kernels\n"
        f"for m in {users!r}: importlib.import_module(m)\n"
        "import streamer_overlays\n"
        "from streamer.model.doctor import fused_kernels_check\n"
        "print(json.dumps({'fake': getattr(kernels, 'FAKE', kernels.__path__[0]),"
        " 'kernels_modules': sorted(m for m in sys.modules if m.split('.')[0] == 'kernels'),"
        " 'ours': [importlib.util.find_spec('streamer_kernels.backend').origin, streamer_overlays.__file__],"
        " 'doctor': fused_kernels_check().detail}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["fake"] is True, f"`import kernels` in the checkout got {out['fake']}, not the installed package"
    assert out["kernels_modules"] == ["kernels"]
    assert out["ours"] == [str(ROOT / "kernels" / "backend.py"), str(ROOT / "overlays" / "__init__.py")]
    assert out["doctor"] == f"streamer_kernels from {ROOT / 'kernels'}"
