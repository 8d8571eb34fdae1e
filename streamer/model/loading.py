"""Loading the engine's parts from [model]: device, DiT, autoencoder, text encoder.

Each part comes from the configured file, or is seeded random (model.seed) when none is configured,
and the result records which parts are random so `status()` can say the output is not meaningful.
A requested CUDA device that is absent is an error, never a silent CPU fallback.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamer.config import ModelSettings
from streamer.model.dit import DiT, preset
from streamer.model.text import TextEncoder, build_text_encoder
from streamer.model.vae import TAEHV, load_taehv, tiny_taehv

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The configured model cannot run here (missing device, file or part); the message says the fix."""


def resolve_device(spec: str) -> torch.device:
    """ "auto" = the first CUDA GPU when there is one, else the CPU; "cuda[:N]" must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ModelLoadError(f"model.device = {spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"model.device = {spec!r} but torch {torch.__version__} sees no CUDA GPU; install a CUDA build of "
                "torch and a driver, or set model.device = 'auto' / 'cpu' (the tiny preset runs on a CPU)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(f"model.device = {spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


@dataclass
class LoadedParts:
    """The engine's modules plus where each came from."""

    device: torch.device
    dtype: torch.dtype
    dit: DiT
    vae: TAEHV
    text: TextEncoder
    sources: dict[str, str] = field(default_factory=dict)
    random_parts: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.sources.items())


def _progress(pct: int, what: str, started: float) -> None:
    log.info("model load %3d%% (%.1f s): %s", pct, time.monotonic() - started, what)


def _seeded(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Random init inside this block leaves the global RNG state untouched (the caller seeds it)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def load_dit(m: ModelSettings, device: torch.device, dtype: torch.dtype) -> tuple[DiT, str]:
    """The DiT from model.checkpoint (via the checkpoint loader), else seeded random weights."""
    if m.checkpoint:
        from streamer.model.checkpoints import CheckpointError
        from streamer.model.checkpoints import load_dit as load_checkpoint

        try:
            dit, report = load_checkpoint(m.checkpoint, lora=m.lora or None, preset=m.preset, device=device, dtype=dtype)
        except CheckpointError as e:  # one error type for every load problem, naming the setting
            raise ModelLoadError(f"model.checkpoint = {m.checkpoint!r}: {e}") from e
        return dit, report + (f" + LoRA {Path(m.lora).name}" if m.lora else "")
    if m.lora:
        raise ModelLoadError("model.lora is set without model.checkpoint: a LoRA needs its base checkpoint")
    with _seeded(device):
        torch.manual_seed(m.seed)
        with torch.device(device):
            dit = DiT(preset(m.preset))
    return dit.to_inference_dtype(dtype).eval().requires_grad_(False), f"random (seed {m.seed})"


def load_vae(m: ModelSettings, device: torch.device, dtype: torch.dtype) -> tuple[TAEHV, str]:
    """TAEHV from model.vae (temporal for Wan, per-frame for tiny), else a seeded random one."""
    temporal = m.preset != "tiny"
    if m.vae:
        return load_taehv(m.vae, device=device, dtype=dtype, temporal=temporal), Path(m.vae).name
    with _seeded(device):
        torch.manual_seed(m.seed + 1)
        vae = TAEHV(temporal=True) if temporal else tiny_taehv()
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False), f"random (seed {m.seed})"


def load_parts(m: ModelSettings, device: torch.device) -> LoadedParts:
    started = time.monotonic()
    dtype = DTYPES[m.dtype]
    if device.type == "cpu" and m.preset != "tiny":
        log.warning(
            "preset %s on the CPU will be far too slow for live video; use a CUDA GPU or preset 'tiny'", m.preset
        )
    _progress(0, f"preset {m.preset} on {device} ({m.dtype})", started)
    dit, dit_src = load_dit(m, device, dtype)
    _progress(50, f"DiT: {dit_src}", started)
    vae, vae_src = load_vae(m, device, dtype)
    _progress(70, f"autoencoder: {vae_src}", started)
    cfg = dit.cfg
    text = build_text_encoder(
        m.text_encoder,
        m.cache_dir,
        device,
        torch.bfloat16 if device.type == "cuda" else torch.float32,
        text_dim=cfg.text_dim,
        text_len=cfg.text_len,
        allow_random=not m.checkpoint,
    )
    _progress(100, f"text encoder: {text.encoder_id.split(':')[0]}", started)
    random_parts = [name for name, src in (("DiT", dit_src), ("autoencoder", vae_src)) if src.startswith("random")]
    if text.encoder_id.startswith("random"):
        random_parts.append("text encoder")
    sources = {"DiT": dit_src, "autoencoder": vae_src, "text": text.encoder_id.split(":")[0]}
    return LoadedParts(device, dtype, dit, vae, text, sources, random_parts)
