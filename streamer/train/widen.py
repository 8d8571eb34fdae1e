"""Turn a plain DiT checkpoint into an input-conditioned one that starts out computing exactly the same.

    streamer train widen-input CHECKPOINT --out DIR [--force]

An input-conditioned DiT (`DiTConfig.conditions_on_input`: in_dim = 2 x out_dim) gets each chunk's clean
input latent beside the noisy one, concatenated on the channel axis (Wan2.1's I2V model takes its
condition latents the same way). Widening copies every tensor and gives `patch_embedding.weight` ZERO
columns for the new channels: the patch embedding is linear in its input, so the condition adds exactly
0 and the widened model's output is the original's for any input. Fine-tuning (train.init = DIR) then
teaches it to read the clean input, starting from what the original already does. config.json carries
the new in_dim, which the loader checks against the tensors; the step embedding
(shortcut.safetensors) is copied unchanged (it depends on dim alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from streamer.model.dit import DiT
from streamer.model.shortcut import ShortcutDiT, load_shortcut_file
from streamer.model.weights.checkpoints import CheckpointError, read_checkpoint
from streamer.train.checkpoint import save_dit_weights


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
    wide_cfg = dataclasses.replace(cfg, in_dim=2 * cfg.out_dim)
    sd = model.state_dict()
    w = sd["patch_embedding.weight"]  # [dim, in_dim, *patch]
    sd["patch_embedding.weight"] = torch.cat([w, torch.zeros_like(w)], dim=1)
    with torch.device("meta"):
        wide = type(model)(wide_cfg)
    wide.load_state_dict(sd, strict=True, assign=True)
    return wide.train(model.training)


def widen_checkpoint(src: str | Path, out: Path) -> DiT:
    """Read a DiT checkpoint (any layout the loader reads), widen it, write model.safetensors + config.json
    (+ shortcut.safetensors) into `out`. Returns the widened model (float32, CPU)."""
    info = read_checkpoint(src)
    if info.problems:
        raise CheckpointError(f"{info.path}: cannot widen: " + "; ".join(info.problems))
    shortcut = load_shortcut_file(info.path.parent)
    model: DiT = ShortcutDiT(info.config) if shortcut is not None else DiT(info.config)
    model.load_state_dict({**info.state_dict, **(shortcut or {})}, strict=True)
    wide = widen_input(model.float())
    sd = wide.state_dict()
    wan = {k: v for k, v in sd.items() if not k.startswith("step_embedding.")}
    steps = {k: v for k, v in sd.items() if k.startswith("step_embedding.")}
    save_dit_weights(out, wide.cfg, wan, steps or None)
    return wide


def main(argv: list[str] | None = None, prog: str = "streamer train widen-input") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="DiT checkpoint (file or folder), e.g. streamer/model/embedded/tiny")
    p.add_argument("--out", required=True, type=Path, help="folder for the widened checkpoint")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    args = p.parse_args(argv)
    out = args.out.expanduser()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.force)):
        print(f"error: {out} exists and is not an empty folder; use --force to overwrite", file=sys.stderr)
        return 1
    try:
        wide = widen_checkpoint(args.checkpoint, out)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = wide.cfg
    print(f"widened {args.checkpoint}: in_dim {c.out_dim} -> {c.in_dim} (the clean input latent; its patch-embedding "
          f"weights start at zero, so the model computes what it did); wrote {out} (fine-tune with train.init = '{out}')")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
