"""Load the DiT weights users bring, whatever the container, into the original Wan2.1 names.

Layouts (model.md §1, design/weights.md): the original Wan folder (`config.json` +
`diffusion_pytorch_model.safetensors`, optionally sharded with an index json; the umT5 `.pth`, the
`Wan2.1_VAE.pth` and `google/` beside it are not the DiT and are passed over), the Diffusers repo root
(`model_index.json`: the DiT is in `transformer/`, shards + index + config) or that folder itself with
`WanTransformer3DModel` names, Self-Forcing / CausVid / StreamDiffusionV2 / LongLive torch pickles, and
LongLive's base plus a PEFT LoRA merged as W += (alpha/r) B A (lora.py).

Which entry of a pickle is the DiT (`checkpoint_key`): `auto` does what each upstream inference script
loads by default (containers.py says how it recognises them): `generator` first for LongLive
(`longlive*`), StreamDiffusionV2 (`wan_causal_dmd*/`) and CausVid; `generator_ema` first for everything
else, Self-Forcing's `self_forcing_dmd.pt` (README: `--use_ema`) included; then `state_dict`, `model`, a
bare dict. `generator` / `generator_ema` take exactly that entry or fail naming what the file holds.

Names: `model.`-style prefixes are stripped, and FSDP / activation-checkpoint wrapper parts
(`_fsdp_wrapped_module.`) wherever they occur in a name (LongLive's EMA has them inside block names).
A `shortcut.safetensors` beside the weights (shortcut distillation, streamer/model/shortcut.py) makes
the model a `ShortcutDiT` with that step-size embedding, checked as strictly as the rest.

A `config.json` is believed only where it agrees with the tensors (layer count from the block names,
widths from the shapes) and every size is within `_LIMITS`, both checked before anything is built.

Pickles are read only with `torch.load(weights_only=True)`. The whole state dict is checked against
the architecture (missing, unexpected and mis-shaped keys) before any model is built, so a wrong or
truncated file is a `CheckpointError` naming the problems, never a half-loaded model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from streamer.model.config import PRESETS, DiTConfig
from streamer.model.dit import DiT
from streamer.model.refiner import REFINER_FILE, build_refiner, check_refiner_state_dict
from streamer.model.shortcut import PREFIX, SHORTCUT_FILE, ShortcutDiT
from streamer.model.weights.containers import select
from streamer.model.weights.lora import merge_lora
from streamer.model.weights.names import diffusers_to_wan, is_diffusers
from streamer.model.weights.readers import (
    SHOW,
    CheckpointError,
    compare_state_dict,
    read_index,
    read_pickle,
    read_safetensors,
    require_regular_file,
    strip_prefixes,
    strip_wrappers,
)

# Files that sit beside the DiT in the Wan folder (and in Self-Forcing's wan_models/ copy of it) but are
# other models: the umT5 text encoder, the Wan VAE, the CLIP of the i2v models.
_NOT_THE_DIT = ("models_t5", "models_clip", "wan2.1_vae", "wan2.2_vae")


@dataclass
class CheckpointInfo:
    """What `read_checkpoint` found: weights in original Wan names plus how they were stored."""

    path: Path
    layout: str
    config: DiTConfig
    preset: str
    state_dict: dict[str, Tensor]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shortcut: dict[str, Tensor] | None = None  # the step embedding from shortcut.safetensors beside the file
    refiner: dict[str, Tensor] | None = None  # the pixel refiner from refiner.safetensors beside the file
    container: str = ""  # the pickle entry the weights came from ("" for safetensors)
    container_reason: str = ""  # why that entry: the auto rule that applied, or the key asked for
    holds: str = ""  # what the pickle holds at its top level

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())

    @property
    def dtypes(self) -> str:
        counts: dict[str, int] = {}
        for t in self.state_dict.values():
            counts[str(t.dtype).removeprefix("torch.")] = counts.get(str(t.dtype).removeprefix("torch."), 0) + 1
        return ", ".join(f"{k} ({v} tensors)" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _resolve(path: Path) -> Path:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file():
        return path
    if not path.is_dir():  # /dev/zero would be read forever, a FIFO blocks its reader: only stat(), never open
        raise CheckpointError(f"{path}: not a regular file or a folder (a device, FIFO or socket); "
                              "name the checkpoint file or its folder")
    if (path / "model_index.json").is_file():  # a Diffusers pipeline root: the DiT is one component of it
        if not (path / "transformer").is_dir():
            raise CheckpointError(f"{path}: a Diffusers pipeline folder (model_index.json) without transformer/, "
                                  "where its DiT would be")  # fmt: skip
        return _resolve(path / "transformer")
    for name in (
        "diffusion_pytorch_model.safetensors.index.json",
        "diffusion_pytorch_model.safetensors",
        "model.safetensors.index.json",
        "model.safetensors",
        "model.pt",
    ):
        if (path / name).is_file():
            return path / name
    weights = (".safetensors", ".pt", ".pth")  # shortcut / refiner files only ever go with the weights beside them
    extras = (SHORTCUT_FILE, REFINER_FILE)
    files = sorted(p for p in path.iterdir() if p.suffix in weights and p.is_file() and p.name not in extras)
    others = [p for p in files if p.name.lower().startswith(_NOT_THE_DIT)]
    candidates = [p for p in files if p not in others]
    if len(candidates) == 1:  # e.g. a folder holding only self_forcing_dmd.pt
        return candidates[0]
    found = f" (found {', '.join(p.name for p in candidates[:SHOW])}; name one)" if candidates else ""
    passed = f"; {', '.join(p.name for p in others)}: the text encoder / VAE, not the DiT" if others else ""
    raise CheckpointError(
        f"{path}: directory holds no diffusion_pytorch_model.safetensors, model.safetensors or model.pt{found}{passed}"
    )


def _config_from_json(cfg_file: Path) -> DiTConfig | None:
    if not cfg_file.is_file():
        return None
    try:
        raw = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_file}: unreadable config ({e})") from e
    if not isinstance(raw, dict) or not ("dim" in raw or "num_attention_heads" in raw):
        return None  # some other component's config (VAE, scheduler): the shapes decide
    try:
        if "num_attention_heads" in raw:  # Diffusers
            heads = int(raw["num_attention_heads"])
            ints = {"dim": heads * int(raw["attention_head_dim"]), "num_layers": int(raw["num_layers"]),
                    "num_heads": heads, "ffn_dim": int(raw["ffn_dim"]), "in_dim": int(raw.get("in_channels", 16)),
                    "out_dim": int(raw.get("out_channels", 16)), "freq_dim": int(raw.get("freq_dim", 256)),
                    "text_dim": int(raw.get("text_dim", 4096))}  # fmt: skip
        else:
            if raw.get("model_type", "t2v") != "t2v":
                raise CheckpointError(f"{cfg_file}: model_type {raw['model_type']!r} is not supported (text-to-video only)")
            ints = {"dim": int(raw["dim"]), "num_layers": int(raw["num_layers"]), "num_heads": int(raw["num_heads"]),
                    "ffn_dim": int(raw["ffn_dim"]), "in_dim": int(raw.get("in_dim", 16)),
                    "out_dim": int(raw.get("out_dim", 16)), "freq_dim": int(raw.get("freq_dim", 256)),
                    "text_dim": int(raw.get("text_dim", 4096)), "text_len": int(raw.get("text_len", 512)),
                    "head_width": int(raw.get("head_dim", 0)),
                    "cond_luma_factor": int(raw.get("cond_luma_factor", 0))}  # fmt: skip
        patch = tuple(int(p) for p in raw.get("patch_size", (1, 2, 2)))
        eps = float(raw.get("eps", 1e-6))
        _check_bounds({**ints, "patch_size": patch, "eps": eps}, f"{cfg_file}")  # before anything is built from it
        return DiTConfig(**ints, patch_size=patch, eps=eps)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{cfg_file}: not a Wan or Diffusers transformer config ({e})") from e


# Far beyond any released Wan model (the 14B: dim 5120, 40 layers, 40 heads, ffn 13824), yet small enough
# that building the model's skeleton on the meta device stays well under a second (about 2 ms per layer).
_LIMITS = {"dim": 16384, "num_layers": 256, "num_heads": 256, "ffn_dim": 65536, "in_dim": 4096, "out_dim": 256,
           "freq_dim": 4096, "text_dim": 16384, "text_len": 4096, "head_width": 1024, "cond_luma_factor": 64}  # fmt: skip
_ZERO_ALLOWED = ("head_width", "cond_luma_factor")  # 0 = not pruned / no luma planes


def _check_bounds(values: dict[str, object], where: str) -> None:
    """CheckpointError naming every architecture value outside _LIMITS (or not positive) in `where`."""
    bad = []
    for key, top in _LIMITS.items():
        v = values.get(key)
        low = 0 if key in _ZERO_ALLOWED else 1
        if isinstance(v, int) and not low <= v <= top:
            bad.append(f"{key} = {v} (allowed {low}..{top})")
    patch = values.get("patch_size")
    if isinstance(patch, tuple) and (len(patch) != 3 or not all(1 <= p <= 16 for p in patch)):
        bad.append(f"patch_size = {list(patch)} (three sizes of 1..16)")
    eps = values.get("eps")
    if isinstance(eps, float) and not 0 < eps < 1:  # NaN fails both comparisons
        bad.append(f"eps = {eps} (between 0 and 1)")
    if bad:
        raise CheckpointError(f"{where}: architecture out of range: {'; '.join(bad)}")


def _block_count(sd: dict[str, Tensor]) -> int:
    return len({k.split(".")[1] for k in sd if k.startswith("blocks.")})


def _check_json_against_tensors(cfg: DiTConfig, sd: dict[str, Tensor], cfg_file: Path, file: Path) -> None:
    """config.json must describe the tensors it travels with, checked from names and shapes alone before
    any model is built: a config claiming a million layers would otherwise build (slowly, without bound)
    a skeleton of that size just to report it as missing keys."""

    def dim(key: str, axis: int) -> int | None:
        t = sd.get(key)
        return int(t.shape[axis]) if t is not None and t.dim() > axis else None

    patch = tuple(int(p) for p in sd["patch_embedding.weight"].shape[2:]) if "patch_embedding.weight" in sd else None
    head = dim("head.head.weight", 0)
    facts = [  # (config key, config value, value in the file or None where the file lacks the tensor, from where)
        ("num_layers", cfg.num_layers, _block_count(sd), "blocks in the file"),
        ("dim", cfg.dim, dim("patch_embedding.weight", 0), "patch_embedding.weight"),
        ("in_dim", cfg.in_dim, dim("patch_embedding.weight", 1), "patch_embedding.weight"),
        ("patch_size", list(cfg.patch_size), list(patch) if patch else None, "patch_embedding.weight"),
        ("ffn_dim", cfg.ffn_dim, dim("blocks.0.ffn.0.weight", 0), "blocks.0.ffn.0.weight"),
        ("text_dim", cfg.text_dim, dim("text_embedding.0.weight", 1), "text_embedding.0.weight"),
        ("freq_dim", cfg.freq_dim, dim("time_embedding.0.weight", 1), "time_embedding.0.weight"),
        ("num_heads x head width", cfg.attn_dim, dim("blocks.0.self_attn.q.weight", 0), "blocks.0.self_attn.q.weight"),
        ("out_dim x patch", cfg.out_dim * math.prod(cfg.patch_size), head, "head.head.weight"),
    ]
    wrong = [f"{key} {want} vs {got} ({source})" for key, want, got, source in facts if got is not None and got != want]
    if wrong:
        raise CheckpointError(f"{cfg_file}: config.json does not match the tensors of {file.name}: {'; '.join(wrong)}")


def _config_from_shapes(sd: dict[str, Tensor]) -> DiTConfig:
    """Infer the architecture from tensor shapes; heads come from a matching preset, else head_dim 128."""
    try:
        pe = sd["patch_embedding.weight"]
        dim, in_dim, patch = pe.shape[0], pe.shape[1], tuple(int(p) for p in pe.shape[2:])
        layers = _block_count(sd)
        ffn = sd["blocks.0.ffn.0.weight"].shape[0]
        text_dim = sd["text_embedding.0.weight"].shape[1]
        freq = sd["time_embedding.0.weight"].shape[1]
        out_dim = sd["head.head.weight"].shape[0] // math.prod(patch)
    except (KeyError, IndexError, ValueError) as e:
        raise CheckpointError(f"cannot tell the architecture from the tensors (missing or odd {e}); "
                              "is this a Wan2.1 DiT checkpoint?") from e  # fmt: skip
    for cfg in PRESETS.values():
        if (cfg.dim, cfg.num_layers, cfg.ffn_dim, cfg.text_dim, cfg.in_dim) == (dim, layers, ffn, text_dim, in_dim):
            return cfg
    heads = dim // 128 if dim % 128 == 0 else max(1, dim // 64)
    return DiTConfig(dim=dim, num_layers=layers, num_heads=heads, ffn_dim=ffn, in_dim=in_dim, out_dim=out_dim,
                     patch_size=patch, freq_dim=freq, text_dim=text_dim)  # type: ignore[arg-type]  # fmt: skip


def preset_name(cfg: DiTConfig) -> str:
    for name, p in PRESETS.items():
        if p == cfg or (p.dim, p.num_layers, p.num_heads, p.ffn_dim, p.text_dim) == (
            cfg.dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, cfg.text_dim,
        ):  # fmt: skip
            return name
    return "custom"


def check_state_dict(sd: dict[str, Tensor], cfg: DiTConfig) -> list[str]:
    """Problems (missing / unexpected / mis-shaped keys, non-float tensors) against the architecture."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in DiT(cfg).state_dict().items()}
    return compare_state_dict(sd, want)


