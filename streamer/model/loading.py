"""Loading the engine's parts from [model]: device, DiT, autoencoder, text encoder.

Where each weight set comes from (`dit_weights` / `vae_weights`): the configured file; else, for the
`tiny` preset, the weights shipped in the package (EMBEDDED_DIR, when they are there); else seeded
random (model.seed). "random" forces random weights (benchmarks, tests). The result records which
parts are random so `status()` can say the output is not meaningful. A requested CUDA device that is
absent is an error, never a silent CPU fallback.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from streamer.config import ModelSettings
from streamer.model.config import DiTConfig, preset
from streamer.model.dit import DiT
from streamer.model.fp8 import fp8_unavailable
from streamer.model.text import TextEncoder, build_text_encoder, text_encoder_placement
from streamer.model.vae import TAEHV, load_taehv, tiny_taehv

log = logging.getLogger(__name__)

# model.dtype -> the compute dtype; "fp8" computes in bf16 around FP8 matmuls (streamer/model/fp8.py)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "fp8": torch.bfloat16}
RANDOM = "random"  # model.checkpoint / model.vae value that forces seeded random weights
# The trained tiny model shipped as package data: model.safetensors + config.json (+ shortcut.safetensors)
# in the checkpoint loader's folder layout, and vae.safetensors (a per-frame TAEHV, taew2_1 names).
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded" / "tiny"


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


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """model.dtype -> torch dtype. "auto" = bfloat16 where the device computes it natively (CUDA GPUs
    with bf16; CPUs whose oneDNN has bf16 kernels: AVX512-BF16 or AMX), else float32. On a 2-core
    AVX512-BF16 CPU bf16 runs the tiny model ~1.25x faster than float32 with output within ~53 dB PSNR
    of it (docs/benchmarks.md, W4); CPUs without native bf16 would emulate it, slower than float32.
    "fp8" = bfloat16 here (the dtype between the matmuls); `load_dit_for` makes the matmuls FP8.
    "auto" never picks fp8: it changes the output, so it is the user's choice (docs/benchmarks.md, FP8)."""
    if spec != "auto":
        return DTYPES[spec]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the probe: assume emulation
        return False


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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


@dataclass(frozen=True)
class WeightsChoice:
    """Where one part's weights come from: a configured file, the embedded tiny files, or seeded random."""

    kind: Literal["file", "embedded", "random"]
    path: Path | None = None

    def describe(self) -> str:
        return {"file": f"file {self.path}", "embedded": f"embedded tiny ({self.path})", "random": "random"}[self.kind]


def dit_weights(m: ModelSettings) -> WeightsChoice:
    """The DiT weights [model] selects (EMBEDDED_DIR is read at call time so tests can point it elsewhere)."""
    if m.checkpoint == RANDOM:
        return WeightsChoice("random")
    if m.checkpoint:
        return WeightsChoice("file", Path(m.checkpoint))
    if m.preset == "tiny" and (EMBEDDED_DIR / "model.safetensors").is_file():
        return WeightsChoice("embedded", EMBEDDED_DIR)
    return WeightsChoice("random")


def vae_weights(m: ModelSettings) -> WeightsChoice:
    """The autoencoder weights [model] selects: model.vae, else the embedded tiny one, else random."""
    if m.vae == RANDOM:
        return WeightsChoice("random")
    if m.vae:
        return WeightsChoice("file", Path(m.vae))
    if m.preset == "tiny" and (EMBEDDED_DIR / "vae.safetensors").is_file():
        return WeightsChoice("embedded", EMBEDDED_DIR / "vae.safetensors")
    return WeightsChoice("random")


def preset_mismatch(cfg: DiTConfig, name: str) -> str | None:
    """Why a DiT of architecture `cfg` cannot run as preset `name`, or None when it can: the preset itself,
    or a variant of it (pruned heads / FFN, other depth, input-conditioned) with the preset's text width
    (the text encoder) and latent channels and patch (the autoencoder)."""
    want = preset(name)
    keys = ("text_dim", "in_dim", "out_dim", "patch_size")
    # an input-conditioned variant (in_dim = 2 x out_dim: the clean input latent beside the noisy one, and any
    # luma planes: streamer/model/condition.py) fits too
    fits = {"in_dim": (want.in_dim, 2 * want.out_dim + cfg.luma_channels)}
    bad = [
        f"{k} {getattr(cfg, k)} (the preset has {' or '.join(map(str, fits.get(k, (getattr(want, k),))))})"
        for k in keys
        if getattr(cfg, k) not in fits.get(k, (getattr(want, k),))
    ]
    if not bad:
        return None
    return (
        f"its architecture (dim {cfg.dim}, {cfg.num_layers} layers) does not fit model.preset = {name!r}: "
        + ", ".join(bad)
    )


def _progress(pct: int, what: str, started: float) -> None:
    log.info("model load %3d%% (%.1f s): %s", pct, time.monotonic() - started, what)


