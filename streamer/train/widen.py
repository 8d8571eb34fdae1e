"""Widen a DiT checkpoint so that it starts out computing exactly what it did, with room to learn more.

    streamer train widen-input CHECKPOINT --out DIR [--force]
    streamer train widen-luma CHECKPOINT --out DIR [--factor 8] [--frames-per-latent 1] [--force]
    streamer train widen-ffn CHECKPOINT --ffn-dim N --out DIR [--force]

**widen-input**: an input-conditioned DiT (`DiTConfig.conditions_on_input`: in_dim = 2 x out_dim) gets
each chunk's clean input latent beside the noisy one, concatenated on the channel axis (Wan2.1's I2V
model takes its condition latents the same way). Widening copies every tensor and gives
`patch_embedding.weight` ZERO columns for the new channels: the patch embedding is linear in its input,
so the condition adds exactly 0 and the widened model's output is the original's for any input.

**widen-luma**: an input-conditioned DiT also gets the input's luma at full resolution, pixel-unshuffled
onto the latent grid (streamer/model/condition.py says why): frames_per_latent x factor² more input
channels after the clean latent's, again with ZERO patch-embedding columns.

**widen-ffn**: more FFN channels per block (the capacity that pruning took away). The new channels'
first-matrix rows start as nn.Linear would start them (uniform in ±1/sqrt(dim)), and their columns of the
second matrix start at ZERO, so they add exactly 0 to the residual stream until training moves those
columns; the columns get a gradient at once because the new channels' activations are not zero
(a zero first matrix would leave both at zero for good).

Fine-tuning (train.init = DIR) then teaches the new part, starting from what the original already does.
config.json carries the new shape, which the loader checks against the tensors; the step embedding
(shortcut.safetensors) is copied unchanged (it depends on dim alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from streamer.model.config import DiTConfig
from streamer.model.dit import DiT
from streamer.model.refiner import refiner_of
from streamer.model.weights.checkpoints import CheckpointError, load_dit
from streamer.train.checkpoint import save_dit

FFN_TILE = 64  # FFN widths stay multiples of the tensor-core tile, as pruning keeps them (prune.py)


def _rebuilt(model: DiT, cfg: DiTConfig, sd: dict[str, Tensor]) -> DiT:
    """A new model of `model`'s class with the config `cfg` and the tensors `sd`."""
    with torch.device("meta"):
        new = type(model)(cfg)
    new.load_state_dict(sd, strict=True, assign=True)
    return new.train(model.training)


def widen_input(model: DiT) -> DiT:
    """A new model of the same class with in_dim = 2 x out_dim, the original's weights, and zero patch-embedding
    weights for the condition channels (same device and dtypes as `model`)."""
    cfg = model.cfg
    if cfg.conditions_on_input:
        raise ValueError(f"the DiT is already input-conditioned (in_dim {cfg.in_dim} = 2 x out_dim {cfg.out_dim})")
    if cfg.in_dim != cfg.out_dim:
        raise ValueError(
            f"only a DiT with in_dim = out_dim can be widened (in_dim {cfg.in_dim}, out_dim {cfg.out_dim})"
        )
    sd = model.state_dict()
    w = sd["patch_embedding.weight"]  # [dim, in_dim, *patch]
    sd["patch_embedding.weight"] = torch.cat([w, torch.zeros_like(w)], dim=1)
    return _rebuilt(model, dataclasses.replace(cfg, in_dim=2 * cfg.out_dim), sd)


