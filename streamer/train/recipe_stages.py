"""The recipe's input-conditioning stages: how the shipped v4 was made from v3 (docs/training.md).

widen      `streamer train widen-input`: a plain DiT gets zero patch-embedding columns for the chunk's
           clean input latent (in_dim 32), so training starts from exactly what it computed; a DiT that
           already is input-conditioned is continued as it is (v4's second call continued its first).
condition  `streamer train` from the widened weights with v4's settings (COND, the scale's batch and
           workers, bf16 on CUDA), a step target and a time cap like every other stage.
refine     `streamer train refiner`: a pixel refiner fitted to the conditioned model's stream output on the
           training media (streamer/model/refiner.py says why), written beside its weights.
quality    `streamer train evaluate --mode quality` at the shipped settings (tiny's PRESET_DEFAULTS:
           1 step, strength 0.45) on held-out frames, with a contact sheet.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.config import PRESET_DEFAULTS

if TYPE_CHECKING:
    from streamer.train.recipe import Recipe

# v4's conditioned fine-tuning (2026-12-06, one H100): video-to-video frames for 3 of 4 clips, noised only up
# to the levels the daemon streams at (with the clean input beside them, 0.8 still leaves it work to do).
COND = {"lr": 3e-4, "warmup": 20, "p_paired": 0.75, "paired_max_sigma": 0.8}
SHEET = {"sheet_frames": "2", "sheet_tile": "160"}  # the contact sheet docs/training.md shows


def conditions_on_input(checkpoint: Path) -> bool:
    """Whether the DiT checkpoint folder already takes the clean input latent (in_dim = 2 x out_dim)."""
    path = checkpoint / "config.json"
    if not path.is_file():
        raise RuntimeError(f"{checkpoint}: no config.json (--from wants a DiT checkpoint folder)")
    cfg = json.loads(path.read_text())
    return int(cfg["in_dim"]) == 2 * int(cfg["out_dim"])


def condition(rc: Recipe, src: Path, seconds: float) -> Path:
    """Widen `src` (unless it is input-conditioned already), fine-tune it conditioned for up to `seconds`;
    returns the newest checkpoint folder."""
    init = src
    if not conditions_on_input(src):
        init = rc.out / "widened"
        widen = ["streamer", "train", "widen-input", str(src), "--out", str(init), "--force"]
        rc._wait({"widen": rc._spawn("widen", widen)})
    rc.results["conditioned_from"] = {"checkpoint": str(src), "widened": init != src}
    rc.train({"condition": rc.config("condition", **condition_values(rc, init))}, rc.scale.steps[3], seconds)
    return rc.latest("condition")


def condition_values(rc: Recipe, init: Path) -> dict[str, Any]:
    """The conditioned stage's [train] settings: the DiT stage's data (frames, window, sinks, autocast) with v4's,
    and the recipe's `cond_looks` when set (a look named k times is drawn k times as often)."""
    s = rc.scale
    looks = {"looks": list(rc.cond_looks)} if rc.cond_looks else {}
    return {**rc.dit_values(), **COND, "init": str(init), "batch": s.cond_batch, "workers": s.cond_workers, **looks}


def refine(rc: Recipe, src: Path) -> Path:
    """`src` with a pixel refiner fitted to its own stream output (every look, 3 prompts each); returns the
    folder holding both."""
    frames, steps = rc.scale.refine
    out = rc.out / "refined"
    args = ["streamer", "train", "refiner", str(src), "--vae", str(rc.vae), "--out", str(out), "--force",
            "--frames", str(frames), "--steps", str(steps), "--prompts", "3", "--device", rc.scale.device,
            "--width", str(rc.scale.width), "--height", str(rc.scale.height)]  # fmt: skip
    rc._wait({"refine": rc._spawn("refine", args)})
    said = (rc.out / "logs" / "refine.log").read_text(errors="replace").strip().splitlines()
    rc.results["refined"] = {"from": str(src), "frames": frames, "steps": steps, "summary": said[-1] if said else ""}
    return out


def evaluate_quality(rc: Recipe, checkpoint: Path, name: str = "quality") -> subprocess.Popen[bytes]:
    """Held-out quality of `checkpoint` at the shipped settings; JSON eval-NAME.json, contact sheet NAME.png."""
    s, shipped = rc.scale, PRESET_DEFAULTS["tiny"]
    looks = {"looks": s.quality_looks} if s.quality_looks else {}
    return rc.evaluate(name, checkpoint, "quality", frames=str(s.segment_frames), set=f"steps={shipped.steps}",
                       strength=str(shipped.strength), sheet=str(rc.out / f"{name}.png"), **SHEET, **looks)  # fmt: skip
