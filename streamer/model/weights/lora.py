"""LongLive-style PEFT LoRA files merged into a DiT state dict before it is built (model.lora).

Read with the public readers (readers.py) (safetensors, or pickles with weights_only=True; container
keys and prefixes unwrapped the same way), so a LoRA file has the same safety and error rules as a checkpoint.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from torch import Tensor

from streamer.model.weights.names import diffusers_to_wan
from streamer.model.weights.readers import (
    SHOW,
    read_pickle,
    read_safetensors,
    strip_prefixes,
    strip_wrappers,
    unwrap,
)

_LORA_CONTAINER_KEYS = ("generator_lora", "lora", "state_dict")


def merge_lora(sd: dict[str, Tensor], lora_path: Path, alpha: float | None = None) -> tuple[list[str], str]:
    """Merge a PEFT LoRA into `sd` in place: W += scale * B @ A, scale = alpha / r (alpha / sqrt(r) with rsLoRA).

    alpha comes from `alpha`, else adapter_config.json beside the file (lora_alpha, r, use_rslora), else
    a per-module `.alpha` tensor, else alpha = r (LongLive: r 256, alpha 256). Returns (problems, summary).
    """
    raw = read_safetensors(lora_path) if lora_path.suffix == ".safetensors" else read_pickle(lora_path)
    lora, where = unwrap(raw, _LORA_CONTAINER_KEYS, lora_path)
    lora, _ = strip_wrappers(lora, lora_path)
    lora, _ = strip_prefixes(lora)
    # PEFT drops the adapter name when saving; a raw module state_dict keeps it (lora_A.default.weight).
    lora = {re.sub(r"\.(lora_[AB])\.[^.]+\.weight$", r".\1.weight", k): v for k, v in lora.items()}
    rslora, cfg_alpha = False, None
    cfg_file = lora_path.parent / "adapter_config.json"
    if cfg_file.is_file():
        try:
            acfg = json.loads(cfg_file.read_text())
            cfg_alpha, rslora = acfg.get("lora_alpha"), bool(acfg.get("use_rslora", False))
        except (OSError, ValueError) as e:
            return [f"{cfg_file}: unreadable adapter config ({e})"], ""
    problems: list[str] = []
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in lora if ".lora_A." in k or ".lora_B." in k})
    others = sorted(k for k in lora if ".lora_A." not in k and ".lora_B." not in k and not k.endswith(".alpha"))
    if others:
        problems.append(
            f"{len(others)} unsupported LoRA keys (only lora_A/lora_B pairs merge): {', '.join(others[:SHOW])}"
        )
    if not modules:
        problems.append(f"{lora_path}: no lora_A/lora_B weights found")
    updates: dict[str, Tensor] = {}
    ranks = set()
    for mod in modules:
        a, b = lora.get(f"{mod}.lora_A.weight"), lora.get(f"{mod}.lora_B.weight")
        target = diffusers_to_wan(f"{mod}.weight")
        if a is None or b is None:
            problems.append(f"LoRA module {mod} lacks lora_{'A' if a is None else 'B'}.weight")
            continue
        if target not in sd:
            problems.append(f"LoRA module {mod} targets {target}, which the checkpoint does not have")
            continue
        w = sd[target]
        if (
            a.dim() != 2
            or b.dim() != 2
            or w.dim() != 2
            or b.shape[1] != a.shape[0]
            or (b.shape[0], a.shape[1]) != w.shape
        ):
            problems.append(
                f"LoRA module {mod}: A {list(a.shape)} / B {list(b.shape)} do not fit {target} {list(w.shape)}"
            )
            continue
        r = a.shape[0]
        ranks.add(r)
        mod_alpha = alpha if alpha is not None else cfg_alpha
        if mod_alpha is None and f"{mod}.alpha" in lora:
            mod_alpha = float(lora[f"{mod}.alpha"])
        mod_alpha = float(r if mod_alpha is None else mod_alpha)
        scale = mod_alpha / (math.sqrt(r) if rslora else r)
        updates[target] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
    if not problems:
        sd.update(updates)
    summary = f"{len(updates)} layers from {where}, rank {sorted(ranks)}, alpha {alpha or cfg_alpha or 'r'}"
    return problems, summary


# ---- public entry points --------------------------------------------------------------------------------
