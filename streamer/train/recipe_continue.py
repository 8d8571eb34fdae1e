"""The recipe's continuation mode: a shipped input-conditioned model trained on as five variants side by side.

    python -m streamer.train.recipe --out runs/variants --continue streamer/model/embedded/tiny --export OUT

One GPU call answers what the CPU cannot (7 minutes with --budget-s 530 on an H100, 2026-12-07):
- which continuation beats the shipped model on comic: "focus" (v4.4's settings: 9 paired frames in 10,
  noised only up to 0.5, round the shipped strength), "focus-pixel" (focus plus train.pixel_loss, the
  decoded picture's L1 and its edges) and "focus-ink" (focus-pixel with the dark detail - comic's ink, the
  part v4.4 does not draw - weighted up: train.pixel_dark_weight). The first H100 run (2026-12-07) had v4's
  settings ("base") in place of focus-ink: it did not help comic either;
- the seed's claims on this model: drift over a 10-minute held-out stream, focus against "focus-no-history",
  and quality at 1/2/4 steps, focus against "focus-no-shortcut".
Every variant starts from the same weights with the same data and seed; comic is drawn 4 times in 11, as
for v4.3 and v4.4. Then, side by side: quality at the shipped settings (the starting model and the three
candidates, each with a contact sheet), drift and steps. An evaluator still running when the budget ends
is stopped and named in the results; the others' tables are kept.

Export: each candidate's weights as EXPORT/<name>.tar (to evaluate on the CPU over 1,200 frames and ship),
contact-sheets.tar, recipe-results.json (every table) and logs.txt.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.train.recipe_stages import conditions_on_input, evaluate_quality

if TYPE_CHECKING:
    from streamer.train.recipe import Recipe

# v4.4's continuation settings (2026-12-06: 6,000 CPU steps from v4.3); lr lower than v4's 3e-4 because a
# continuation at the full rate first made comic worse (seventh session, docs/training.md)
FOCUS = {"p_paired": 0.9, "paired_max_sigma": 0.5}
VARIANTS: dict[str, dict[str, Any]] = {
    "focus": FOCUS,
    "focus-no-history": {**FOCUS, "p_history": 0.0},
    "focus-no-shortcut": {**FOCUS, "p_shortcut": 0.0},
    "focus-pixel": {**FOCUS, "pixel_loss": 0.2},
    "focus-ink": {**FOCUS, "pixel_loss": 0.2, "pixel_dark_weight": 20.0},  # ink's darkening ~0.05-0.2: 2-5x
}
CANDIDATES = ("focus", "focus-pixel", "focus-ink")  # the ones whose weights come back
WEIGHTED_LOOKS = ("noir", "neon", "comic", "comic", "comic", "comic", "sketch", "thermal", "sepia", "pixel", "watercolour")
SETTINGS = {"lr": 1.5e-4, "warmup": 20, "seed": 50, "looks": list(WEIGHTED_LOOKS)}
# Budget kept after training for the evaluators side by side: on an H100 (2026-12-07) all eight took 130 s, the
# two 10-minute drift streams 124 s each after ~10 s of start-up; the rest is margin before the deadline.
EVAL_S = 180.0
SETUP_S = 30.0  # the trainers' start-up (imports, data workers) inside the training share


def run_continue(rc: Recipe, checkpoint: Path, vae: Path | None) -> dict[str, Any]:
    """Train VARIANTS from `checkpoint` side by side, evaluate them side by side, export the candidates."""
    if not conditions_on_input(checkpoint):
        raise RuntimeError(f"{checkpoint}: --continue wants an input-conditioned model (its patch embedding takes the clean input latent too); use --from")
    rc.vae = vae or checkpoint / "vae.safetensors"
    if not rc.vae.is_file():
        raise RuntimeError(f"no autoencoder at {rc.vae} (pass --vae FILE)")
    s = rc.scale
    rc.results["continued_from"] = str(checkpoint)
    rc.train(variant_configs(rc, checkpoint), s.continue_steps, max(0.05, rc.budget_s - EVAL_S - SETUP_S))

    frames = str(s.segment_frames)
    evals = {f"quality-{n}": evaluate_quality(rc, ckpt, f"quality-{n}")
             for n, ckpt in [("init", checkpoint), *((c, rc.latest(c)) for c in CANDIDATES)]}  # fmt: skip
    evals |= rc.drift_evals({n: rc.latest(n) for n in ("focus", "focus-no-history")}, ("watercolour",))
    evals |= {f"steps-{n}": rc.evaluate(f"steps-{n}", rc.latest(n), "steps", frames=frames)
              for n in ("focus", "focus-no-shortcut")}  # fmt: skip
    collect(rc, evals, deadline=rc.t0 + rc.budget_s)
    export_candidates(rc)
    rc.results["elapsed_s"] = rc.elapsed()
    rc.export_results()
    return rc.results


def variant_configs(rc: Recipe, checkpoint: Path) -> dict[str, Path]:
    """Each variant's [train] file: the DiT stage's data, SETTINGS, the scale's conditioned batch, then its own."""
    s = rc.scale
    values = {**rc.dit_values(), **SETTINGS, "init": str(checkpoint), "batch": s.cond_batch,
              "workers": s.cond_workers}  # fmt: skip
    return {n: rc.config(n, **{**values, **over}) for n, over in VARIANTS.items()}


def collect(rc: Recipe, procs: dict[str, subprocess.Popen[bytes]], deadline: float) -> None:
    """Wait for the evaluators until `deadline` (monotonic); stop the late ones. Each one's table goes into
    the results, or its failure: one evaluator's failure must not lose the others' tables."""
    failed: dict[str, str] = {}
    for name, p in procs.items():
        try:
            code = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait()
            failed[name] = "stopped at the end of the budget"
            continue
        path = rc.out / f"eval-{name}.json"
        if code == 0 and path.is_file():
            rc.results[name] = json.loads(path.read_text())
        else:
            failed[name] = f"exit {code}; see logs/eval-{name}.log"
    if failed:
        rc.results["failed_evaluations"] = failed


def export_candidates(rc: Recipe) -> None:
    """Each candidate's newest weights (no optimizer state) as EXPORT/<name>.tar, and the contact sheets as
    EXPORT/contact-sheets.tar: six files in all with the results and logs, as a lent GPU machine sends back
    at most 8 files of at most 16 MiB each (a tiny model's weights are about 13 MB)."""
    if rc.export is None:
        return
    rc.export.mkdir(parents=True, exist_ok=True)
    for name in CANDIDATES:
        folder = rc.latest(name)
        with tarfile.open(rc.export / f"{name}.tar", "w") as tar:
            for f in ("config.json", "model.safetensors", "shortcut.safetensors"):
                if (folder / f).is_file():
                    tar.add(folder / f, arcname=f"{name}/{f}")
    with tarfile.open(rc.export / "contact-sheets.tar", "w") as tar:
        for sheet in sorted(rc.out.glob("quality-*.png")):
            tar.add(sheet, arcname=sheet.name)
