"""`streamer train refiner CHECKPOINT --out DIR`: fit a pixel refiner (streamer/model/refiner.py) to a
frozen model's own stream output.

    streamer train refiner streamer/model/embedded/tiny --out runs/refined            # the shipped model
    streamer train refiner runs/x/checkpoints/step_0002800 --vae runs/x/vae.safetensors --out runs/x-refined

Two phases, the model's own weights untouched:
1. Collect. The model streams the training part of the built-in media (never the held-out part the
   evaluator scores), each look with each of its first --prompts prompts, exactly as the daemon runs it:
   the engine's `step()` per frame, eager, at the evaluator's settings (the preset's steps and strength,
   float32). Every --keep-every'th output frame is kept with its input, its look's target and the
   prompt's text-encoder states. Training on what the engine really outputs, not on a training-time
   prediction, means the refiner learns to mend exactly the frames it will be given.
2. Fit. Random crops of those frames, a batch at a time, through the refiner; mean squared error against
   the look's target; Adam with a one-cycle schedule. A fresh refiner starts as the identity (its head
   is zero), so the fit can only move away from the model's output where that lowers the error.

Writes DIR: the checkpoint as a folder (model.safetensors + config.json [+ shortcut.safetensors]) and
refiner.safetensors, which the loader attaches (`streamer model inspect DIR` names it). A checkpoint that
already has a refiner is collected without it, and its refiner is replaced. Score the result with
`streamer train evaluate --mode quality --checkpoint DIR`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.config import ConfigError, ModelSettings
from streamer.model.loading import LoadedParts, ModelLoadError, load_parts, resolve_device
from streamer.model.refiner import PixelRefiner, refiner_of
from streamer.model.weights.checkpoints import CheckpointError
from streamer.train.checkpoint import save_dit
from streamer.train.data import BuiltinRecipe
from streamer.train.evaluate import shipped_settings
from streamer.train.heldout import Progress, make_engine, run_stream, stream_segments
from streamer.train.looks import LOOKS
from streamer.train.media import MediaError, to_unit

log = logging.getLogger(__name__)


@dataclass
class Collected:
    """The model's stream output with what the refiner needs beside it (uint8 frames [N, H, W, 3] on the
    CPU), and the text-encoder states [P, L, text_dim] of the P prompts the frames were made with."""

    inputs: Tensor
    outputs: Tensor
    targets: Tensor
    prompt: Tensor  # [N] int64: row of `states`
    states: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def collect(m: ModelSettings, parts: LoadedParts, looks: list[str], prompts: int, frames: int, seed: int,
            keep_every: int = 2) -> Collected:  # fmt: skip
    """Stream `frames` frames of the training media per (look, prompt) through a fresh engine each, and keep
    every `keep_every`'th output frame with its input and target."""
    kept: dict[str, list[Tensor]] = {"inputs": [], "outputs": [], "targets": []}
    index: list[int] = []
    states: list[Tensor] = []
    pairs = [(look, text) for look in looks for text in LOOKS[look].prompts[:prompts]]
    progress = Progress(frames * len(pairs), parts.device)
    for p, (look, text) in enumerate(pairs):
        engine = make_engine(m, parts)
        states.append(engine.text.encode([text]).float().cpu())
        recipe = BuiltinRecipe((look,), (m.height, m.width), part="train")

        def keep(i: int, inp: Tensor, target: Tensor, out: Tensor, p: int = p) -> None:
            if i % keep_every == 0:
                for name, frame in zip(kept, (inp, out, target), strict=True):
                    kept[name].append(frame.cpu())
                index.append(p)

        run_stream(engine, stream_segments(recipe, frames, seed + p, parts.device), look, text, frames, progress, keep)
        log.info("collected %s (%r): %d frames kept so far", look, text, len(index))
    lengths = {s.shape[1] for s in states}
    width = max(lengths)  # encoders that do not pad to a fixed length: pad with zeros, as the DiT does
    padded = torch.stack([F.pad(s[0], (0, 0, 0, width - s.shape[1])) for s in states])
    inputs, outputs, targets = (torch.stack(v) for v in kept.values())
    return Collected(inputs, outputs, targets, torch.tensor(index), padded)


