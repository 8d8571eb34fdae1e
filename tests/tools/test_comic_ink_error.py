"""tools/comic_ink_error.py: its split of the error on hand-made frames, and a run on a random model."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from tool_loader import load_tool

from streamer.train.looks import comic, comic_layers


def _tool() -> ModuleType:
    return load_tool("comic_ink_error.py", "comic_ink_error")


def test_the_split_puts_an_error_on_ink_pixels_on_the_ink() -> None:
    tool = _tool()
    target = torch.full((1, 3, 4, 4), 0.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, :] = 1  # the first row is ink: 4 of 16 pixels
    wrong_ink = target.clone()
    wrong_ink[..., 0, :] = 0.4
    split = tool.Split()
    split.add(wrong_ink, target, mask)
    assert (split.n_ink, split.n_rest) == (4, 12)
    assert split.ink == pytest.approx(4 * 0.01) and split.rest == 0
    assert split.row("x") == "| x | 26.02 | 100 % | 20.00 | ∞ |"  # 10 log10(16 / 0.04), 10 log10(4 / 0.04)
    wrong_rest = target.clone()
    wrong_rest[..., 1:, :] = 0.4
    other = tool.Split()
    other.add(wrong_rest, target, mask)
    assert other.row("y") == "| y | 21.25 | 0 % | ∞ | 20.00 |"


def test_comic_is_its_flat_bands_under_its_ink() -> None:
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    flat, ink = comic_layers(x)
    assert ink.shape == (2, 1, 24, 24) and 0 <= float(ink.min()) and float(ink.max()) <= 1
    assert torch.equal(comic(x), (flat * (1 - ink)).clamp(0, 1))


def test_a_run_on_a_random_model_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    tool = _tool()
    assert tool.main(["--checkpoint", "random", "--vae", "random", "--frames", "3", "--width", "32",
                      "--height", "32"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "comic, 3 held-out frames" in out and "ink pixels" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "PSNR" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| model output", "| autoencoder round trip of the target",
                                                 "| comic of the autoencoder's round trip of the input",
                                                 "| input (no transform)"]  # fmt: skip
    assert "against the flat bands alone" in out
