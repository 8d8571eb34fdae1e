"""`streamer doctor` checks for the model: which weights will be used (a configured file, the embedded
tiny files, or random) and that they are recognised, the text encoder, and enough device memory.

The memory estimate is arithmetic on the configured preset (or the checkpoint's own architecture when
one is read), resolution, effective window and mode (no model is built): DiT weights (exact parameter
count from a meta-device build) + KV cache + cross-attention K/V + text encoder + autoencoder + a
peak-activation allowance. It is an estimate; `streamer bench` measures the real peak.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from importlib.machinery import ModuleSpec
from pathlib import Path

import torch

from streamer.config import ModelSettings, Settings, effective_window
from streamer.doctor import Check, Status, clip, os_error_text
from streamer.model import loading
from streamer.model.cache import FOLDED_KEYS
from streamer.model.config import DiTConfig, preset
from streamer.model.dit import DiT
from streamer.model.loading import ModelLoadError, dtype_name, preset_mismatch, resolve_device, resolve_dtype
from streamer.model.text import TextEncoderError, _require_files, default_cache_dir, minilm_model_dir
from streamer.model.umt5_layouts import find_layout, plan
from streamer.model.vae import DECODER_WIDTHS, TINY_DECODER_WIDTHS, VAELoadError, infer_config, read_state_dict

GIB = 2**30
UMT5_XXL_PARAMS = 5.68e9  # encoder only: 256384x4096 embedding + 24 layers (model.md §5: ≈11.4 GB in bf16)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes the configured model needs on its device, by part."""

    weights: int
    kv_cache: int
    cross_kv: int
    text_encoder: int
    autoencoder: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.cross_kv + self.text_encoder + self.autoencoder + self.activations

    def line(self) -> str:
        parts = ", ".join(
            f"{name} {getattr(self, name) / GIB:.2f}"
            for name in ("weights", "kv_cache", "cross_kv", "text_encoder", "autoencoder", "activations")
        )
        return f"≈{self.total / GIB:.2f} GiB ({parts} GiB)"


def _umt5_params(path: str) -> float:
    """Encoder parameters of the umT5 at `path` (any layout; sizes from its config or shapes, nothing
    read), else umT5-XXL's."""
    try:
        return float(plan(find_layout(path)).cfg.params)
    except TextEncoderError:
        return UMT5_XXL_PARAMS


