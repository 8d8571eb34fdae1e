"""Held-out evaluation of a model through the daemon's own engine: drift over a long live stream,
quality versus the number of denoising steps, and per-look quality with a contact sheet
(docs/training.md, "Evaluating a model"). `streamer train evaluate ...` runs the same `main`.

The input is a long, continuous "live" stream made only of the held-out part of the built-in media
(`BuiltinRecipe(..., part="heldout")`: clips training never saw): consecutive segments of 4-6 s, each
a held-out video window played forward and back (ping-pong) under a slow crop move, or a held-out still
under a synthetic camera move. The target of every frame is the look applied to that input frame. The
model runs as the daemon runs it (`load_parts` + `ModelTransform` from a validated [model] section,
`step()` per frame with the look's prompt), and the score is PSNR (dB, uint8 RGB) of its output against
the target, computed on the device so a GPU run is not slowed by per-frame host round trips.

Modes (one model per invocation, so several can run in parallel on one GPU):
- drift: one stream per look of --minutes minutes, PSNR per minute, last-minus-first and the slope;
- steps: the first --frames frames of the same stream for every look, a fresh engine per (look, steps),
  at each of --steps; the configured 2 steps is the "quality" number used before/after pruning;
- quality: the same frames for every look at the model's settings (model.steps, the preset's strength):
  PSNR against the target and the edge-structure score (streamer.train.quality, definition there), both
  for the untouched input too, a pass/fail against the quality target, and with --sheet a contact
  sheet PNG (a row per look: input | look target | output for --sheet-frames frames);
and `--report A.json B.json ...` prints one markdown table of several runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from streamer import config as app_config
from streamer.config import PRESET_DEFAULTS, ConfigError, ModelSettings
from streamer.model.loading import LoadedParts, ModelLoadError, load_parts, resolve_device
from streamer.train import quality
from streamer.train.data import BuiltinRecipe
from streamer.train.heldout import FPS, PSNR_CAP_DB, Progress, heldout_segments, make_engine, nanmean, run_stream
from streamer.train.looks import LOOKS
from streamer.train.media import MediaError
from streamer.train.quality import fmt_number

log = logging.getLogger(__name__)

DRIFT_LOOKS = ("watercolour", "noir")
MODES = ("drift", "steps", "quality")


# ---- drift and steps ------------------------------------------------------------------------------------
def _slope(ys: list[float]) -> float:
    """Least-squares slope of ys against 0, 1, 2, ... (dB per bucket); 0 for fewer than two points."""
    n = len(ys)
    if n < 2:
        return 0.0
    xm, ym = (n - 1) / 2, sum(ys) / n
    return sum((i - xm) * (y - ym) for i, y in enumerate(ys)) / sum((i - xm) ** 2 for i in range(n))


def evaluate_drift(
    parts: LoadedParts, m: ModelSettings, recipe: BuiltinRecipe, looks: list[str], frames: int, seed: int,
    bucket: int, progress: Progress,
) -> dict[str, Any]:  # fmt: skip
    """Per look: one stream of `frames` frames, mean PSNR per `bucket` frames (a minute at 30 fps)."""
    out: dict[str, Any] = {}
    for look in looks:
        engine = make_engine(m, parts)
        prompt = LOOKS[look].prompts[0]
        scores, identity = run_stream(engine, heldout_segments(recipe, frames, seed, engine.device), look, prompt,
                                      frames, progress)  # fmt: skip
        engine.close()
        scores, identity = scores.cpu(), identity.cpu()
        per = [nanmean(scores[a : a + bucket]) for a in range(0, frames, bucket)]
        out[look] = {
            "prompt": prompt,
            "psnr_per_bucket": per,
            "identity_per_bucket": [nanmean(identity[a : a + bucket]) for a in range(0, frames, bucket)],
            "mean_psnr": nanmean(scores),
            "last_minus_first_db": per[-1] - per[0],
            "slope_db_per_bucket": _slope(per),
            "missing_frames": int(torch.isnan(scores).sum()),
        }
        log.info("drift %s: %s dB per bucket", look, " ".join(f"{p:.2f}" for p in per))
    return out


def evaluate_steps(
    parts: LoadedParts, m: ModelSettings, recipe: BuiltinRecipe, looks: list[str], steps: list[int], frames: int,
    seed: int, progress: Progress,
) -> dict[str, Any]:  # fmt: skip
    """Mean PSNR per look at each step count over the same `frames` held-out frames; a fresh engine
    (clean stream) per (look, steps); plus the input's own PSNR against each look ("no transform")."""
    segments = list(heldout_segments(recipe, frames, seed, parts.device))
    per_steps: dict[str, dict[str, float]] = {str(k): {} for k in steps}
    identity: dict[str, float] = {}
    for look in looks:
        for k in steps:
            engine = make_engine(dataclasses.replace(m, steps=k), parts)
            scores, ident = run_stream(engine, segments, look, LOOKS[look].prompts[0], frames, progress)
            engine.close()
            per_steps[str(k)][look] = nanmean(scores.cpu())
            identity[look] = nanmean(ident.cpu())
        log.info("steps %s: %s", look, ", ".join(f"{k}: {per_steps[str(k)][look]:.2f} dB" for k in steps))
    means = {k: sum(v.values()) / len(v) for k, v in per_steps.items()}
    return {"per_look": per_steps, "mean": means, "identity": identity,
            "segments": [{"start": s.start, "frames": int(s.inputs.shape[0]), "media": s.source.path.name}
                         for s in segments]}  # fmt: skip