def _seeded(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Random init inside this block leaves the global RNG state untouched (the caller seeds it)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def load_configured_dit(m: ModelSettings, device: torch.device, dtype: torch.dtype) -> tuple[DiT, str]:
    """The DiT from model.checkpoint or the embedded tiny folder (via the checkpoint loader), else seeded
    random weights; with a one-line source description."""
    choice = dit_weights(m)
    if choice.kind != "random":
        from streamer.model.weights.checkpoints import CheckpointError, load_dit

        key = m.checkpoint_key if choice.kind == "file" else "auto"  # the shipped folder is safetensors
        setting = (
            f"model.checkpoint = {m.checkpoint!r}" if choice.kind == "file" else f"embedded tiny weights {EMBEDDED_DIR}"
        ) + (f", model.checkpoint_key = {key!r}" if key != "auto" else "")
        try:  # preset checked below: a pruned variant of the preset (its own config.json) is fine
            dit, report = load_dit(
                str(choice.path), lora=m.lora or None, preset=None, device=device, dtype=dtype, checkpoint_key=key
            )
        except CheckpointError as e:  # one error type for every load problem, naming the setting
            raise ModelLoadError(f"{setting}: {e}") from e
        problem = preset_mismatch(dit.cfg, m.preset)
        if problem is not None:
            raise ModelLoadError(f"{setting}: {problem}")
        report += f" + LoRA {Path(m.lora).name}" if m.lora else ""
        return dit, f"embedded tiny ({report})" if choice.kind == "embedded" else report
    if m.lora:
        raise ModelLoadError(
            f"model.lora is set but the DiT is random (model.checkpoint = {m.checkpoint!r}): a LoRA needs its base checkpoint"
        )
    with _seeded(device):
        torch.manual_seed(m.seed)
        with torch.device(device):
            dit = DiT(preset(m.preset))
    return dit.to_inference_dtype(dtype).eval().requires_grad_(False), f"random (seed {m.seed})"


def fp8_check(m: ModelSettings, device: torch.device) -> None:
    """model.dtype = "fp8" needs FP8 tensor cores on the model's device: else ModelLoadError with the fix."""
    reason = fp8_unavailable(device) if m.dtype == "fp8" else None
    if reason is not None:
        raise ModelLoadError(f"model.dtype = 'fp8': {reason}")


def load_dit_for(m: ModelSettings, device: torch.device, dtype: torch.dtype) -> tuple[DiT, str]:
    """`load_configured_dit`, then the blocks' Linears made FP8 when model.dtype = "fp8" (after the weights
    are in: a checkpoint and a LoRA load into the bf16 model first). The one DiT loader of the daemon and
    the bench, so both paths (eager and fast) get the same model."""
    fp8_check(m, device)
    dit, source = load_configured_dit(m, device, dtype)
    if m.dtype == "fp8":
        dit.to_fp8()
        source += ", fp8 linears (e4m3, per-channel scales)"
    return dit, source


def load_configured_vae(m: ModelSettings, device: torch.device, dtype: torch.dtype) -> tuple[TAEHV, str]:
    """TAEHV from model.vae (temporal for Wan, per-frame for tiny), else a seeded random one."""
    temporal = m.preset != "tiny"
    choice = vae_weights(m)
    if choice.path is not None:
        vae = load_taehv(choice.path, device=device, dtype=dtype, temporal=temporal)  # widths from the file
        return vae, choice.path.name if choice.kind == "file" else f"embedded tiny ({choice.path.name})"
    with _seeded(device):
        torch.manual_seed(m.seed + 1)
        vae = TAEHV(temporal=True) if temporal else tiny_taehv()
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False), f"random (seed {m.seed})"


def load_configured_text_encoder(
    m: ModelSettings, device: torch.device, cfg: DiTConfig, *, background: bool = False
) -> TextEncoder:
    """The text encoder [model] selects for a DiT of `cfg` whose (first) device is `device`, placed by
    model.text_encoder_device; the one rule for the one-process engine and the pipelined one.
    background: umT5's weights are read on a thread (text.wait_for_weights finishes them)."""
    text_device, offload = text_encoder_placement(m, device, cfg)
    return build_text_encoder(
        m.text_encoder,
        m.cache_dir,
        text_device,
        torch.bfloat16 if device.type == "cuda" else torch.float32,
        text_dim=cfg.text_dim,
        text_len=cfg.text_len,
        # random text states only beside a random DiT: trained weights need their real text encoder
        allow_random=dit_weights(m).kind == "random",
        offload=offload,
        background=background,
    )


def load_parts(m: ModelSettings, device: torch.device, *, text_in_background: bool = False) -> LoadedParts:
    """The DiT, the autoencoder and the text encoder [model] names, on `device`. text_in_background: umT5's
    weights are still being read when this returns (the caller warms up meanwhile, then calls
    text.wait_for_weights: build_model_transform)."""
    started = time.monotonic()
    dtype = resolve_dtype(m.dtype, device)
    if device.type == "cpu" and m.preset != "tiny":
        log.warning(
            "preset %s on the CPU will be far too slow for live video; use a CUDA GPU or preset 'tiny'", m.preset
        )
    _progress(0, f"preset {m.preset} on {device} ({dtype_name(dtype)})", started)
    dit_random, vae_random = dit_weights(m).kind == "random", vae_weights(m).kind == "random"
    dit, dit_src = load_dit_for(m, device, dtype)
    _progress(50, f"DiT: {dit_src}", started)
    vae, vae_src = load_configured_vae(m, device, dtype)
    _progress(70, f"autoencoder: {vae_src}", started)
    text = load_configured_text_encoder(m, device, dit.cfg, background=text_in_background)
    later = " (its weights still loading, in the background)" if text_in_background and m.text_encoder else ""
    _progress(100, f"text encoder: {text.encoder_id.split(':')[0]}{later}", started)
    random_parts = [name for name, rnd in (("DiT", dit_random), ("autoencoder", vae_random)) if rnd]
    if text.encoder_id.startswith("random"):
        random_parts.append("text encoder")
    sources = {"DiT": dit_src, "autoencoder": vae_src, "text": text.encoder_id.split(":")[0]}
    return LoadedParts(device, dtype, dit, vae, text, sources, random_parts)