def estimate_memory(
    m: ModelSettings,
    on_gpu: bool,
    *,
    dit_cfg: DiTConfig | None = None,
    decoder_widths: tuple[int, int, int, int] | None = None,
    text_on_gpu: bool | None = None,
) -> MemoryEstimate:
    """dit_cfg / decoder_widths: the architecture read from the weights in use (default: the preset's,
    and for the autoencoder the full taew2_1 widths whenever a file is configured - the upper bound).
    text_on_gpu: whether the umT5 encoder stays on the GPU (default: unless model.text_encoder_device = cpu)."""
    cfg: DiTConfig = dit_cfg or preset(m.preset)
    dtype = resolve_dtype(m.dtype, torch.device("cuda" if on_gpu else "cpu"))
    size = torch.empty((), dtype=dtype).element_size()
    with torch.device("meta"):
        dit = DiT(cfg).to_inference_dtype(dtype)
        if m.dtype == "fp8":  # the blocks' Linears at one byte a weight (their FP8Linear buffers)
            dit.to_fp8()
    weights = sum(t.numel() * t.element_size() for t in (*dit.parameters(), *dit.buffers()))
    batch = m.steps if m.mode == "stream-batch" else 1
    tokens = cfg.tokens_per_frame(m.height // 8, m.width // 8)
    per_token_layer = 2 * cfg.num_heads * cfg.head_dim * size  # K and V
    kv = cfg.num_layers * batch * effective_window(m)[0] * tokens * per_token_layer
    cross = cfg.num_layers * batch * cfg.text_len * per_token_layer
    if on_gpu:  # the fast path's CrossAttnKV.u: FOLDED_KEYS values per head through each o projection;
        # an FP8 model's also keeps those projections dequantized, for longer prompts (FusedOps)
        cross += cfg.num_layers * batch * cfg.num_heads * FOLDED_KEYS * cfg.dim * size
        if m.dtype == "fp8":
            cross += cfg.num_layers * cfg.dim * cfg.num_heads * cfg.head_dim * size
    if m.text_encoder:
        resident = m.text_encoder_device != "cpu" if text_on_gpu is None else text_on_gpu
        text = int(_umt5_params(m.text_encoder) * 2) if on_gpu and resident else 0  # bf16 on the GPU
    else:
        text = 0  # MiniLM runs on the CPU
    temporal = m.preset != "tiny"
    a, b, c, d = decoder_widths or (DECODER_WIDTHS if temporal or m.vae else TINY_DECODER_WIDTHS)
    h, w = m.height, m.width
    frames = (1, 1, 2, 4) if temporal else (1, 1, 1, 1)
    # The widest decoder stage: a MemBlock's concatenated input (2x channels) plus its output, per frame.
    stage = max(ch * (h // s) * (w // s) * f for ch, s, f in zip((a, b, c, d), (8, 4, 2, 1), frames, strict=True))
    vae = 12_000_000 * size + 3 * stage * size
    # Per layer: residual + modulated copy in fp32, q/k/v/o, the FFN hidden; attention is fused (no scores).
    acts = batch * tokens * (4 * cfg.dim * 4 + 4 * cfg.dim * size + cfg.ffn_dim * size) * 2
    return MemoryEstimate(weights, kv, cross, text, vae, acts)


def text_encoder_fits(m: ModelSettings, device: torch.device, *, dit_cfg: DiTConfig | None = None) -> bool:
    """model.text_encoder_device = auto on a GPU: whether the umT5 encoder may stay there beside the DiT,
    i.e. the estimate with it on the GPU is within 90 % of what this process can have (free memory plus
    what it already holds: the DiT may be loaded by now)."""
    free, _total = torch.cuda.mem_get_info(device)
    have = free + torch.cuda.memory_reserved(device)
    return fits(estimate_memory(m, True, dit_cfg=dit_cfg, text_on_gpu=True).total, have)


def _available(device: torch.device) -> tuple[int, str] | None:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "available RAM"
    except (OSError, KeyError, ValueError):
        return None


def _weights_checks(m: ModelSettings, found: dict[str, object]) -> Iterable[Check]:
    """Which DiT and autoencoder weights load, and whether they fit; records their architecture in `found`."""
    dit = loading.dit_weights(m)
    if dit.kind == "random":
        forced = m.checkpoint == loading.RANDOM
        yield Check("model checkpoint", "WARN",
                    "random DiT weights (" + ("forced by model.checkpoint = 'random'" if forced else "none configured")
                    + "), output not meaningful", _weights_fix(m, "model.checkpoint"))  # fmt: skip
    else:
        from streamer.model.weights.checkpoints import CheckpointError, read_checkpoint

        where = dit.describe()
        try:
            key = m.checkpoint_key if dit.kind == "file" else "auto"  # the embedded weights are plain safetensors
            info = read_checkpoint(str(dit.path), m.lora or None, checkpoint_key=key)
        except CheckpointError as e:
            yield Check("model checkpoint", "FAIL", f"{where}: {e}", "check model.checkpoint / model.lora")
        except OSError as e:  # unreadable, or a name too long for the filesystem
            yield Check("model checkpoint", "FAIL", f"{clip(where)}: {os_error_text(e)}", "check model.checkpoint / model.lora")
        else:
            problem = preset_mismatch(info.config, m.preset)
            bad = info.problems + ([problem] if problem else [])
            found["dit_cfg"] = info.config if not bad else None
            detail = f"{where}: {info.path.name}: {info.preset}, {info.layout}" + (
                f"; {'; '.join(bad[:3])}" if bad else ""
            )
            yield Check("model checkpoint", "FAIL" if bad else "OK", detail,
                        "run `streamer model inspect` on it; fix model.preset")  # fmt: skip
    vae = loading.vae_weights(m)
    if vae.path is None:
        forced = m.vae == loading.RANDOM
        yield Check("model autoencoder", "WARN",
                    "random autoencoder (" + ("forced by model.vae = 'random'" if forced else "none configured")
                    + "), output not meaningful", _weights_fix(m, "model.vae"))  # fmt: skip
        return
    where = "embedded tiny" if vae.kind == "embedded" else "file"  # the name follows
    try:
        cfg = infer_config(read_state_dict(vae.path), str(vae.path))
    except VAELoadError as e:
        yield Check("model autoencoder", "FAIL", f"{where}: {e}", "point model.vae at taew2_1.pth or .safetensors")
        return
    except OSError as e:  # unreadable, or a name too long for the filesystem
        yield Check("model autoencoder", "FAIL", f"{where}: {os_error_text(e)}", "point model.vae at taew2_1.pth or .safetensors")
        return
    ok = cfg["temporal"] or m.preset == "tiny"
    found["decoder_widths"] = cfg["decoder_widths"] if ok else None
    kind = "temporal (4 frames per latent)" if cfg["temporal"] else "per-frame"
    yield Check("model autoencoder", "OK" if ok else "FAIL", f"{where}: {vae.path.name}: TAEHV, {kind}",
                "the wan presets need a temporal TAEHV such as taew2_1")  # fmt: skip


def _weights_fix(m: ModelSettings, key: str) -> str:
    shipped = loading.EMBEDDED_DIR / ("vae.safetensors" if key == "model.vae" else "model.safetensors")
    if m.preset == "tiny" and shipped.is_file():  # random only because the setting forces it
        return f"clear {key} to use the trained tiny weights shipped with streamer (or point it at a file)"
    if m.preset == "tiny":
        return (f"streamer's trained tiny weights are missing from {loading.EMBEDDED_DIR}: reinstall / update "
                f"the package, or set {key} to trained weights")  # fmt: skip
    if key == "model.vae":
        return "set model.vae to taew2_1.pth (TAEHV for Wan 2.1)"
    return "set model.checkpoint to a Self-Forcing / CausVid / StreamDiffusionV2 / Wan checkpoint"


def _text_checks(m: ModelSettings) -> Iterable[Check]:
    try:
        if m.text_encoder:
            layout = find_layout(m.text_encoder)
            params = plan(layout).cfg.params  # names and shapes checked, nothing read
            yield Check("text encoder", "OK", f"umT5, {layout.kind} layout: {', '.join(map(str, layout.weights))} "
                        f"({params / 1e9:.2f} B params), tokenizer {layout.tokenizer}; on {m.text_encoder_device}")  # fmt: skip
        elif preset(m.preset).text_dim == 384:
            folder = minilm_model_dir()
            _require_files(folder, "MiniLM text encoder", [("config.json",), ("vocab.txt",), ("*.safetensors",)])
            yield Check("text encoder", "OK", f"all-MiniLM-L6-v2 (offline package) at {folder}")
        else:
            status: Status = "WARN" if loading.dit_weights(m).kind == "random" else "FAIL"
            yield Check("text encoder", status, f"preset {m.preset} needs umT5-XXL and model.text_encoder is empty"
                        + (" (random text states with random weights)" if status == "WARN" else ""),
                        "set model.text_encoder to a local umt5-xxl folder")  # fmt: skip
    except TextEncoderError as e:
        yield Check("text encoder", "FAIL", str(e), "download the encoder files into that folder")
    except OSError as e:  # unreadable, or a name too long for the filesystem
        yield Check("text encoder", "FAIL", os_error_text(e), "set model.text_encoder to a local umt5-xxl folder")


def fused_kernels_check(find_spec: Callable[[str], ModuleSpec | None] = importlib.util.find_spec) -> Check:
    """Where the fast path's fused kernels come from. They install as `streamer_kernels` (the folder
    kernels/), a name no other package uses; the line shows the folder to rule out a stale copy.
    Only located, not imported: importing would load Triton, which the environment check covers."""
    try:
        spec = find_spec("streamer_kernels.backend")
    except ImportError as e:
        spec, why = None, f"{type(e).__name__}: {e}"
    else:
        why = "no module streamer_kernels.backend"
    if spec is None or spec.origin is None:
        return Check("fused kernels", "FAIL", f"streamer_kernels not found ({why})",
                     "reinstall streamer (pip install -e . in a checkout), which installs kernels/ as streamer_kernels")  # fmt: skip
    return Check("fused kernels", "OK", f"streamer_kernels from {Path(spec.origin).parent}")


def _cache_check(m: ModelSettings) -> Check:
    fix = "set model.cache_dir to a writable folder (prompts are re-encoded on every change without it)"
    cache = Path(m.cache_dir).expanduser() if m.cache_dir else default_cache_dir()
    try:
        probe = cache if cache.exists() else next((p for p in cache.parents if p.exists()), cache)
    except OSError as e:  # a name too long for the filesystem, a parent that cannot be read
        return Check("prompt cache", "FAIL", os_error_text(e), fix)
    writable = os.access(probe, os.W_OK)
    return Check("prompt cache", "OK" if writable else "WARN", f"{clip(str(cache))} ({'writable' if writable else 'not writable'})", fix)


def checks(settings: Settings) -> Iterable[Check]:
    """Doctor provider: model files, text encoder, cache dir and memory."""
    m = settings.model
    found: dict[str, object] = {}
    yield from _weights_checks(m, found)
    yield from _text_checks(m)
    yield fused_kernels_check()
    yield _cache_check(m)
    try:
        device = resolve_device(m.device)
    except ModelLoadError as e:
        yield Check("model memory", "FAIL", str(e), "fix model.device")
        return
    if m.dtype == "fp8":
        try:
            loading.fp8_check(m, device)
        except ModelLoadError as e:
            yield Check("model dtype", "FAIL", str(e), "set model.dtype = 'bfloat16' (or 'auto')")
        else:
            yield Check("model dtype", "OK", "fp8: the DiT blocks' matmuls in e4m3 (bf16 between them)")
    have = _available(device)
    if have is None:
        est = estimate_memory(m, device.type == "cuda", dit_cfg=found.get("dit_cfg"),  # type: ignore[arg-type]
                              decoder_widths=found.get("decoder_widths"))  # type: ignore[arg-type]  # fmt: skip
        yield Check("model memory", "WARN", f"needs {est.line()}; could not read what {device} has")
        return
    yield memory_check(m, device, *have, dit_cfg=found.get("dit_cfg"),  # type: ignore[arg-type]
                       decoder_widths=found.get("decoder_widths"))  # type: ignore[arg-type]  # fmt: skip


def memory_check(
    m: ModelSettings,
    device: torch.device,
    free: int,
    where: str,
    *,
    dit_cfg: DiTConfig | None = None,
    decoder_widths: tuple[int, int, int, int] | None = None,
) -> Check:
    """The estimate against `free` bytes on `device`; when it does not fit, the fix says what to lower."""

    def estimate(s: ModelSettings) -> MemoryEstimate:
        return estimate_memory(s, device.type == "cuda", dit_cfg=dit_cfg, decoder_widths=decoder_widths)

    est = estimate(m)
    window, sinks = effective_window(m)
    what = f"{m.preset} {m.width}x{m.height}, window {window} ({sinks} sinks), {m.mode}, {m.dtype if m.dtype == 'fp8' else dtype_name(resolve_dtype(m.dtype, device))}: needs {est.line()}"
    status: Status = "OK" if fits(est.total, free) else "FAIL" if est.total > free else "WARN"
    fix = "" if status == "OK" else memory_advice(m, est.total, free, estimate)
    return Check("model memory", status, f"{what}; {free / GIB:.1f} GiB {where}", fix)


HEADROOM = 0.9  # share of a device's memory the estimate may fill: it misses allocator slack and small buffers


def fits(need: int, available: int) -> bool:
    """The one memory rule (the doctor's status, `streamer init --gpu`'s plan): `need` bytes leave 10 %
    of `available` free."""
    return need <= HEADROOM * available


def _lighter(m: ModelSettings) -> Iterable[tuple[str, ModelSettings]]:
    """Single changes that lower the memory a configuration needs: (the setting to write, the result)."""
    if m.text_encoder and m.text_encoder_device != "cpu":
        yield "model.text_encoder_device = 'cpu'", replace(m, text_encoder_device="cpu")
    if m.mode == "stream-batch":
        yield "model.mode = 'sequential' (or fewer model.steps)", replace(m, mode="sequential")
    if m.dtype == "float32":
        yield "model.dtype = 'bfloat16'", replace(m, dtype="bfloat16")
    w, h = (max(16, round(x * 0.75 / 16) * 16) for x in (m.width, m.height))
    if (w, h) != (m.width, m.height):
        yield f"model.width/height = {w}x{h}", replace(m, width=w, height=h)
    window, sinks = effective_window(m)
    if window > sinks + 2:
        yield f"model.window = {window - 1}", replace(m, window=window - 1, sinks=sinks)


def memory_advice(m: ModelSettings, need: int, free: int, estimate: Callable[[ModelSettings], MemoryEstimate]) -> str:
    """What to lower, largest saving first, and whether doing that is enough for `free` bytes."""
    options = sorted(((need - estimate(s).total, label, s) for label, s in _lighter(m)), key=lambda o: -o[0])
    options = [o for o in options if o[0] > 0]
    if not options:
        return "a GPU with more memory, or the tiny preset"
    listed = "; ".join(f"{label} (saves {saved / GIB:.2f} GiB)" for saved, label, _ in options)
    changed, total, used = m, need, 0
    for _, _, s in options:  # apply them in that order until the estimate fits
        changed = replace(changed, **{f.name: getattr(s, f.name) for f in fields(s) if getattr(s, f.name) != getattr(m, f.name)})
        total, used = estimate(changed).total, used + 1
        if fits(total, free):
            break
    first = "the first alone needs" if used == 1 else f"the first {used} together need"
    verdict = (f"{first} ≈{total / GIB:.2f} GiB, which fits" if fits(total, free)
               else f"even all of them need ≈{total / GIB:.2f} GiB: a GPU with more memory, or the tiny preset")  # fmt: skip
    return f"lower {listed}; {verdict} (`streamer init --gpu` picks settings for a CUDA card)"
