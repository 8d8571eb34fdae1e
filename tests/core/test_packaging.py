"""The installed package layout: the import names are the project's own, and none is left out.

pyproject.toml lists the packages by hand because setuptools' find cannot install the folders
kernels/ and overlays/ under other names; this test is what keeps that list complete, since a
missing sub-package only shows up in a non-editable `pip install .` (the editable one finds it anyway).
"""

import importlib.util
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
    for name, folder in table["package-dir"].items():
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, f"{name} is not importable: reinstall (pip install -e .)"
        assert Path(spec.origin).parent == ROOT / folder, f"{name} resolves to {spec.origin}, not {ROOT / folder}"