def fit(refiner: PixelRefiner, data: Collected, *, steps: int, batch: int = 16, crop: int = 128, lr: float = 3e-3,
        seed: int = 0, device: torch.device | str = "cpu", log_every: float = 30.0) -> list[float]:  # fmt: skip
    """Fit `refiner` (in place, float32, on `device`) to map the collected outputs to their targets; returns
    the loss of every step. Crops of crop x crop (the frame if smaller) from random frames."""
    refiner.to(device).float().train().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(refiner.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    h, w = data.inputs.shape[1:3]
    ch, cw = min(crop, h), min(crop, w)
    losses: list[float] = []
    t0 = last = time.monotonic()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        y0 = int(torch.randint(0, h - ch + 1, (), generator=gen))
        x0 = int(torch.randint(0, w - cw + 1, (), generator=gen))
        x, y, t = (
            to_unit(f[idx, y0 : y0 + ch, x0 : x0 + cw]).to(device) for f in (data.inputs, data.outputs, data.targets)
        )
        look = refiner.prompt_vector(data.states[data.prompt[idx]].to(device))
        loss = F.mse_loss(refiner(y, x, look), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        now = time.monotonic()
        if now - last >= log_every or step == steps - 1:
            rate = (step + 1) / (now - t0)
            log.info("refiner step %d/%d: loss %.5f (%.1f dB), %.1f steps/s, ETA %.0f s", step + 1, steps, losses[-1],
                     -10 * math.log10(max(losses[-1], 1e-10)), rate, (steps - step - 1) / rate)  # fmt: skip
            last = now
    refiner.eval().requires_grad_(False)
    return losses


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="DiT checkpoint (file or folder), e.g. streamer/model/embedded/tiny")
    p.add_argument("--vae", default="", help="autoencoder file (default: the preset's, as the daemon picks it)")
    p.add_argument("--out", required=True, type=Path, help="folder for the checkpoint with its refiner")
    p.add_argument("--looks", default="", help="comma-separated looks (default: all)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per look (each look's first N)")
    p.add_argument("--frames", type=int, default=120, help="frames streamed per (look, prompt)")
    p.add_argument("--keep-every", type=int, default=2, help="keep every Nth output frame")
    p.add_argument("--steps", type=int, default=3000, help="fit steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128, help="crop side in pixels")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--filters", type=int, default=8, help="separable luma filters")
    p.add_argument("--hidden", type=int, default=24, help="hidden channels per pixel")
    p.add_argument("--kernel", type=int, default=17, help="filter taps (odd)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=7, help="the training streams and the fit's crops")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    looks = [s.strip() for s in args.looks.split(",") if s.strip()] or list(LOOKS)
    unknown = [name for name in looks if name not in LOOKS]
    if unknown:
        p.error(f"--looks: unknown {', '.join(unknown)}; choose from {', '.join(LOOKS)}")
    for name in ("prompts", "frames", "keep_every", "steps", "batch", "crop", "filters", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.kernel < 3 or args.kernel % 2 == 0:
        p.error("--kernel must be odd and at least 3")
    if args.kernel // 2 >= min(args.width, args.height, args.crop):
        p.error("--kernel is too large for the frame or crop (its reflect padding needs kernel / 2 < the side)")
    if not math.isfinite(args.lr) or args.lr <= 0:
        p.error("--lr must be a positive number")
    return looks


def main(argv: list[str] | None = None, prog: str = "streamer train refiner") -> int:
    p = build_parser(prog)
    args = p.parse_args(argv)
    looks = _check(p, args)
    out = args.out.expanduser()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.force)):
        print(f"error: {out} exists and is not an empty folder; use --force to overwrite", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    try:  # the evaluator's settings: what `streamer train evaluate` will score
        m = shipped_settings(args.checkpoint, args.vae, args.width, args.height, args.device)
        parts = load_parts(m, resolve_device(m.device))
    except (ConfigError, ModelLoadError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if parts.random_parts:
        print(f"error: {', '.join(parts.random_parts)} would be random weights; name a trained checkpoint and "
              "autoencoder", file=sys.stderr)  # fmt: skip
        return 1
    if refiner_of(parts.dit) is not None:
        log.info("%s has a pixel refiner: collecting without it, and replacing it", args.checkpoint)
        del parts.dit.refiner
    try:
        data = collect(m, parts, looks, args.prompts, args.frames, args.seed, args.keep_every)
    except MediaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    refiner = PixelRefiner(data.states.shape[-1], args.filters, args.hidden, args.kernel)
    losses = fit(refiner, data, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                 device=parts.device)  # fmt: skip
    parts.dit.refiner = refiner.to(parts.device)
    save_dit(out, parts.dit)
    tail = losses[-min(100, len(losses)) :]
    print(f"fitted a pixel refiner ({sum(t.numel() for t in refiner.parameters()):,} parameters) on {len(data)} frames "
          f"of {len(looks)} looks: loss {losses[0]:.5f} -> {sum(tail) / len(tail):.5f} (mean of the last "
          f"{len(tail)} steps); wrote {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