# ---- tables -----------------------------------------------------------------------------------------------
def markdown(results: list[dict[str, Any]]) -> str:
    """Markdown tables (PSNR in dB) of one or more runs' results."""
    lines: list[str] = []
    drift = [r for r in results if r["mode"] == "drift"]
    if drift:
        n = max(len(v["psnr_per_bucket"]) for r in drift for v in r["looks"].values())
        unit = "min" if all(r["bucket_frames"] == 60 * r["fps"] for r in drift) else "part"
        lines += [f"| model | look | {' | '.join(f'{unit} {i + 1}' for i in range(n))} | last − first | slope / {unit} |",
                  "|---|---|" + "---|" * (n + 2)]  # fmt: skip
        for r in drift:
            for look, v in r["looks"].items():
                cells = [fmt_number(x) for x in v["psnr_per_bucket"]] + [""] * (n - len(v["psnr_per_bucket"]))
                lines.append(f"| {r['label']} | {look} | {' | '.join(cells)} | {fmt_number(v['last_minus_first_db'], True)} "
                             f"| {fmt_number(v['slope_db_per_bucket'], True)} |")  # fmt: skip
    steps = [r for r in results if r["mode"] == "steps"]
    if steps:
        ks = sorted({int(k) for r in steps for k in r["steps"]["per_look"]})
        if lines:
            lines.append("")
        lines += [f"| model | look | input (no transform) | {' | '.join(f'{k} step' + 's' * (k > 1) for k in ks)} |",
                  "|---|---|---|" + "---|" * len(ks)]  # fmt: skip
        for r in steps:
            s = r["steps"]
            for look in [*s["identity"], "mean"]:
                ident = s["identity"].get(look, sum(s["identity"].values()) / max(1, len(s["identity"])))
                row = [s["per_look"].get(str(k), {}).get(look) if look != "mean" else s["mean"].get(str(k)) for k in ks]
                lines.append(f"| {r['label']} | {look} | {fmt_number(ident)} | "
                             + " | ".join("" if x is None else fmt_number(x) for x in row) + " |")  # fmt: skip
    if good := [r for r in results if r["mode"] == "quality"]:
        lines += ([""] if lines else []) + quality.markdown(good)
    return "\n".join(lines)


