"""Training checkpoints: weights in safetensors, optimizer/step in a small torch file, written atomically.

A checkpoint is a folder `out_dir/checkpoints/step_NNNNNNN/`:
- `model.safetensors` + `config.json`: the DiT in original Wan names, loadable by the project's loader
  (`model.checkpoint = ".../step_NNNNNNN"`) and by `train.init`; `shortcut.safetensors` beside it;
  or `vae.safetensors` (taew2_1 names) for the autoencoder stage;
- `ema.safetensors` when an EMA is kept;
- `state.pt`: step, optimizer state, the config it was trained with (read back with weights_only=True).
It is written into a temporary folder and renamed into place, and `checkpoints/latest` is replaced
atomically afterwards, so a kill at any moment leaves the previous checkpoint intact and resumable.
Randomness needs no saving: every step's batch and noise come from generators seeded by (seed, step, rank).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from streamer.model.config import DiTConfig
from streamer.model.dit import DiT
from streamer.model.refiner import PREFIX as REFINER_PREFIX
from streamer.model.refiner import REFINER_FILE, refiner_of
from streamer.model.shortcut import PREFIX as SHORTCUT_PREFIX

LATEST = "latest"


def wan_config_json(cfg: DiTConfig) -> dict[str, Any]:
    """The original Wan config.json fields (+ head_dim for a head-pruned model, cond_luma_factor for a
    luma-conditioned one) for `cfg`."""
    out: dict[str, Any] = {
        "model_type": "t2v", "dim": cfg.dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
        "ffn_dim": cfg.ffn_dim, "in_dim": cfg.in_dim, "out_dim": cfg.out_dim, "patch_size": list(cfg.patch_size),
        "freq_dim": cfg.freq_dim, "text_dim": cfg.text_dim, "text_len": cfg.text_len, "eps": cfg.eps,
    }  # fmt: skip
    if cfg.head_width:
        out["head_dim"] = cfg.head_width
    if cfg.cond_luma_factor:
        out["cond_luma_factor"] = cfg.cond_luma_factor
    return out


def _contiguous(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_dit_weights(folder: Path, cfg: DiTConfig, wan: dict[str, Tensor], shortcut: dict[str, Tensor] | None) -> None:
    """model.safetensors + config.json (+ shortcut.safetensors) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(wan), str(folder / "model.safetensors"), metadata={"format": "pt", "layout": "wan"})
    (folder / "config.json").write_text(json.dumps(wan_config_json(cfg), indent=2) + "\n")
    if shortcut:
        save_file(_contiguous(shortcut), str(folder / "shortcut.safetensors"), metadata={"format": "pt"})


def save_dit(folder: Path, model: DiT) -> None:
    """A loaded DiT as a checkpoint folder: model.safetensors + config.json, and shortcut.safetensors /
    refiner.safetensors when it has a step embedding / a pixel refiner (streamer/model/refiner.py)."""
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith(REFINER_PREFIX)}
    wan = {k: v for k, v in sd.items() if not k.startswith(SHORTCUT_PREFIX)}
    save_dit_weights(folder, model.cfg, wan, {k: v for k, v in sd.items() if k.startswith(SHORTCUT_PREFIX)} or None)
    refiner = refiner_of(model)
    if refiner is not None:
        save_file(_contiguous(refiner.state_dict()), str(folder / REFINER_FILE), metadata={"format": "pt"})


def save(
    out_dir: Path,
    step: int,
    *,
    weights: dict[str, dict[str, Tensor]],
    dit_cfg: DiTConfig | None,
    optimizer: dict[str, Any],
    train_cfg: Any,
    keep: int,
) -> Path:
    """Write checkpoint `step` atomically and prune to the newest `keep`. weights: file stem -> tensors
    ("model" + "shortcut" for the DiT, "vae", "ema")."""
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if "model" in weights:
        if dit_cfg is None:
            raise ValueError("a DiT checkpoint needs its DiTConfig")
        save_dit_weights(tmp, dit_cfg, weights["model"], weights.get("shortcut"))
    for stem, sd in weights.items():
        if stem not in ("model", "shortcut"):
            save_file(_contiguous(sd), str(tmp / f"{stem}.safetensors"), metadata={"format": "pt"})
    torch.save({"step": step, "optimizer": optimizer, "config": asdict(train_cfg)}, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / LATEST)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    root = out_dir / "checkpoints"
    pointer = root / LATEST
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / "state.pt").is_file():
            return cand
    done = sorted(p for p in root.glob("step_*") if (p / "state.pt").is_file())
    return done[-1] if done else None


def load_state(folder: Path) -> dict[str, Any]:
    """state.pt (step, optimizer, config), read with weights_only=True."""
    try:
        return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    except Exception as e:  # a truncated or foreign file: say which and why
        raise ValueError(f"{folder / 'state.pt'}: unreadable training state ({type(e).__name__}: {e})") from None


def load_weights(folder: Path, stem: str) -> dict[str, Tensor] | None:
    path = folder / f"{stem}.safetensors"
    return load_file(str(path)) if path.is_file() else None
