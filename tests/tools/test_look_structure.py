"""tools/look_structure.py: its score of a renderer, the looks.py of a git revision, and its contact sheet,
on hand-made frames (the held-out stream itself is the evaluator's, tested in tests/train)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from PIL import Image
from tool_loader import load_tool


def _tool() -> ModuleType:
    return load_tool("look_structure.py", "look_structure")


def _frames(n: int = 3, size: int = 32) -> torch.Tensor:
    x = torch.zeros(n, size, size, 3, dtype=torch.uint8)
    for i in range(n):
        x[i, 8 : 20 + i, 6 + i : 24] = 200
    return x


def test_measure_scores_identity_as_structure_kept_and_a_negative_as_well() -> None:
    tool, x = _tool(), _frames()
    corr, db = tool.measure(x, lambda f: f)
    assert corr == 1.0 and db == 100.0  # PSNR capped for identical frames
    corr, db = tool.measure(x, lambda f: 255 - f)
    assert corr > 0.99 and db < 10  # the edge score ignores the edges' sign; PSNR does not


def test_looks_at_a_revision_and_the_sheet(tmp_path: Path) -> None:
    tool, x = _tool(), _frames()
    import streamer.train.looks as looks

    old, now = tool.looks_at("HEAD"), tool.renderers(looks)
    assert set(old) == set(now) and old["sepia"](x).shape == x.shape
    sheet = tmp_path / "s.png"
    tool.write_sheet(sheet, x, {"HEAD": old, "now": now}, frames=2)
    w, h = Image.open(sheet).size
    assert h == 20 + len(now) * 32 and w == 110 + 2 * (3 * 32 + 6)
