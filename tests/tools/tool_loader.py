"""Loading a script of tools/ by path, for its tests (tools/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(relative: str, name: str) -> ModuleType:
    """tools/<relative> as module `name`."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name while the class is made
    spec.loader.exec_module(module)
    return module
