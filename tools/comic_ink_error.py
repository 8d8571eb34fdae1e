"""Where a model's comic error lies: on the ink (the look's dark outlines) or in its flat colour bands.

    python tools/comic_ink_error.py                                 # the shipped tiny model, 1,200 frames, CPU
    python tools/comic_ink_error.py --checkpoint runs/x/checkpoints/step_0002800 --frames 300

Streams the quality evaluator's held-out stream (the same frames and seed, tiny's shipped settings: 1 step,
strength 0.45) through the model with comic's first prompt, and splits the squared error against the comic
target between ink pixels (where the look's ink layer is above INK_MIN: about 8 % of the frame) and the
rest. The same split for the autoencoder's round trip of the target (about the best the model can reach
through it), for comic drawn on the round trip of the input (what is left of the look when the input is
seen only through its latent, as a plain input-conditioned DiT sees it: streamer/model/condition.py) and
for the untouched input. Comic is the one look the shipped model fails (issue 14); this
says which half of the look is missing. PSNRs here pool the squared error over every frame; the evaluator
averages per-frame PSNRs, about 0.5 dB higher on comic.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from streamer.model.loading import load_parts, resolve_device
from streamer.train.data import BuiltinRecipe
from streamer.train.evaluate import shipped_settings
from streamer.train.heldout import Progress, heldout_segments, make_engine, run_stream
from streamer.train.looks import LOOKS, comic, comic_layers
from streamer.train.media import to_unit

INK_MIN = 0.05  # ink opacity above which a pixel counts as an outline


@dataclass
class Split:
    """Squared error summed over ink pixels and over the rest, with their pixel counts."""

    ink: float = 0.0
    rest: float = 0.0
    n_ink: float = 0.0
    n_rest: float = 0.0

    def add(self, pred: Tensor, target: Tensor, ink_mask: Tensor) -> None:
        """pred, target [1, 3, H, W] in [0, 1]; ink_mask [1, 1, H, W] of 0/1."""
        err = (pred - target).square().mean(1, keepdim=True)
        self.ink += float((err * ink_mask).sum())
        self.rest += float((err * (1 - ink_mask)).sum())
        self.n_ink += float(ink_mask.sum())
        self.n_rest += float((1 - ink_mask).sum())

    def row(self, name: str) -> str:
        total = self.ink + self.rest
        share = 100 * self.ink / total if total else 0.0
        return (f"| {name} | {_db(total, self.n_ink + self.n_rest)} | {share:.0f} % | {_db(self.ink, self.n_ink)} | "
                f"{_db(self.rest, self.n_rest)} |")  # fmt: skip


def _db(sse: float, n: float) -> str:
    return "—" if n == 0 else "∞" if sse == 0 else f"{10 * math.log10(n / sse):.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="streamer/model/embedded/tiny", help="DiT folder, or 'random'")
    p.add_argument("--vae", default="streamer/model/embedded/tiny/vae.safetensors", help="autoencoder, or 'random'")
    p.add_argument("--frames", type=int, default=1200)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--stream-seed", type=int, default=1, help="the held-out stream (the evaluator's default)")
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error("--frames must be at least 1")
    m = shipped_settings(args.checkpoint, args.vae, args.width, args.height, args.device)  # as the evaluator scores
    parts = load_parts(m, resolve_device(m.device))
    recipe = BuiltinRecipe(("comic",), (args.height, args.width), part="heldout")
    segments = list(heldout_segments(recipe, args.frames, args.stream_seed, parts.device))
    splits = {"model output": Split(), "autoencoder round trip of the target": Split(),
              "comic of the autoencoder's round trip of the input": Split(), "input (no transform)": Split()}  # fmt: skip
    flat_sse = [0.0]  # the output against the flat bands alone (no ink)

    def on_output(index: int, inp: Tensor, target: Tensor, out: Tensor) -> None:
        x, t, o = (to_unit(f[None]) for f in (inp, target, out))
        flat, ink = comic_layers(x)
        mask = (ink > INK_MIN).float()
        with torch.no_grad():
            vae, dtype = parts.vae, next(parts.vae.parameters()).dtype
            trip = vae.decode_video(vae.encode_video(t[None].to(dtype)))[0].float()
            seen = comic(vae.decode_video(vae.encode_video(x[None].to(dtype)))[0].float())
        for split, y in zip(splits.values(), (o, trip, seen, x), strict=True):
            split.add(y, t, mask)
        flat_sse[0] += float((o - flat.clamp(0, 1)).square().mean(1).sum())

    run_stream(make_engine(m, parts), segments, "comic", LOOKS["comic"].prompts[0], args.frames,
               Progress(args.frames, parts.device), on_output)  # fmt: skip
    counts = splits["input (no transform)"]
    n_ink, n_all = counts.n_ink, counts.n_ink + counts.n_rest
    print(f"comic, {args.frames} held-out frames, {args.checkpoint}; ink pixels {100 * n_ink / n_all:.1f} % of all\n")
    print("| against the comic target | PSNR | share of the error on ink | PSNR on ink | PSNR elsewhere |")
    print("|---|---|---|---|---|")
    for name, split in splits.items():
        print(split.row(name))
    print(f"\nThe model output against the flat bands alone (no ink): {_db(flat_sse[0], n_all)} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
