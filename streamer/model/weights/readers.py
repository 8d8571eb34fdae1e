"""Public readers for weight files: safetensors (single or sharded by an index), torch pickles read with
`weights_only=True` (never executing code), and the unwrapping of training containers, name prefixes and
wrapper parts (FSDP).

Shared by the DiT checkpoint loader (checkpoints.py), the LoRA merger (lora.py) and the text encoder, so
every weight file obeys the same safety and error rules: a problem is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SHOW = 10  # keys listed per problem kind
PREFIXES = ("module.", "_orig_mod.", "model.", "base_model.model.")
# Wrapper modules that FSDP and activation checkpointing insert into parameter names. They can sit
# anywhere in a name (LongLive's EMA: `model.blocks.0._fsdp_wrapped_module.self_attn.q.weight`), so they
# are removed wherever they occur, as LongLive's own loader does, not only as a prefix.
WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and every problem found."""


def require_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it (stat only): /dev/zero would be read forever and
    a FIFO blocks its reader, so `model.checkpoint`, `model.lora` or a shard pointing at one would hang."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from e
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: not a regular file (a folder, device, FIFO or socket)")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    require_regular_file(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def _check_zip(path: Path) -> None:
    """Check what torch.load does not in a zip checkpoint: that each entry of the central directory points
    at its own local header (a damaged offset there makes torch read a tensor from another one's bytes),
    and the CRC-32 of data.pkl (a damaged byte there can still unpickle, as a different structure: one
    tensor's name bound to another's storage). The tensor records' CRCs are left unchecked: reading
    gigabytes to check them would double the load time, and a flipped value there is as undetectable as
    in a safetensors file. torch writes CRC 0 when asked not to compute them: 0 is taken as unknown."""
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return  # the legacy (non-zip) format has no directory and no checksums
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename.rsplit("/", 1)[-1] == "data.pkl" and info.CRC:
                z.read(info)  # raises BadZipFile on a CRC mismatch
            else:
                with z.open(info):  # reads the local header: BadZipFile if it is not this entry's
                    pass


def read_pickle(path: Path) -> Any:
    require_regular_file(path)
    try:
        _check_zip(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors, truncated zips, forbidden globals
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint with plain tensors ({type(e).__name__}: {e})"
        ) from e


def read_index(path: Path) -> dict[str, Tensor]:
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a sharded-checkpoint index with a weight_map ({e})") from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{path}: weight_map is not a mapping of tensor names to shard files")
    # Shards sit beside their index (every upstream export): a path elsewhere is refused, not followed.
    odd = sorted({v for v in weight_map.values() if Path(v).name != v or v in ("", ".", "..")})
    if odd:
        raise CheckpointError(f"{path}: shard names must be files beside the index, not {', '.join(odd[:SHOW])}")
    out: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        try:
            out.update(read_safetensors(path.parent / shard))
        except CheckpointError as e:
            raise CheckpointError(f"{path}: shard {e}") from e
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} keys of the index are in no shard: {', '.join(missing[:SHOW])}")
    return out


def unwrap(obj: Any, keys: tuple[str, ...], path: Path) -> tuple[dict[str, Tensor], str]:
    """Pick the weights out of a training container; returns (tensors, which entry)."""
    where = "bare dict"
    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), dict):
                obj, where = obj[key], key
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} entries are not tensors (e.g. {', '.join(bad[:SHOW])}); containers "
                              f"looked for: {', '.join(keys)}")  # fmt: skip
    return dict(obj), where


def strip_wrappers(sd: dict[str, Tensor], path: Path) -> tuple[dict[str, Tensor], list[str]]:
    """`sd` with every WRAPPERS part removed from its names; returns (tensors, notes on what was removed).

    Two names that become one are a CheckpointError naming it: silently keeping either tensor would load
    weights the file did not mean for that parameter.
    """
    notes = []
    for part in WRAPPERS:
        hits = sum(part in k for k in sd)
        if not hits:
            continue
        out: dict[str, Tensor] = {}
        for k, v in sd.items():
            new = k.replace(part, "")
            if new in out:
                raise CheckpointError(f"{path}: removing {part!r} makes two entries named {new!r}")
            out[new] = v
        sd = out
        notes.append(f"removed {part!r} from {hits} names")
    return sd, notes


def strip_prefixes(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    stripped = []
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                stripped.append(prefix)
                changed = True
    return sd, stripped


def compare_state_dict(sd: dict[str, Tensor], want: dict[str, tuple[int, ...]]) -> list[str]:
    """What keeps `sd` from loading into a module whose state dict has the shapes `want`, one line per kind."""
    problems: list[str] = []

    def listed(title: str, items: list[str]) -> None:
        if items:
            more = f" (+{len(items) - SHOW} more)" if len(items) > SHOW else ""
            problems.append(f"{len(items)} {title}: {', '.join(items[:SHOW])}{more}")

    listed("missing keys", sorted(set(want) - set(sd)))
    listed("unexpected keys", sorted(set(sd) - set(want)))
    listed("mis-shaped keys (file vs model)", sorted(
        f"{k} {list(sd[k].shape)} vs {list(want[k])}" for k in set(want) & set(sd) if tuple(sd[k].shape) != want[k]
    ))  # fmt: skip
    listed("non-float tensors", sorted(f"{k} ({v.dtype})" for k, v in sd.items() if not v.is_floating_point()))
    listed("non-dense tensors", sorted(f"{k} ({v.layout})" for k, v in sd.items() if v.layout != torch.strided))
    return problems
