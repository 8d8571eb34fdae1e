"""Architecture-aware pruning: remove the attention heads and FFN channels that matter least.

Importance is measured on a calibration batch, as each unit's actual contribution to the residual
stream: for a head, the mean norm of (head output @ its slice of the output projection); for an FFN
channel, mean |activation| x the norm of its column in the second FFN matrix. Every layer keeps the
same number of heads and channels (one DiTConfig, uniform shapes for CUDA graphs and kernels), chosen
so that every matrix dimension stays a multiple of 64 (the tensor-core tile): FFN width rounded down
to 64, attention width = heads x head_dim with head_dim 64 or 128.

q and k are RMS-normalised over the whole attention width, so dropping channels changes the RMS of the
rest; each norm's weight is rescaled by sqrt(mean-square of kept channels / mean-square of all),
measured on the same calibration batch, which makes removing a dead head exact.

The result is a new preset folder (config.json + model.safetensors, + shortcut.safetensors when the
source had one) that the project's loader reads and `streamer train` fine-tunes (`init = FOLDER`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from streamer.model.config import DiTConfig
from streamer.model.dit import DiT, linear
from streamer.train.checkpoint import save_dit_weights
from streamer.train.shortcut import SHORTCUT_FILE, ShortcutDiT

log = logging.getLogger(__name__)
TILE = 64


@dataclass
class Importance:
    """Per-layer scores: heads [layers, heads] for self and cross attention, ffn [layers, ffn_dim]; and
    per-channel mean squares of the q/k projections (for the RMSNorm rescale)."""

    self_heads: Tensor
    cross_heads: Tensor
    ffn: Tensor
    mean_sq: dict[str, Tensor] = field(default_factory=dict)


def measure(model: DiT, run_calibration: Callable[[DiT], None]) -> Importance:
    """Run `run_calibration(model)` (forwards on real data) with hooks that accumulate the scores."""
    cfg = model.cfg
    n, h, hd = cfg.num_layers, cfg.num_heads, cfg.head_dim
    scores = {"self": torch.zeros(n, h, dtype=torch.float64), "cross": torch.zeros(n, h, dtype=torch.float64),
              "ffn": torch.zeros(n, cfg.ffn_dim, dtype=torch.float64)}  # fmt: skip
    mean_sq: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def head_hook(kind: str, i: int, o: nn.Linear) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            y = args[0].detach().float().unflatten(-1, (h, hd))  # [B, S, H, D]
            w = o.weight.detach().float().view(-1, h, hd)  # [dim, H, D]
            contrib = torch.einsum("bshd,ohd->bsho", y, w).norm(dim=-1)  # [B, S, H]
            scores[kind][i] += contrib.double().mean(dim=(0, 1))

        return hook

    def ffn_hook(i: int, w2: nn.Linear) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            a = args[0].detach().double().abs().mean(dim=tuple(range(args[0].dim() - 1)))
            scores["ffn"][i] += a * w2.weight.detach().double().norm(dim=0)

        return hook

    def ms_hook(key: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> None:
            ms = out.detach().double().square().mean(dim=tuple(range(out.dim() - 1)))
            mean_sq[key] = mean_sq.get(key, 0) + ms  # type: ignore[assignment,operator]
            counts[key] = counts.get(key, 0) + 1

        return hook

    for i, block in enumerate(model.layers):
        hooks.append(block.self_attn.o.register_forward_pre_hook(head_hook("self", i, block.self_attn.o)))
        hooks.append(block.cross_attn.o.register_forward_pre_hook(head_hook("cross", i, block.cross_attn.o)))
        hooks.append(linear(block.ffn, 2).register_forward_pre_hook(ffn_hook(i, linear(block.ffn, 2))))
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k"):
                key = f"blocks.{i}.{attn}.{proj}"
                hooks.append(getattr(getattr(block, attn), proj).register_forward_hook(ms_hook(key)))
    try:
        with torch.no_grad():
            run_calibration(model)
    finally:
        for hk in hooks:
            hk.remove()
    return Importance(scores["self"], scores["cross"], scores["ffn"], {k: v / counts[k] for k, v in mean_sq.items()})


def pruned_config(cfg: DiTConfig, keep_heads: int, ffn_dim: int) -> DiTConfig:
    """The smaller config; raises when a dimension would not be a multiple of 64 or nothing is left."""
    if not 1 <= keep_heads <= cfg.num_heads:
        raise ValueError(f"keep_heads must be 1..{cfg.num_heads}, got {keep_heads}")
    if not TILE <= ffn_dim <= cfg.ffn_dim or ffn_dim % TILE:
        raise ValueError(f"ffn_dim must be a multiple of {TILE} in {TILE}..{cfg.ffn_dim}, got {ffn_dim}")
    if (keep_heads * cfg.head_dim) % TILE:
        raise ValueError(
            f"{keep_heads} heads x {cfg.head_dim} = {keep_heads * cfg.head_dim} is not a multiple of {TILE}"
        )
    return dataclasses.replace(cfg, num_heads=keep_heads, head_width=cfg.head_dim, ffn_dim=ffn_dim)


def _keep(scores: Tensor, k: int) -> Tensor:
    return scores.topk(k).indices.sort().values  # the k best, in their original order


def prune_state_dict(model: DiT, imp: Importance, new: DiTConfig) -> tuple[dict[str, Tensor], dict[str, list[int]]]:
    """The smaller model's state dict (original Wan names) and the kept head indices per layer/kind."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hd, kept_heads = model.cfg.head_dim, {}
    for i in range(model.cfg.num_layers):
        for attn, scores in (("self_attn", imp.self_heads[i]), ("cross_attn", imp.cross_heads[i])):
            heads = _keep(scores, new.num_heads)
            kept_heads[f"blocks.{i}.{attn}"] = heads.tolist()
            ch = (heads[:, None] * hd + torch.arange(hd)[None]).flatten()
            p = f"blocks.{i}.{attn}."
            for proj in ("q", "k", "v"):
                sd[p + f"{proj}.weight"] = sd[p + f"{proj}.weight"][ch]
                sd[p + f"{proj}.bias"] = sd[p + f"{proj}.bias"][ch]
            sd[p + "o.weight"] = sd[p + "o.weight"][:, ch]
            for proj in ("q", "k"):
                ms = imp.mean_sq.get(p + proj)
                scale = 1.0 if ms is None else float((ms[ch].mean() / ms.mean().clamp(min=1e-30)).sqrt())
                sd[p + f"norm_{proj}.weight"] = sd[p + f"norm_{proj}.weight"][ch] * scale
        ch = _keep(imp.ffn[i], new.ffn_dim)
        p = f"blocks.{i}.ffn."
        sd[p + "0.weight"], sd[p + "0.bias"] = sd[p + "0.weight"][ch], sd[p + "0.bias"][ch]
        sd[p + "2.weight"] = sd[p + "2.weight"][:, ch]
    return sd, kept_heads