def widen_luma(model: DiT, factor: int = 8, frames_per_latent: int = 1) -> DiT:
    """A new model of the same class that also takes the input's luma planes (frames_per_latent x factor²
    channels: `DiTConfig.cond_luma_factor`), the original's weights, and zero patch-embedding weights for
    the new channels. The defaults are the embedded tiny autoencoder's (8x spatial, frame by frame)."""
    cfg = model.cfg
    if not cfg.conditions_on_input or cfg.cond_luma_factor:
        raise ValueError(
            "only an input-conditioned DiT without luma planes can be widened (streamer train widen-input first)"
            if not cfg.conditions_on_input
            else f"the DiT already takes luma planes (cond_luma_factor {cfg.cond_luma_factor})"
        )
    if factor < 1 or frames_per_latent < 1:
        raise ValueError(f"factor and frames per latent must be positive, got {factor} and {frames_per_latent}")
    sd = model.state_dict()
    w = sd["patch_embedding.weight"]  # [dim, in_dim, *patch]
    extra = frames_per_latent * factor * factor
    sd["patch_embedding.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1)
    return _rebuilt(model, dataclasses.replace(cfg, in_dim=cfg.in_dim + extra, cond_luma_factor=factor), sd)


def widen_ffn(model: DiT, ffn_dim: int, seed: int = 0) -> DiT:
    """A new model of the same class with `ffn_dim` FFN channels per block: the original's channels first,
    then new ones whose second-matrix columns are zero (same output for any input; seeded, so repeatable)."""
    cfg = model.cfg
    if ffn_dim <= cfg.ffn_dim or ffn_dim % FFN_TILE:
        raise ValueError(f"the new FFN width must be a multiple of {FFN_TILE} above the current {cfg.ffn_dim}, "
                         f"got {ffn_dim}")  # fmt: skip
    extra, bound = ffn_dim - cfg.ffn_dim, 1 / math.sqrt(cfg.dim)  # nn.Linear's own initial range
    gen = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for i in range(cfg.num_layers):
        up_w, up_b, down_w = (f"blocks.{i}.ffn.{k}" for k in ("0.weight", "0.bias", "2.weight"))
        new_rows = (torch.rand(extra, cfg.dim, generator=gen) * 2 - 1) * bound
        new_bias = (torch.rand(extra, generator=gen) * 2 - 1) * bound
        sd[up_w] = torch.cat([sd[up_w], new_rows.to(sd[up_w])])
        sd[up_b] = torch.cat([sd[up_b], new_bias.to(sd[up_b])])
        sd[down_w] = torch.cat([sd[down_w], sd[down_w].new_zeros(cfg.dim, extra)], dim=1)
    return _rebuilt(model, dataclasses.replace(cfg, ffn_dim=ffn_dim), sd)


def widen_checkpoint(src: str | Path, out: Path, widen: Callable[[DiT], DiT] = widen_input) -> DiT:
    """Load a DiT checkpoint (any layout the daemon's loader reads), widen it with `widen`, write
    model.safetensors + config.json (+ shortcut.safetensors) into `out`. Returns the widened model (float32, CPU).
    A pixel refiner is left behind: it was fitted to the narrower model's output (`streamer train refiner`
    fits one to the widened model once it is trained)."""
    model = load_dit(src)[0]
    if refiner_of(model) is not None:
        del model.refiner
    wide = widen(model)
    save_dit(out, wide)
    return wide


def main(argv: list[str] | None = None, prog: str = "streamer train widen-input", what: str = "input") -> int:
    """`widen-input`, `widen-luma` and `widen-ffn` (what = "input" | "luma" | "ffn"): the same checkpoint in,
    folder out."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="DiT checkpoint (file or folder), e.g. streamer/model/embedded/tiny")
    if what == "ffn":
        p.add_argument("--ffn-dim", type=int, required=True, help=f"the new FFN width (a multiple of {FFN_TILE})")
        p.add_argument("--seed", type=int, default=0, help="seed of the new channels' first-matrix rows")
    if what == "luma":
        p.add_argument("--factor", type=int, default=8, help="the autoencoder's spatial factor (tiny: 8)")
        p.add_argument("--frames-per-latent", type=int, default=1,
                       help="input frames per latent frame (the embedded tiny autoencoder: 1; TAEHV: 4)")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="folder for the widened checkpoint")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    args = p.parse_args(argv)
    out = args.out.expanduser()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.force)):
        print(f"error: {out} exists and is not an empty folder; use --force to overwrite", file=sys.stderr)
        return 1
    widens: dict[str, Callable[[DiT], DiT]] = {
        "input": widen_input,
        "luma": lambda m: widen_luma(m, args.factor, args.frames_per_latent),
        "ffn": lambda m: widen_ffn(m, args.ffn_dim, args.seed),
    }
    widen = widens[what]
    try:
        wide = widen_checkpoint(args.checkpoint, out, widen)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = wide.cfg
    change = {
        "input": f"in_dim {c.out_dim} -> {c.in_dim} (the clean input latent; its patch-embedding weights start at zero",
        "luma": f"in_dim -> {c.in_dim} (the input's luma planes; their patch-embedding weights start at zero",
        "ffn": f"FFN width -> {c.ffn_dim} (the new channels' output columns start at zero",
    }[what]
    print(f"widened {args.checkpoint}: {change}, so the model computes what it did); wrote {out} "
          f"(fine-tune with train.init = '{out}')")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