def check_shortcut_state_dict(sd: dict[str, Tensor], cfg: DiTConfig) -> list[str]:
    """Problems of a shortcut.safetensors' tensors against the step embedding of a `ShortcutDiT(cfg)`."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in ShortcutDiT(cfg).state_dict().items() if k.startswith(PREFIX)}
    return compare_state_dict(sd, want)


# ---- LoRA -----------------------------------------------------------------------------------------------
def read_checkpoint(
    path: str | Path,
    lora: str | Path | None = None,
    *,
    lora_alpha: float | None = None,
    checkpoint_key: str = "auto",
) -> CheckpointInfo:
    """Read any supported layout into original Wan names, detect the architecture and list problems.

    `checkpoint_key` picks the entry of a training pickle (containers.py); an explicit key a file does
    not have, safetensors included, is a CheckpointError naming what the file holds.
    Raises CheckpointError when the file cannot be read at all, or when its config.json disagrees with its
    tensors or either claims an absurd size (checked before any model is built); shape problems go in
    `.problems`.
    """
    file = _resolve(Path(path))
    choice = None
    if file.name.endswith(".index.json"):
        sd, container = read_index(file), "sharded safetensors"
    elif file.suffix == ".safetensors":
        sd, container = read_safetensors(file), "safetensors"
    else:
        sd, choice = select(read_pickle(file), file, checkpoint_key)
        container = f"torch pickle ({choice.key})"
    if choice is None and checkpoint_key != "auto":
        raise CheckpointError(f"{file}: checkpoint key {checkpoint_key!r} asked for, but a {container} file holds "
                              "one state dict with no generator / generator_ema entries; use 'auto'")  # fmt: skip
    sd, notes = strip_wrappers(sd, file)
    sd, stripped = strip_prefixes(sd)
    if stripped:
        notes.append(f"stripped prefix {' + '.join(repr(p) for p in stripped)}")
    names, collisions = "Wan", []
    if is_diffusers(list(sd)):
        renamed: dict[str, Tensor] = {}
        for k, v in sd.items():
            new = diffusers_to_wan(k)
            if new in renamed:
                collisions.append(f"{k} -> {new}")
            renamed[new] = v
        sd, names = renamed, "Diffusers"
    # config.json travels with safetensors exports (Wan, Diffusers); training pickles carry only tensors.
    cfg_file = file.parent / "config.json"
    from_json = _config_from_json(cfg_file) if container.endswith("safetensors") else None
    if from_json is not None:
        _check_json_against_tensors(from_json, sd, cfg_file, file)
        notes.append("dims from config.json")
    cfg = from_json or _config_from_shapes(sd)
    _check_bounds(dataclasses.asdict(cfg), str(file))  # many tiny tensors named blocks.N.* can claim any depth
    problems = check_state_dict(sd, cfg)
    if collisions:
        problems.append(f"{len(collisions)} keys collide after the Diffusers rename: {', '.join(collisions[:SHOW])}")
    if lora is not None and not problems:
        lora_problems, summary = merge_lora(sd, Path(lora), lora_alpha)
        problems += lora_problems
        notes.append(f"LoRA {lora}: {summary}")
    shortcut, sc_file = None, file.parent / SHORTCUT_FILE
    if sc_file.is_file() and file != sc_file:  # unreadable: CheckpointError naming the file; misfit: problems
        shortcut = read_safetensors(sc_file)
        problems += [f"{sc_file}: {p}" for p in check_shortcut_state_dict(shortcut, cfg)]
    refiner, rf_file = None, file.parent / REFINER_FILE
    if rf_file.is_file() and file != rf_file:
        refiner = read_safetensors(rf_file)
        problems += [f"{rf_file}: {p}" for p in check_refiner_state_dict(refiner, cfg.text_dim)]
    layout = f"{container}, {names} names"
    info = CheckpointInfo(file, layout, cfg, preset_name(cfg), sd, problems, notes, shortcut, refiner)
    if choice is not None:
        info.container, info.container_reason, info.holds = choice.key, choice.reason, choice.holds
    return info


def load_dit(
    path: str | Path,
    *,
    lora: str | Path | None = None,
    lora_alpha: float | None = None,
    preset: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    checkpoint_key: str = "auto",
) -> tuple[DiT, str]:
    """(DiT with the checkpoint's weights, LoRA merged, in inference precision; a one-line report).

    `preset`, when given, must match the detected architecture. Raises CheckpointError otherwise.
    `checkpoint_key` picks a training pickle's entry: "auto", "generator" or "generator_ema".
    """
    info = read_checkpoint(path, lora, lora_alpha=lora_alpha, checkpoint_key=checkpoint_key)
    if info.problems:
        raise CheckpointError(
            f"{info.path} ({info.layout}) does not fit the Wan2.1 DiT:\n  " + "\n  ".join(info.problems)
        )
    if preset is not None and info.preset != preset:
        raise CheckpointError(f"{info.path} is a {info.preset} checkpoint (dim {info.config.dim}, "
                              f"{info.config.num_layers} layers) but the config asks for {preset}")  # fmt: skip
    with torch.device("meta"):
        model = DiT(info.config) if info.shortcut is None else ShortcutDiT(info.config)
    model.load_state_dict({**info.state_dict, **(info.shortcut or {})}, strict=True, assign=True)
    report = f"{info.path.name}: {info.preset}, {info.layout}" + "".join(f"; {n}" for n in info.notes)
    if info.container:  # which of a pickle's entries was loaded matters (EMA or raw weights): say why
        report += f"; {info.container_reason}"
    if info.shortcut is not None:
        report += " + shortcut step embedding"
    if info.refiner is not None:  # a submodule: moved with the DiT, kept float32 (DiT.full_precision_modules)
        model.refiner = build_refiner(info.refiner)
        report += " + pixel refiner"
    del info  # drop the loader's references so dtype casts below can free the file's tensors
    return model.to(device).to_inference_dtype(dtype).eval().requires_grad_(False), report


def inspect_command(args: argparse.Namespace) -> int:
    """`streamer model inspect PATH [--lora FILE] [--key KEY]`: layout, the pickle entries found and the one
    chosen, preset, dtype, parameters, problems; 1 on problems."""
    from streamer.doctor import clip, os_error_text

    lora = getattr(args, "lora", None)
    try:
        if lora is not None:  # named as the argument it came from (the reader refuses it anyway)
            try:
                require_regular_file(Path(lora))
            except CheckpointError as e:
                raise CheckpointError(f"--lora {e}") from e
        info = read_checkpoint(args.path, lora, checkpoint_key=getattr(args, "key", "auto"))
    except CheckpointError as e:
        print(f"error: {clip(str(e), 2000)}")
        return 1
    except OSError as e:  # unreadable, or a name too long for the filesystem
        print(f"error: {os_error_text(e)}")
        return 1
    c = info.config
    print(f"file:       {info.path}")
    print(f"layout:     {info.layout}" + "".join(f"; {n}" for n in info.notes))
    if info.container:
        print(f"holds:      {info.holds}")
        print(f"chosen:     {info.container} ({info.container_reason})")
    print(f"preset:     {info.preset} (dim {c.dim}, {c.num_layers} layers, {c.num_heads} heads, ffn {c.ffn_dim}, "
          f"text {c.text_dim})")  # fmt: skip
    print(
        f"latents:    in {c.in_dim} / out {c.out_dim} channels"
        + (": input-conditioned (each pass also gets the chunk's clean input latent)" if c.conditions_on_input else "")
        + (f" and its luma at full resolution ({c.luma_channels} planes, factor {c.cond_luma_factor})"
           if c.cond_luma_factor else "")
    )  # fmt: skip
    print(f"dtype:      {info.dtypes}")
    print(f"parameters: {info.num_params:,} in {len(info.state_dict)} tensors")
    if info.shortcut is not None:
        n = sum(t.numel() for t in info.shortcut.values())
        print(f"shortcut:   step-size embedding ({SHORTCUT_FILE}, {n:,} parameters): the engine passes the step size")
    if info.refiner is not None:
        n = sum(t.numel() for t in info.refiner.values())
        print(f"refiner:    pixel refiner ({REFINER_FILE}, {n:,} parameters): each decoded chunk is refined with its "
              "input frames")  # fmt: skip
    if info.problems:
        print("problems:\n  " + "\n  ".join(info.problems))
        return 1
    print("problems:   none")
    return 0