def prune(
    model: DiT, run_calibration: Callable[[DiT], None], keep_heads: int, ffn_dim: int
) -> tuple[DiT, dict[str, list[int]]]:
    """A new, smaller DiT (fp32) with the least important heads and FFN channels removed."""
    new_cfg = pruned_config(model.cfg, keep_heads, ffn_dim)
    imp = measure(model, run_calibration)
    sd, kept = prune_state_dict(model, imp, new_cfg)
    small = DiT(new_cfg)
    small.load_state_dict({k: v for k, v in sd.items() if not k.startswith("step_embedding.")}, strict=True)
    return small.float().eval(), kept


def check_tiles(cfg: DiTConfig) -> list[str]:
    """Matrix dimensions of `cfg` that are not multiples of 64 (empty = all aligned)."""
    dims = {"dim": cfg.dim, "attn_dim": cfg.attn_dim, "ffn_dim": cfg.ffn_dim}
    return [f"{k} = {v}" for k, v in dims.items() if v % TILE]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _calibration(args: argparse.Namespace) -> tuple[DiT, Callable[[DiT], None], Path]:
    """The checkpoint to prune and a calibration function over the training recipe's clips."""
    from streamer.model.weights.checkpoints import CheckpointError, read_checkpoint
    from streamer.train import config as tconfig
    from streamer.train.data import build_source, make_batch, step_generator
    from streamer.train.forcing import make_plan, noisy_clip
    from streamer.train.objective import encode_clips, trainable_cross_kv
    from streamer.train.shortcut import ShortcutDiT, load_shortcut_file
    from streamer.train.trainer import TextStates, build_vae

    cfg = tconfig.load(args.config) if args.config else tconfig.TrainConfig()
    cfg = dataclasses.replace(cfg, p_history=0.0, p_shortcut=0.0)
    info = read_checkpoint(args.checkpoint)
    if info.problems:
        raise CheckpointError(f"{info.path}: " + "; ".join(info.problems))
    model = ShortcutDiT(info.config)
    model.load_weights(info.state_dict, load_shortcut_file(info.path.parent))
    vae = build_vae(dataclasses.replace(cfg, stage="dit")).eval().requires_grad_(False)
    source = build_source(cfg.data, cfg.looks, (cfg.height, cfg.width))
    from streamer.train import trainer

    enc = trainer.build_text_encoder(cfg.text_encoder, "", "cpu", torch.float32, text_dim=info.config.text_dim,
                             text_len=info.config.text_len)  # fmt: skip
    text = TextStates(enc.encode, torch.device("cpu"))

    def run(m: DiT) -> None:
        for i in range(args.calib_batches):
            batch = make_batch(source, cfg.batch, cfg.frames * vae.frames_per_latent, cfg.seed + 7, i, 0)
            z_in, z_tgt = encode_clips(vae, batch.inputs), encode_clips(vae, batch.targets)
            gen = step_generator(cfg.seed + 7, i, 0, "calibration")
            plan = make_plan(cfg, z_tgt.shape[0], z_tgt.shape[2], gen)
            x, t, _ = noisy_clip(plan, z_in, z_tgt, z_tgt, torch.randn(z_tgt.shape, generator=gen))
            kv = trainable_cross_kv(m, text(batch.prompts))  # type: ignore[arg-type]
            cond = z_in if m.cfg.conditions_on_input else None  # as training conditions it (objective.py)
            m(x, t, kv, chunk_frames=cfg.chunk_frames, window=cfg.window or None, sinks=cfg.sinks, cond=cond)

    return model, run, info.path.parent


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def prune_command(args: argparse.Namespace) -> int:
    """`streamer prune CHECKPOINT --out DIR [--heads N] [--ffn N] [--config TRAIN.toml]`; 1 with one line
    on stderr when the checkpoint or --out cannot be used."""
    from streamer.model.weights.checkpoints import CheckpointError

    out = Path(args.out).expanduser()
    try:  # --out first: calibrating and pruning take minutes, and their work would be thrown away
        if out.exists() and not out.is_dir():
            return _fail(f"--out {out} is not a folder")
        if out.exists() and any(out.iterdir()) and not args.force:
            return _fail(f"{out} exists and is not empty; use --force to overwrite")
        model, run, src_dir = _calibration(args)
    except (CheckpointError, OSError) as e:  # a missing, unreadable or broken checkpoint; an unreadable --out
        return _fail(str(e))
    cfg = model.cfg
    heads = args.heads or max(1, cfg.num_heads * 3 // 4)
    ffn = args.ffn or max(TILE, int(cfg.ffn_dim * 0.75) // TILE * TILE)
    small, kept = prune(model, run, heads, ffn)
    try:
        save_dit_weights(out, small.cfg, small.state_dict(), None)
        if (src_dir / SHORTCUT_FILE).is_file():  # the step embedding only depends on dim, which pruning keeps
            shutil.copyfile(src_dir / SHORTCUT_FILE, out / SHORTCUT_FILE)
    except OSError as e:
        return _fail(f"cannot write the pruned preset to {out}: {e.strerror or e}")
    step_embedding = model.step_embedding if isinstance(model, ShortcutDiT) else None  # not pruned, not counted
    before = param_count(model) - (param_count(step_embedding) if step_embedding is not None else 0)
    after = param_count(small)
    print(f"pruned {cfg.num_heads} -> {heads} heads, ffn {cfg.ffn_dim} -> {ffn}: {before:,} -> {after:,} parameters "
          f"({100 * after / before:.0f} %); wrote {out} (fine-tune with train.init = '{out}')")  # fmt: skip
    for name, idx in list(kept.items())[:4]:
        print(f"  {name}: kept heads {idx}")
    return 0