# ---- command line -----------------------------------------------------------------------------------------
def _parse_set(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs of [model] settings; VALUE is read as TOML (so 0.7, true, "x", [1, 2]), else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (a [model] setting)")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def model_settings(args: argparse.Namespace, steps: int | None = None) -> ModelSettings:
    """The [model] section the daemon would run with, validated by the daemon's own config checks."""
    model = {"checkpoint": args.checkpoint, "vae": args.vae, "width": args.width, "height": args.height,
             "device": args.device, "strength": args.strength, "seed": args.seed,
             "dtype": "float32"}  # the tables' math on every device (--set dtype=... overrides)  # fmt: skip
    model |= _parse_set(args.set)
    if steps is not None:
        model["steps"] = steps
    # Eager PyTorch by default, even on CUDA: the same math as the CPU daemon, so a GPU run's numbers
    # describe what the shipped tiny model does on a streamer's CPU. --fast-path (fused Triton kernels in
    # CUDA graphs: close to eager, not bit-equal) is for when eager is too slow: eager tiny is bound by
    # kernel launches (~28 ms/frame on an H100 at 256x256), the fast path ran ~9x faster there.
    model["fast_path"] = args.fast_path
    video = {"width": args.width, "height": args.height}
    return app_config.from_dict({"model": model, "video": video}, "streamer.train.evaluate arguments").model


def shipped_settings(checkpoint: str, vae: str, width: int, height: int, device: str) -> ModelSettings:
    """`model_settings` for one model at its preset's steps and strength, seed 0, float32, eager: what the
    quality mode scores (the pixel refiner's fit and tools/comic_ink_error.py stream the model so too)."""
    ns = argparse.Namespace(checkpoint=checkpoint, vae=vae, width=width, height=height, device=device, strength=0.0,
                            seed=0, set=[], fast_path=False)  # fmt: skip
    return model_settings(ns)


def build_parser(prog: str = "python -m streamer.train.evaluate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=MODES, default="steps")
    p.add_argument("--checkpoint", default="", help="DiT checkpoint folder (model.safetensors + config.json "
                   "[+ shortcut.safetensors]), or 'random' (seeded random weights: tests and smoke runs)")  # fmt: skip
    p.add_argument("--vae", default="", help="autoencoder file (vae.safetensors); 'random' with --checkpoint random")
    p.add_argument("--label", default="", help="the model's name in tables (default: the checkpoint folder's name)")
    p.add_argument("--looks", default="", help=f"comma-separated looks (default: drift {','.join(DRIFT_LOOKS)}, "
                   "steps and quality all)")  # fmt: skip
    p.add_argument("--minutes", type=float, default=10.0, help="drift: stream length at 30 fps input")
    p.add_argument("--bucket-seconds", type=float, default=60.0, help="drift: seconds of input per mean")
    p.add_argument("--steps", default="1,2,4", help="steps: denoising step counts")
    p.add_argument(
        "--frames", type=int, default=600, help="steps, quality: frames per look (the stream's first frames)"
    )
    p.add_argument("--sheet", type=Path, help="quality: write the contact sheet PNG here "
                   "(e.g. docs/images/embedded-v3-contact-sheet.png)")  # fmt: skip
    p.add_argument("--sheet-frames", type=int, default=3, help="quality: frames per look on the sheet")
    p.add_argument("--sheet-tile", type=int, default=0, help="quality: sheet frames scaled to this many pixels "
                   "on their longer side (0 = as evaluated)")  # fmt: skip
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--strength", type=float, default=ModelSettings.strength,
                   help="SDEdit strength (0 = the preset's: tiny "
                   f"{PRESET_DEFAULTS['tiny'].strength})")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="the engine's noise seed (model.seed)")
    p.add_argument("--fast-path", action="store_true", help="CUDA: the daemon's fused kernels + CUDA graphs "
                   "instead of eager PyTorch (faster; close to, not the same math as, the CPU daemon)")  # fmt: skip
    p.add_argument("--stream-seed", type=int, default=1, help="the held-out stream's seed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other [model] setting, e.g. --set window=4 --set motion_aware=false")  # fmt: skip
    p.add_argument("--media", nargs="+", type=Path, help="media files to split (default: the built-in media, "
                   "the same held-out part training left out)")  # fmt: skip
    p.add_argument("--json", type=Path, help="write every number and the run's facts here")
    p.add_argument("--report", nargs="+", type=Path, default=[], help="tabulate these runs' --json files instead")
    return p


