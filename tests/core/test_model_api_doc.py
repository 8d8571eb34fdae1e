"""docs/model-api.md is generated from the code (tools/model_api.py) and must be up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "model_api.py"


def _tool():  # noqa: ANN202 - a script, loaded by path (tools/ is not a package)
    spec = importlib.util.spec_from_file_location("model_api", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_api_doc_is_generated_from_the_current_code() -> None:
    tool = _tool()
    text = tool.render()
    assert "`chunk_step(" in text and "class `DiT`" in text and "class `FusedOps`" in text
    assert tool.DOC.read_text() == text, "docs/model-api.md is out of date: run python tools/model_api.py"
