"""Which entry of a training pickle holds the DiT weights (`model.checkpoint_key`, `streamer model inspect --key`).

The causal-video repos save one torch pickle with several state dicts in it (`generator`, `generator_ema`,
`critic`, ...) and their inference scripts differ in which one they load by default. Which one a script
reads is a property of the script, not of the file, so `auto` looks at the file's name and folder only to
recognise the upstream release it came from, and at the contents for what is actually there:

- LongLive (`longlive*.pt`): `generator` first. Its inference config has `use_ema: false`.
- StreamDiffusionV2 (a `wan_causal_dmd*/` folder, e.g. `wan_causal_dmd_v2v/model.pt`): `generator` first.
  Its loader takes the first of generator, generator_ema, state_dict, bare dict.
- CausVid (`autoregressive_checkpoint*/` or `bidirectional_checkpoint*/`): `generator` first. Its inference
  reads `['generator']`; the release saves no EMA anyway.
- Everything else, Self-Forcing's `self_forcing*.pt` included: `generator_ema` first, then `generator`.
  Self-Forcing's README runs inference with `--use_ema`, and a training run of that codebase
  (`checkpoint_model_*/model.pt`) saves the EMA beside the raw weights; when a trainer kept an EMA it is the
  copy meant for sampling.

After those two come `state_dict`, then `model`, then a bare dict of tensors. An explicit `generator` or
`generator_ema` takes exactly that entry; a file without it is a `CheckpointError` naming what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from torch import Tensor

from streamer.config import CheckpointKey
from streamer.model.weights.readers import SHOW, CheckpointError, unwrap

CHECKPOINT_KEYS: tuple[str, ...] = get_args(CheckpointKey)
_EMA_FIRST = ("generator_ema", "generator", "state_dict", "model")
_GENERATOR_FIRST = ("generator", "generator_ema", "state_dict", "model")


@dataclass(frozen=True)
class ContainerChoice:
    """The entry the weights came from ("bare dict" when the pickle is the state dict itself) and why."""

    key: str
    reason: str
    holds: str  # what the pickle holds at its top level, for `streamer model inspect`


def auto_order(path: Path) -> tuple[tuple[str, ...], str]:
    """(container keys in the order `auto` tries them, the upstream rule that decided it) for this file."""
    name, folder = path.name.lower(), path.parent.name.lower()
    if name.startswith("longlive"):
        return _GENERATOR_FIRST, "LongLive file (longlive*): its inference config has use_ema: false"
    if folder.startswith("wan_causal_dmd"):
        return _GENERATOR_FIRST, "StreamDiffusionV2 folder (wan_causal_dmd*/): its loader takes generator first"
    if folder.startswith(("autoregressive_checkpoint", "bidirectional_checkpoint")):
        return _GENERATOR_FIRST, "CausVid folder: its inference reads generator"
    if name.startswith("self_forcing"):
        return _EMA_FIRST, "Self-Forcing file (self_forcing*): its README runs inference with --use_ema"
    return _EMA_FIRST, "no known upstream file name: the EMA when one was saved, else generator"


def describe(obj: Any) -> str:
    """What a pickle holds at its top level: its entries with their tensor counts, or 'a bare state dict'."""
    if not isinstance(obj, dict):
        return type(obj).__name__
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return f"a bare state dict of {len(obj)} tensors"
    parts = []
    for k, v in obj.items():
        if isinstance(v, dict):
            parts.append(f"{k} ({sum(isinstance(t, Tensor) for t in v.values())} tensors)")
        else:
            parts.append(f"{k} ({type(v).__name__})")
    more = f" (+{len(parts) - SHOW} more)" if len(parts) > SHOW else ""
    return ", ".join(parts[:SHOW]) + more


def select(obj: Any, path: Path, key: str = "auto") -> tuple[dict[str, Tensor], ContainerChoice]:
    """The DiT state dict out of a loaded pickle, by `key` ('auto', 'generator' or 'generator_ema')."""
    if key not in CHECKPOINT_KEYS:
        raise CheckpointError(f"checkpoint key {key!r} is not one of {', '.join(map(repr, CHECKPOINT_KEYS))}")
    holds = describe(obj)
    if key == "auto":
        order, reason = auto_order(path)
        sd, where = unwrap(obj, order, path)
        return sd, ContainerChoice(where, f"auto: {reason}", holds)
    if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
        raise CheckpointError(f"{path}: checkpoint key {key!r} asked for, but the file has no {key!r} entry; "
                              f"it holds: {holds}")  # fmt: skip
    sd, where = unwrap(obj, (key,), path)
    return sd, ContainerChoice(where, f"checkpoint key {key!r} asked for", holds)
