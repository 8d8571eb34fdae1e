"""How the embedded tiny model is made: every stage, in one command, inside a time budget.

    python -m streamer.train.recipe --out runs/embedded [--budget-s 540] [--export DIR] [--vae FILE]
    python -m streamer.train.recipe --out runs/v4 --from streamer/model/embedded/tiny --export DIR
    python -m streamer.train.recipe --out runs/variants --continue streamer/model/embedded/tiny --export DIR
    python -m streamer.train.recipe --out /tmp/smoke --smoke      # the same plumbing on a CPU, a few minutes

Stages (one GPU; each is an ordinary `streamer train` / `streamer prune` / evaluator process):
 1. vae       the tiny per-frame autoencoder at 256x256 (--vae FILE: reuse a finished one instead).
 2. dit       three variants side by side on the one GPU, same data, same step count: "full"
              (diffusion forcing + history augmentation + shortcut distillation), "no-history" and
              "no-shortcut" (the ablations the tables in docs/training.md compare against).
 3. prune     "full" keeps 2 of 4 heads and 512 of 1024 FFN channels, then fine-tunes.
 4. evaluate  held-out drift (full vs no-history), steps (full vs no-shortcut) - while 3 to 5 run -
              then steps before/after pruning (streamer.train.evaluate).
 5. condition the fine-tuned model widened to take the clean input latent (in_dim 32), fine-tuned
              conditioned with v4's settings (streamer.train.recipe_stages).
 6. refine    a pixel refiner fitted to the conditioned model's own stream output (`streamer train
              refiner`, streamer/train/refine.py): the detail the latent loses, comic's ink above all.
 7. quality   held-out quality of the refined model at the shipped settings, with a contact sheet.
 8. export    the refined model + autoencoder -> EXPORT/embedded/ (what ships in
              streamer/model/embedded/tiny), the contact sheet and every table as JSON.

--from CHECKPOINT runs only 5-8 on an existing model (its folder's vae.safetensors unless --vae): v4 was
made that way from v3; a model that already is input-conditioned is continued without widening.
--continue CHECKPOINT trains a shipped input-conditioned model on as five variants side by side and compares
them (quality, drift, steps): streamer.train.recipe_continue.

Each training stage has a step target (its cosine schedule) and a time cap (its share of the budget):
a stage that runs slower than planned stops early, checkpointed, and the results say where.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.model.refiner import REFINER_FILE
from streamer.train import recipe_stages as stages
from streamer.train.looks import LOOKS
from streamer.train.recipe_continue import run_continue

log = logging.getLogger("streamer.train.recipe")


@dataclass(frozen=True)
class Scale:
    """Sizes of one recipe run: the real one (GPU) or the smoke test (CPU)."""

    width: int
    height: int
    frames: int  # latent frames per DiT clip
    batch: int
    workers: int  # batch-preparing processes per training process
    drift_minutes: float
    segment_frames: int  # frames per look in the steps/quality evaluation
    device: str
    fast_path: bool  # evaluate through the CUDA-graph path (eager is launch-bound: ~34 fps on an H100)
    steps: tuple[int, int, int, int]  # vae, dit, finetune, condition step targets (each also stops at its share)
    cond_batch: int  # the conditioned fine-tuning's batch and data workers (v4: 64 clips, 8 workers)
    cond_workers: int
    dtype: str  # training autocast of the DiT stages (bf16 on the GPU, as v3 and v4 were trained)
    quality_looks: str  # looks of the quality evaluation ("": all 8)
    continue_steps: int  # --continue's step target (the variants' cosine schedule; each also stops at its share)
    refine: tuple[int, int]  # the pixel refiner's frames per (look, prompt) and fit steps


# Step targets from the first GPU run (H100, 2026-11-25): vae 8.7 steps/s; DiT ~2 steps/s per variant
# with three side by side once the history corruptions moved into the data workers. The conditioned
# stage's: v4's 2,063 steps (two H100 calls of 360 s + 390 s at 1.4-3.0 steps/s, 2026-12-06). --continue's
# 700: five trainers sharing an H100 made 285-637 steps in 260 s (1.1-2.4 steps/s, 2026-12-07), so a call
# stops at its time share first, checkpointed, with the rate still at 60 % of its peak.
# The refiner's: v5's (2026-12-07, the 2-core CPU: 8 min collecting, 9 min fitting; seconds on a GPU).
REAL = Scale(256, 256, 4, 32, 4, 10.0, 150, "auto", True, (500, 600, 150, 2100), 64, 8, "bfloat16", "", 700,
             (180, 5000))  # fmt: skip
SMOKE = Scale(32, 32, 3, 2, 0, 0.02, 6, "cpu", False, (20, 6, 4, 4), 2, 0, "float32", "noir,sketch", 4, (2, 4))
DRIFT_LOOKS = ("watercolour", "noir")
# v4.1's conditioned continuation of v4 (2026-12-06): the four looks v4 failed drawn 2-3 times as often
V41_LOOKS = "noir,neon,neon,comic,comic,comic,sketch,sketch,thermal,sepia,pixel,pixel,pixel,watercolour"
DRIFT_EVAL_S = 200.0  # --drift-only: budget kept for start-up and two 10-minute streams side by side

# Shares of the budget as training-loop time caps (the rest: process start-up ~25 s per stage, widening,
# pruning, the evaluations after the fine-tunings, export). With --from the skipped stages' shares go to
# "condition" (0.75 of the budget: v4's first call trained 360 s of a 505 s budget).
SHARE = {"vae": 0.08, "dit": 0.3, "finetune": 0.07, "condition": 0.3}

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-history": {"p_history": 0.0},
    "no-shortcut": {"p_shortcut": 0.0},
}
PRUNE_HEADS, PRUNE_FFN = 2, 512


def _toml(values: dict[str, Any]) -> str:
    """A [train] table: strings, numbers, booleans and lists of them (JSON literals are valid TOML)."""
    lines = ["[train]"]
    for k, v in values.items():
        lines.append(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}")
    return "\n".join(lines) + "\n"


class Recipe:
    """Runs the stages under `out`; every process logs to out/logs/NAME.log."""

    def __init__(self, out: Path, scale: Scale, budget_s: float, export: Path | None) -> None:
        # absolute: a [train] file's relative out_dir is read from the file's own folder (configs/)
        out, export = out.resolve(), export.resolve() if export else None
        self.out, self.scale, self.budget_s, self.export = out, scale, budget_s, export
        self.t0 = time.monotonic()
        (out / "configs").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
        self.results: dict[str, Any] = {"scale": scale.__dict__, "budget_s": budget_s, "stages": {}}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cond_looks: tuple[str, ...] = ()  # the conditioned stage's train.looks ("": every look once)
        self.vae = (
            out / "vae" / "none.safetensors"
        )  # the trained autoencoder, once the vae stage (or --drift-only) sets it

    # ---- processes ------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        logf = (self.out / "logs" / f"{name}.log").open("ab")
        log.info("start %s: %s", name, " ".join(args))
        # Each process gets a few threads: three trainers, their data workers and the evaluators share the
        # machine's cores (torch's default, one thread per core in every process, oversubscribes it).
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=logf, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """Ends every process still running (a failed stage must not leave evaluators behind)."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()

    def _wait(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        for name, p in procs.items():
            if p.wait() != 0:
                tail = (self.out / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} failed (exit {p.returncode}); end of its log:\n{tail}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # ---- training -------------------------------------------------------------------------------
    def config(self, name: str, **values: Any) -> Path:
        s = self.scale
        base = {"preset": "tiny", "width": s.width, "height": s.height, "batch": s.batch, "workers": s.workers,
                "device": s.device, "out_dir": str(self.out / name), "sample_every": 0, "log_every": 5,
                "save_every": 100, "keep_checkpoints": 2}  # fmt: skip
        path = self.out / "configs" / f"{name}.toml"
        path.write_text(_toml({**base, **values}))
        return path

    def train(self, configs: dict[str, Path], steps: int, seconds: float) -> None:
        """Train every config to `steps` side by side, each stopping early (checkpointed) at `seconds`."""
        cap = str(max(0.05, seconds / 60))
        self._wait({n: self._spawn(n, ["streamer", "train", "-c", str(c), "--steps", str(steps), "--max-minutes",
                                       cap]) for n, c in configs.items()})  # fmt: skip
        for n in configs:
            stage: dict[str, Any] = {
                "target_steps": steps,
                "steps": int(self.latest(n).name.split("_")[-1]),
                "log": self._log_tail(n),
            }
            self.results["stages"][n] = stage
            log.info("%s reached step %s: %s", n, stage["steps"], stage["log"][-1:])

    def _log_rows(self, name: str) -> list[dict[str, Any]]:
        path = self.out / name / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def _log_tail(self, name: str) -> list[dict[str, Any]]:
        rows = self._log_rows(name)
        return rows[:: max(1, len(rows) // 20)] + rows[-1:]

    def latest(self, name: str) -> Path:
        from streamer.train.checkpoint import latest

        folder = latest(self.out / name)
        if folder is None:
            raise RuntimeError(f"{name}: no checkpoint written")
        return folder

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, name: str, checkpoint: Path, mode: str, **extra: str) -> subprocess.Popen[bytes]:
        s = self.scale
        args = ["streamer.train.evaluate", "--mode", mode, "--checkpoint", str(checkpoint), "--vae", str(self.vae),
                "--device", s.device, "--width", str(s.width), "--height", str(s.height),
                "--json", str(self.out / f"eval-{name}.json")]  # fmt: skip
        for k, v in extra.items():
            args += [f"--{k.replace('_', '-')}", v]
        if s.fast_path:
            args.append("--fast-path")
        return self._spawn(f"eval-{name}", args)

    # ---- the whole recipe -----------------------------------------------------------------------
    def run(self, vae: Path | None = None) -> dict[str, Any]:
        """Every stage from scratch (`vae`: reuse this finished autoencoder instead of training one)."""
        s, b = self.scale, self.budget_s
        if vae is None:
            vae_cfg = self.config("vae", stage="vae", frames=2, lr=1.5e-3, warmup=50)
            self.train({"vae": vae_cfg}, s.steps[0], SHARE["vae"] * b)
            self.vae = self.latest("vae") / "vae.safetensors"
        else:
            self.vae = vae

        dit = self.dit_values()
        configs = {f"dit-{n}": self.config(f"dit-{n}", **dit, **over) for n, over in VARIANTS.items()}
        self.train(configs, s.steps[1], SHARE["dit"] * b)
        full = self.latest("dit-full")

        evals = self.drift_evals({n: self.latest(f"dit-{n}") for n in ("full", "no-history")}, DRIFT_LOOKS)
        evals |= {
            "steps-full": self.evaluate("steps-full", full, "steps", frames=str(s.segment_frames)),
            "steps-no-shortcut": self.evaluate("steps-no-shortcut", self.latest("dit-no-shortcut"), "steps",
                                               frames=str(s.segment_frames)),
        }  # fmt: skip
        pruned = self.out / "pruned"
        calib = self.config("calibration", **{**dit, "batch": min(8, s.batch), "workers": 0})
        self._wait({"prune": self._spawn("prune", ["streamer", "prune", str(full), "--out", str(pruned), "--heads",
                                                    str(PRUNE_HEADS), "--ffn", str(PRUNE_FFN), "--config",
                                                    str(calib), "--calib-batches", "3", "--force"])})  # fmt: skip
        ft_cfg = self.config("finetune", **{**dit, "init": str(pruned), "lr": 2e-4, "warmup": 20})
        self.train({"finetune": ft_cfg}, s.steps[2], SHARE["finetune"] * b)
        plain = self.latest("finetune")
        evals["steps-pruned"] = self.evaluate("steps-pruned", plain, "steps", frames=str(s.segment_frames))
        shipped = stages.refine(self, stages.condition(self, plain, SHARE["condition"] * b))  # evaluations beside
        self._wait(evals)
        self._finish(shipped, list(evals))
        return self.results

    def run_from(self, checkpoint: Path, vae: Path | None = None) -> dict[str, Any]:
        """Only the conditioning stages on an existing model (v4 from v3): the skipped stages' shares go to them."""
        self.vae = vae or checkpoint / "vae.safetensors"
        if not self.vae.is_file():
            raise RuntimeError(f"no autoencoder at {self.vae} (pass --vae FILE)")
        shipped = stages.condition(self, checkpoint, sum(SHARE.values()) * self.budget_s)
        self._finish(stages.refine(self, shipped), [])
        return self.results

    def _finish(self, shipped: Path, done: list[str]) -> None:
        """Quality of the shipped (conditioned) model at its settings - its drift too while the budget allows -
        then the export and every table."""
        self._export_model(shipped)
        evals = {"quality": stages.evaluate_quality(self, shipped)}
        if self.elapsed() < self.budget_s - 100:
            evals |= self.drift_evals({"shipped": shipped}, DRIFT_LOOKS)
        self._wait(evals)
        for name in [*done, *evals]:
            self.results[name] = json.loads((self.out / f"eval-{name}.json").read_text())
        self.results["elapsed_s"] = self.elapsed()
        if self.export is not None and (self.out / "quality.png").is_file():
            self.export.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.out / "quality.png", self.export / "contact-sheet.png")
        self.export_results()

    def drift_evals(self, models: dict[str, Path], looks: tuple[str, ...]) -> dict[str, subprocess.Popen[bytes]]:
        """One drift evaluator per (model, look), started side by side."""
        minutes = str(self.scale.drift_minutes)
        return {
            f"drift-{n}-{look}": self.evaluate(f"drift-{n}-{look}", ckpt, "drift", minutes=minutes, looks=look)
            for n, ckpt in models.items() for look in looks
        }  # fmt: skip

    def dit_values(self) -> dict[str, Any]:
        """The DiT stage's settings shared by every variant: window/sinks as the daemon streams tiny, v3's
        video-to-video share and its cap on their noise (the levels the daemon streams at)."""
        return {"vae": str(self.vae), "frames": self.scale.frames, "lr": 6e-4, "warmup": 50, "window": 3, "sinks": 1,
                "dtype": self.scale.dtype, "p_paired": 0.75, "paired_max_sigma": 0.7}  # fmt: skip

    def run_drift_ablation(self, vae: Path, looks: tuple[str, ...]) -> dict[str, Any]:
        """Only the drift comparison: "full" and "no-history" trained side by side on a finished
        autoencoder, then each streamed for drift_minutes per look (held out)."""
        s, b = self.scale, self.budget_s
        self.vae = vae
        names = ("full", "no-history")
        configs = {f"dit-{n}": self.config(f"dit-{n}", **self.dit_values(), **VARIANTS[n]) for n in names}
        self.train(configs, s.steps[1], max(0.05, b - DRIFT_EVAL_S))
        evals = self.drift_evals({n: self.latest(f"dit-{n}") for n in names}, looks)
        self._wait(evals)
        for name in evals:
            self.results[name] = json.loads((self.out / f"eval-{name}.json").read_text())
        self.results["elapsed_s"] = self.elapsed()
        self.export_results()
        return self.results

    # ---- export ---------------------------------------------------------------------------------
    def _export_model(self, shipped: Path) -> None:
        if self.export is None:
            return
        emb = self.export / "embedded"
        emb.mkdir(parents=True, exist_ok=True)
        for f in ("model.safetensors", "config.json", "shortcut.safetensors", REFINER_FILE):
            if (shipped / f).is_file():
                shutil.copyfile(shipped / f, emb / f)
        shutil.copyfile(self.vae, emb / "vae.safetensors")
        log.info("exported the shipped model to %s", emb)

    def export_results(self) -> None:
        """Write the stages' results (recipe-results.json) and their logs (logs.txt) into the export folder, if set."""
        if self.export is None:
            return
        self.export.mkdir(parents=True, exist_ok=True)
        (self.export / "recipe-results.json").write_text(json.dumps(self.results, indent=1, default=str))
        with open(self.export / "logs.txt", "w") as f:
            for p in sorted((self.out / "logs").glob("*.log")):
                f.write(f"===== {p.name}\n{p.read_text(errors='replace')[-20000:]}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="working folder (checkpoints, logs, configs)")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget for all stages")
    p.add_argument("--export", type=Path, help="folder for the shipped files and the result tables")
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks the plumbing")
    p.add_argument("--drift-only", type=Path, metavar="VAE", help="only the drift ablation (full vs no-history), "
                   "trained on this finished autoencoder")  # fmt: skip
    p.add_argument("--drift-looks", default=",".join(DRIFT_LOOKS), help="looks streamed by the drift evaluation")
    p.add_argument("--vae", type=Path, help="a finished autoencoder: skip the vae stage (with --from: instead of "
                   "the checkpoint folder's vae.safetensors)")  # fmt: skip
    p.add_argument("--from", dest="start", type=Path, metavar="CHECKPOINT", help="start from this DiT checkpoint "
                   "folder: only widen, conditioned fine-tune, quality and export (v4 was made so from v3)")  # fmt: skip
    p.add_argument("--continue", dest="cont", type=Path, metavar="CHECKPOINT", help="train this input-conditioned "
                   "model on as five variants side by side, then compare them (streamer.train.recipe_continue)")  # fmt: skip
    p.add_argument("--cond-looks", default="", help="the conditioned stage's looks, comma-separated; a look named "
                   f"k times is drawn k times as often (v4.1 from v4: {V41_LOOKS})")  # fmt: skip
    args = p.parse_args(argv)
    cond_looks = tuple(x.strip() for x in args.cond_looks.split(",") if x.strip())
    unknown = sorted({x for x in cond_looks if x not in LOOKS})
    if unknown:
        p.error(f"--cond-looks: unknown look(s) {', '.join(unknown)}; choose from {', '.join(LOOKS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recipe = Recipe(args.out, SMOKE if args.smoke else REAL, args.budget_s, args.export)
    recipe.cond_looks = cond_looks
    try:
        vae = args.vae.resolve() if args.vae else None
        if args.drift_only:
            results = recipe.run_drift_ablation(args.drift_only.resolve(), tuple(args.drift_looks.split(",")))
        elif args.start:
            results = recipe.run_from(args.start.resolve(), vae)
        elif args.cont:
            results = run_continue(recipe, args.cont.resolve(), vae)
        else:
            results = recipe.run(vae)
    except RuntimeError as e:
        log.error("%s", e)
        recipe.results["error"] = str(e)
        recipe.export_results()
        return 1
    finally:
        recipe.stop_all()
    log.info("done in %.0f s", results["elapsed_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
