"""`streamer train refiner`: collects the frozen model's stream output on training media, fits a pixel
refiner to the looks' targets and writes a checkpoint folder the loader attaches it from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamer.model.refiner import REFINER_FILE, PixelRefiner, refiner_of
from streamer.model.weights.checkpoints import load_dit
from streamer.train.refine import Collected, fit
from streamer.train.refine import main as refine_main

TINY = "streamer/model/embedded/tiny"


def test_the_fit_learns_a_darkening_of_the_outlines() -> None:
    """Targets that darken each output where the input's luma has a dark line: a function of the input the
    output no longer holds, which the refiner must take from the input frames."""
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.rand(8, 32, 32, 3, generator=gen) * 60 + 150).to(torch.uint8)
    inputs[:, :, 10:12] = 20  # a dark vertical line in every input
    outputs = torch.full_like(inputs, 180)  # the model kept the tone, not the line
    targets = outputs.clone()
    targets[:, :, 10:12] = 40
    states = torch.randn(1, 4, 16, generator=gen)
    data = Collected(inputs, outputs, targets, torch.zeros(8, dtype=torch.long), states)
    torch.manual_seed(0)  # the mixing layers' initial weights (8 seeds tried: every one passes)
    refiner = PixelRefiner(16, filters=2, hidden=8, kernel=5)
    losses = fit(refiner, data, steps=150, batch=4, crop=32, lr=1e-2)
    assert losses[-1] < losses[0] / 10
    x = data.inputs[:1].permute(0, 3, 1, 2).float() / 255
    y = data.outputs[:1].permute(0, 3, 1, 2).float() / 255
    out = refiner(y, x, refiner.prompt_vector(states)) * 255
    assert float(out[0, :, :, 10:12].mean()) < 90 and abs(float(out[0, :, :, 20:].mean()) - 180) < 15


def test_the_command_writes_a_checkpoint_with_its_refiner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "refined"
    argv = [TINY, "--out", str(out), "--looks", "comic,noir", "--prompts", "1", "--frames", "3", "--keep-every", "1",
            "--steps", "4", "--batch", "2", "--crop", "32", "--filters", "2", "--hidden", "4", "--kernel", "5",
            "--width", "64", "--height", "64"]  # fmt: skip
    assert refine_main(argv) == 0
    said = capsys.readouterr().out
    assert "fitted a pixel refiner" in said and "on 6 frames of 2 looks" in said
    dit, report = load_dit(out)
    refiner = refiner_of(dit)
    assert refiner is not None and "+ pixel refiner" in report and (out / REFINER_FILE).is_file()
    assert refiner.rows.weight.shape == (2, 1, 1, 5)
    original = load_dit(TINY)[0].state_dict()  # the DiT itself is untouched
    for k, v in dit.state_dict().items():
        if not k.startswith("refiner."):
            assert torch.equal(v, original[k].to(v.dtype)), k
    assert refine_main(argv) == 1  # the folder is not empty now
    assert "use --force" in capsys.readouterr().err


def test_random_weights_and_bad_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        refine_main(["random", "--vae", "random", "--out", str(tmp_path / "r"), "--width", "64", "--height", "64"]) == 1
    )
    assert "would be random weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        refine_main([TINY, "--out", str(tmp_path / "k"), "--kernel", "4"])
    assert e.value.code == 2 and "--kernel must be odd" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        refine_main([TINY, "--out", str(tmp_path / "l"), "--looks", "comic,plaid"])
    assert "unknown plaid" in capsys.readouterr().err
