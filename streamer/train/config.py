"""The training configuration: one TOML file (`[train]` table) -> a frozen, validated `TrainConfig`.

Unknown keys, wrong types and out-of-range values are errors that name the file and the key, so a
typo never silently trains with a default; the file is read and its keys checked by the daemon's
config loader (streamer/config/), so a typo gets the same "did you mean". Paths are resolved
relative to the config file.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.config import ConfigError, check_keys, read_toml

LOOK_NAMES = ("noir", "neon", "comic", "sketch", "thermal", "sepia", "pixel", "watercolour")


@dataclass(frozen=True)
class TrainConfig:
    """What to train, on what, and how (see docs/training.md for every key)."""

    stage: str = "dit"  # "dit" (the diffusion model) or "vae" (the tiny per-frame autoencoder)
    preset: str = "tiny"  # model preset when `init` is empty
    init: str = ""  # DiT checkpoint to fine-tune (any layout the loader reads; a pruned preset folder too)
    vae: str = ""  # autoencoder weights (TAEHV); empty = seeded random (only sensible for stage = "vae")
    text_encoder: str = ""  # umT5 folder for the Wan presets; empty = the offline MiniLM encoder (tiny)
    out_dir: str = "runs/tiny"  # checkpoints, samples and log.jsonl go here
    # data
    data: str = "builtin"  # "builtin" (media inside installed packages + procedural looks) or a folder of pairs
    looks: tuple[str, ...] = LOOK_NAMES  # built-in recipe: target looks to learn; one named k times is drawn k times as often
    width: int = 64  # training resolution in pixels (multiple of 16)
    height: int = 64
    frames: int = 4  # latent frames per training clip (1 video frame each for the tiny per-frame autoencoder)
    # processes that prepare the coming batches in parallel (crops; the looks too when training on a CPU, they
    # are rendered on the GPU when training there); 0 = in the training process
    workers: int = 0
    # optimisation
    batch: int = 2  # clips per process per step (global batch = batch x processes)
    steps: int = 200
    lr: float = 2e-4
    warmup: int = 20  # linear warm-up steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    seed: int = 0
    # diffusion forcing and the sampler it must match
    shift: float = 5.0  # flow-matching schedule shift (as model.shift)
    chunk_frames: int = 1  # latent frames per causal block (1 = per-frame, the tiny preset's streaming chunk)
    window: int = 0  # attention window in latent frames as at inference (0 = whole clip)
    sinks: int = 0  # attention-sink frames inside the window
    sdedit_offset: float = 100.0  # inference tells the model t = 1000*s - offset (StreamDiffusionV2)
    p_paired: float = 0.5  # share of frames noised from the INPUT clip (video-to-video) instead of the target
    # paired frames' noise level: 1 = the shifted schedule (clamped to >= 0.2) like target frames; below 1 =
    # uniform in [0.2, this], i.e. only the strengths the daemon streams at (tiny's 0.6 tells the model 0.5)
    paired_max_sigma: float = 1.0
    # weight of an L1 loss on the DECODED one-step prediction of paired frames, in pixels and in pixel
    # gradients, beside the latent flow loss (0 = off): the latent MSE weighs a look's fine lines (comic's
    # ink, pixel's block edges) by their small share of the latent, the picture by what a viewer sees
    pixel_loss: float = 0.0
    # pixel_loss's extra weight on dark detail: each pixel's error counts 1 + this x (how much darker the
    # target is than its 2.5 px surround, in [0, 1]). v4.4 leaves comic's ink, 8 % of the pixels, brighter
    # than the untouched input (tools/comic_ink_error.py); 0 = every pixel alike
    pixel_dark_weight: float = 0.0
    # history augmentation
    p_history: float = 0.5  # share of clips whose first frames are a corrupted, loss-free history
    history_max_sigma: float = 0.5  # history frames get a noise level in [0, this]
    p_rollout: float = 0.25  # share of history clips whose history is the model's own earlier prediction
    corruptions: tuple[str, ...] = ("noise", "blur", "jpeg", "quantise", "colour")
    # shortcut distillation (Frans et al. 2024)
    p_shortcut: float = 0.25  # share of clips whose last frame trains self-consistency
    shortcut_levels: int = 7  # step sizes 2^-k, k = 0..levels (1 ... 1/128)
    # bookkeeping
    log_every: int = 10
    save_every: int = 50
    keep_checkpoints: int = 3
    sample_every: int = 100  # 0 = no sample clips
    sample_frames: int = 24
    ema: float = 0.0  # EMA decay of the weights kept beside them (0 = off)
    dtype: str = "float32"  # training precision of autocast: float32 or bfloat16
    device: str = "auto"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: must be a list, got {type(value).__name__}")
        inner = typing.get_args(hint)[0]
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where}: must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(raw: dict[str, Any], source: str = "<dict>", base: Path | None = None) -> TrainConfig:
    """A validated TrainConfig from the `[train]` table (or a bare dict of its keys)."""
    if isinstance(raw, dict) and ("train" in raw or any(isinstance(v, dict) for v in raw.values())):
        # no training key is a table: any table beside [train], or instead of it ([trian]), is a typo
        check_keys(raw, ["train"], source, "")
        table = raw["train"]
    else:
        table = raw
    hints = typing.get_type_hints(TrainConfig)
    check_keys(table, [f.name for f in dataclasses.fields(TrainConfig)], source, "train.")
    values = {k: _coerce(v, hints[k], f"{source}: train.{k}") for k, v in table.items()}
    for key in ("init", "vae", "text_encoder", "out_dir", "data"):
        v = values.get(key)
        if base is not None and v and v != "builtin" and not Path(v).expanduser().is_absolute():
            values[key] = str((base / Path(v).expanduser()).resolve())
    cfg = TrainConfig(**values)
    check(cfg, source)
    return cfg


def load(path: str | Path) -> TrainConfig:
    """TrainConfig from a TOML file; ConfigError names the file and key on any problem."""
    p = Path(path).expanduser()
    raw = read_toml(p, "training config not found (see docs/training.md for an example)")
    return from_dict(raw, str(p), p.parent)


def _require(ok: bool, source: str, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{source}: train.{key} {why}")


def check(c: TrainConfig, f: str) -> None:
    """Range and cross-field checks."""
    _require(c.stage in ("dit", "vae"), f, "stage", f"must be 'dit' or 'vae', got {c.stage!r}")
    for key in ("width", "height"):
        v = getattr(c, key)
        _require(16 <= v <= 4096 and v % 16 == 0, f, key, f"must be a multiple of 16 in 16-4096, got {v}")
    _require(1 <= c.frames <= 256, f, "frames", "must be 1-256")
    _require(1 <= c.chunk_frames <= c.frames and c.frames % c.chunk_frames == 0, f, "chunk_frames",
             f"must divide frames ({c.frames})")  # fmt: skip
    if c.window:
        _require(c.window - c.sinks - c.chunk_frames >= 1, f, "window", "must leave history beside sinks and one chunk")
    _require(c.sinks >= 0, f, "sinks", "must be >= 0")
    _require(0 <= c.workers <= 64, f, "workers", "must be 0-64")
    _require(c.batch >= 1 and c.steps >= 1, f, "batch/steps", "must be >= 1")
    _require(c.lr > 0 and c.warmup >= 0 and c.weight_decay >= 0 and c.grad_clip >= 0, f, "lr/warmup/weight_decay/grad_clip",
             "must be positive (lr) or >= 0")  # fmt: skip
    _require(c.shift > 0, f, "shift", "must be > 0")
    _require(0 <= c.sdedit_offset < 1000, f, "sdedit_offset", "must be in [0, 1000)")
    _require(0.2 < c.paired_max_sigma <= 1, f, "paired_max_sigma", "must be in (0.2, 1]")
    for key in ("p_paired", "p_history", "p_rollout", "p_shortcut", "history_max_sigma"):
        _require(0 <= getattr(c, key) <= 1, f, key, "must be in [0, 1]")
    _require(1 <= c.shortcut_levels <= 10, f, "shortcut_levels", "must be 1-10")
    bad = [x for x in c.looks if x not in LOOK_NAMES]
    _require(
        bool(c.looks) and not bad, f, "looks", f"must be a non-empty subset of {', '.join(LOOK_NAMES)}; bad: {bad}"
    )
    from streamer.train.corrupt import CORRUPTIONS

    bad = [x for x in c.corruptions if x not in CORRUPTIONS]
    _require(not bad, f, "corruptions", f"must be a subset of {', '.join(CORRUPTIONS)}; bad: {bad}")
    _require(c.log_every >= 1 and c.save_every >= 1 and c.keep_checkpoints >= 1, f, "log_every/save_every/keep_checkpoints",
             "must be >= 1")  # fmt: skip
    _require(c.sample_every >= 0 and c.sample_frames >= 1, f, "sample_every/sample_frames", "must be >= 0 / >= 1")
    _require(0 <= c.ema < 1, f, "ema", "must be in [0, 1)")
    _require(c.pixel_loss >= 0, f, "pixel_loss", "must be >= 0")
    _require(c.pixel_dark_weight >= 0, f, "pixel_dark_weight", "must be >= 0")
    _require(c.pixel_dark_weight == 0 or c.pixel_loss > 0, f, "pixel_dark_weight", "weighs pixel_loss: set pixel_loss > 0")
    _require(c.dtype in ("float32", "bfloat16"), f, "dtype", "must be float32 or bfloat16")
    if c.data != "builtin":
        _require(
            Path(c.data).expanduser().is_dir(),
            f,
            "data",
            f"must be 'builtin' or a folder of clip pairs; {c.data} is not a folder",
        )