def _check_paths(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.checkpoint:
        p.error("--checkpoint is required: a checkpoint folder (model.safetensors + config.json) or 'random'")
    if args.checkpoint != "random":
        folder = Path(args.checkpoint).expanduser()
        if not folder.is_dir() or not (folder / "model.safetensors").is_file():
            p.error(f"--checkpoint {args.checkpoint}: not a checkpoint folder (expected a folder holding "
                    "model.safetensors + config.json, e.g. runs/tiny-dit/checkpoints/step_0020000)")  # fmt: skip
        if not args.vae:
            p.error("--vae is required with a trained checkpoint (the vae.safetensors its DiT was trained with)")
    if args.vae and args.vae != "random" and not Path(args.vae).expanduser().is_file():
        p.error(f"--vae {args.vae}: no such file")


@torch.no_grad()
def _shortcut_state(dit: torch.nn.Module) -> str:
    """'none' (no step embedding), 'inert' (loaded but zero: never trained, d is ignored) or 'trained'.
    The engine passes the step size whenever the embedding is there; only a trained one changes the output."""
    emb = getattr(dit, "step_embedding", None)
    if emb is None:
        return "none"
    d = torch.tensor([0.5, 0.25], device=next(emb.parameters()).device)
    return "trained" if bool(emb(d).abs().amax() > 0) else "inert"


def _facts(args: argparse.Namespace, m: ModelSettings, parts: LoadedParts, recipe: BuiltinRecipe) -> dict[str, Any]:
    """What a reader of the numbers needs to know about the run (the JSON's header)."""
    probe = make_engine(m, parts)  # the engine as every stream of this run builds it (status, path, window)
    facts = {
        "mode": args.mode, "label": args.label or Path(args.checkpoint).name,
        "checkpoint": args.checkpoint if args.checkpoint == "random" else str(Path(args.checkpoint).resolve()),
        "vae": args.vae if args.vae in ("", "random") else str(Path(args.vae).resolve()),
        "engine": probe.status(), "sources": parts.sources, "random_parts": parts.random_parts,
        "shortcut": _shortcut_state(parts.dit),
        "window": probe.cache.window, "sinks": probe.cache.sinks, "settings": dataclasses.asdict(m),
        "device": str(parts.device), "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(parts.device) if parts.device.type == "cuda" else "cpu",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "fps": FPS,
        "stream_seed": args.stream_seed, "heldout_media": [x.path.name for x in recipe.media],
        "psnr": f"dB on uint8 RGB vs the look of the input frame, capped at {PSNR_CAP_DB:g}",
    }  # fmt: skip
    probe.close()
    return facts


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Load the model as the daemon does, build the held-out stream, run the selected mode."""
    _check_paths(parser, args)
    looks = [x.strip() for x in args.looks.split(",") if x.strip()] or [*(DRIFT_LOOKS if args.mode == "drift" else LOOKS)]  # fmt: skip
    if bad := [x for x in looks if x not in LOOKS]:
        parser.error(f"--looks: unknown {', '.join(bad)}; choose from {', '.join(LOOKS)}")
    try:
        steps = [int(x) for x in args.steps.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--steps {args.steps!r}: expected comma-separated step counts, e.g. 1,2,4")
    if not steps or min(steps) < 1 or args.frames < 1 or round(args.minutes * 60 * FPS) < 1:
        parser.error("--steps, --frames and --minutes must give at least one step and one frame")
    if args.sheet_frames < 1 or args.sheet_tile < 0:
        parser.error("--sheet-frames must be at least 1 and --sheet-tile 0 (as evaluated) or more pixels")
    m = model_settings(args)
    for k in steps if args.mode == "steps" else []:
        model_settings(args, k)  # each step count must be a valid setting too (e.g. with --set timesteps)
    started = time.monotonic()
    parts = load_parts(m, resolve_device(m.device))
    if args.checkpoint != "random" and (bad := [p for p in parts.random_parts if p != "text encoder"]):
        raise ModelLoadError(f"RANDOM weights in {', '.join(bad)}: evaluate a trained model with its own --vae")
    recipe = BuiltinRecipe(tuple(looks), (args.height, args.width), paths=args.media, part="heldout")
    result = _facts(args, m, parts, recipe)
    if args.mode == "drift":
        frames, bucket = round(args.minutes * 60 * FPS), max(1, round(args.bucket_seconds * FPS))
        progress = Progress(frames * len(looks), parts.device)
        found = evaluate_drift(parts, m, recipe, looks, frames, args.stream_seed, bucket, progress)
        result |= {"frames": frames, "bucket_frames": bucket, "looks": found}
    elif args.mode == "quality":
        progress = Progress(args.frames * len(looks), parts.device)
        found, rows = quality.evaluate_quality(parts, m, recipe, looks, args.frames, args.stream_seed, progress,
                                               args.sheet_frames)  # fmt: skip
        if args.sheet is not None:
            found["sheet"] = str(quality.contact_sheet(rows, args.sheet, args.sheet_tile))
            log.info("contact sheet: %s", args.sheet)
        result |= {"frames": args.frames, "quality": found}
    else:
        progress = Progress(args.frames * len(looks) * len(steps), parts.device)
        found = evaluate_steps(parts, m, recipe, looks, steps, args.frames, args.stream_seed, progress)
        result |= {"frames": args.frames, "steps": found}
    result["elapsed_s"] = time.monotonic() - started  # loading included
    result["frames_per_s"] = progress.done / max(time.monotonic() - progress.t0, 1e-9)  # data + looks + engine
    return result


def main(argv: list[str] | None = None, prog: str = "python -m streamer.train.evaluate") -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.report:
            results = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.report]
            if bad := [str(f) for f, r in zip(args.report, results, strict=True) if r.get("mode") not in MODES]:
                raise ValueError(f"not evaluator results (no {'/'.join(MODES)} mode): {', '.join(bad)}")
        else:
            results = [run(args, parser)]
    except (ConfigError, ModelLoadError, MediaError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json is not None and not args.report:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results[0], indent=2) + "\n", encoding="utf-8")
        log.info("results: %s", args.json)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
