"""The model engine: `ModelTransform`, the causal diffusion model as a `streamer.transform.Transform`.

Per chunk (1 frame for `tiny`, 4 frames for the Wan presets): uint8 frames -> [0,1] at the model's
resolution -> streaming TAEHV encode -> SDEdit noise at the (motion-aware) strength -> `steps` DiT
passes over the rolling KV cache (committed after the last pass) -> streaming decode -> back to the
frame size as uint8, each output keeping its input frame's capture time.

The chunk itself is `streamer.model.step.chunk_step`, the one step both paths run: `step_tensor` runs it
with the eager ops below; the fast path (streamer/model/fast/, attached by builder.py) runs it with fused
kernels inside one CUDA graph, on this engine's own `StreamState`. `step` is the host wrapper:
buffering, prompt changes (cached text encoding, cross-attention K/V rebuilt in place, blended over
`model.transition_chunks` chunks), frame bookkeeping, and refusing a chunk whose output the step
flagged unusable (`BadOutput`: the pipeline shows the camera instead and says why).
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.config import ModelSettings, effective_strength, effective_window
from streamer.frames import Frame
from streamer.model.cache import KVCache
from streamer.model.dit import DiT
from streamer.model.loading import LoadedParts
from streamer.model.ops import EAGER_OPS, DiTOps
from streamer.model.refiner import refiner_of
from streamer.model.sampling import StreamBatchState, seeded_generator
from streamer.model.step import (
    LATENT_LIMIT,
    StepConfig,
    StreamState,
    chunk_step,
    refuse_stream_batch,
    skips_refiner,
)
from streamer.model.transitions import PromptFeed, PromptTransition
from streamer.model.vae import TAEHV
from streamer.prompts import PromptState
from streamer.transform import BadOutput

log = logging.getLogger(__name__)


class FastStep(Protocol):
    """An attached fast path (streamer/model/fast/): the same chunk step, fused and captured."""

    def step(self, frames: Tensor) -> Tensor | None: ...

    def reset(self) -> None: ...

    def describe(self) -> str: ...


class EagerOps:
    """The chunk step's ops in plain PyTorch: streaming TAEHV (per frame), antialiased resizes."""

    dit_ops: DiTOps = EAGER_OPS

    def __init__(self, vae: TAEHV, m: ModelSettings, dtype: torch.dtype, layout: torch.memory_format) -> None:
        self.vae, self.size, self.dtype, self.layout = vae, (m.height, m.width), dtype, layout
        self.reset()

    def reset(self) -> None:
        self.encoder, self.decoder = self.vae.stream_encoder(), self.vae.stream_decoder()

    def to_model(self, frames: Tensor) -> Tensor:
        # resized in float32 (CPU bf16 has no antialiased resize), then the model's dtype
        x = _resize(frames.permute(0, 3, 1, 2).float() / 255, self.size).to(self.dtype)
        return x.contiguous(memory_format=self.layout)

    def encode(self, x: Tensor) -> Tensor:
        z: Tensor | None = None
        for i in range(x.shape[0]):
            z = self.encoder.encode_frame(x[i : i + 1])
        if z is None:
            raise RuntimeError("the autoencoder produced no latent for a full chunk (frames_per_latent mismatch)")
        return z.unsqueeze(2).contiguous()  # [1, C, 1, h, w]: one latent frame per chunk

    def commit(self, cache: KVCache) -> None:
        cache.commit(1)

    def decode(self, latent: Tensor) -> Tensor:
        return self.decoder.decode_latent(latent[:, :, 0].to(self.dtype).contiguous(memory_format=self.layout))[0]

    def to_frames(self, out: Tensor, height: int, width: int) -> Tensor:
        return (_resize(out.float(), (height, width)) * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class ModelTransform:
    """The causal streaming video model behind the `Transform` protocol (engine thread only)."""

    name = "model"

    def __init__(self, m: ModelSettings, parts: LoadedParts) -> None:
        self.settings, self.parts = m, parts
        self.device, self.dtype = parts.device, parts.dtype
        self.dit: DiT = parts.dit
        self.vae, self.text = parts.vae, parts.text
        # oneDNN's CPU convolutions run ~30% faster on NHWC for the autoencoder's narrow layers.
        layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.vae.use_layout(layout)
        self.ops = EagerOps(self.vae, m, self.dtype, layout)
        self.frames_per_latent = self.vae.frames_per_latent
        refuse_stream_batch(self.dit, m.mode)  # a luma-conditioned DiT streams in sequential mode only
        self.batch = m.steps if m.mode == "stream-batch" else 1
        self.step_config = StepConfig(steps=m.steps, shift=m.shift, motion_aware=m.motion_aware)
        cfg = self.dit.cfg
        self.latent_hw = (m.height // 8, m.width // 8)
        window, sinks = effective_window(m)  # 0 / -1 in the settings = the preset's default
        cache = KVCache(
            cfg,
            batch=self.batch,
            tokens_per_frame=cfg.tokens_per_frame(*self.latent_hw),
            window=window,
            sinks=sinks,
            chunk_frames=1,
            adaptive_sinks=m.adaptive_sinks,
            sink_threshold=m.sink_threshold,
            refresh_after=m.rope_refresh_after,
            dtype=self.dtype,
            device=self.device,
        )
        chunk = (1, self.vae.latent_channels, 1, *self.latent_hw)
        refiner = refiner_of(self.dit)
        if skipped := skips_refiner(self.dit, m.mode):
            log.warning("%s", skipped)
            refiner = None  # no prompt vector: the step runs without it
        self._s_configured = effective_strength(m)
        s_init = torch.tensor(self._s_configured, device=self.device)
        self.state = StreamState(
            cache=cache,
            cross=self.dit.cross_kv(torch.zeros(self.batch, 1, cfg.text_dim, device=self.device)),
            noise=torch.empty(m.steps, *chunk, device=self.device, dtype=self.dtype),
            s_init=s_init,
            strength=s_init.clone(),
            fixed_ts=torch.tensor(m.timesteps, device=self.device) if m.timesteps else None,
            prev=torch.zeros(3, m.height, m.width, device=self.device, dtype=self.dtype),
            batch=StreamBatchState.allocate(m.steps, chunk[1:], self.device, self.dtype) if self.batch > 1 else None,
            output_ok=torch.ones((), dtype=torch.bool, device=self.device),
            look=None if refiner is None else refiner.prompt_vector(torch.zeros(1, 1, cfg.text_dim, device=self.device)),
        )
        # the flag's host copy: pinned on CUDA, so copying it is queued behind the chunk, not waited for
        self._ok_host = torch.ones((), dtype=torch.bool, pin_memory=self.device.type == "cuda")
        self.cache, self._cross, self._strength = cache, self.state.cross, self.state.strength  # in-place aliases
        self.prompts = PromptFeed(
            lambda text: self.text.encode([text]).to(self.device),
            m.transition_chunks,
            self._s_configured,
            self._set_cross,
            self.state.s_init.fill_,
        )
        self._inbox: list[Frame] = []
        self._pending_chunks: collections.deque[list[Frame]] = collections.deque()
        self.chunks_done = 0
        self.fast: FastStep | None = None  # the fast path once attached (builder.py: on CUDA, either mode)
        self.reset()

    # ---- Transform protocol ------------------------------------------------------------------------
    def step(self, frame: Frame, prompt: PromptState) -> list[Frame]:
        """Buffer a frame; when a chunk is complete run the model and return its output frames."""
        self.prompts.sync(prompt)
        self._inbox.append(frame)
        if len(self._inbox) < self.frames_per_latent:
            return []
        chunk, self._inbox = self._inbox, []
        pixels = stack_chunk(chunk)
        self.prompts.advance()
        batch = pixels.to(self.device, non_blocking=True)
        out = self.fast.step(batch) if self.fast is not None else self.step_tensor(batch)
        self._pending_chunks.append(chunk)
        if out is None:  # stream batch still filling its slots
            return []
        meta = self._pending_chunks.popleft()[-out.shape[0] :]  # a trimmed first decode keeps the newest
        self._ok_host.copy_(self.state.output_ok, non_blocking=True)
        on_host = isinstance(chunk[0].pixels, np.ndarray)
        host = out.cpu().numpy() if on_host else out  # waits for the chunk, so for the flag's copy too
        if not on_host and self.device.type == "cuda":  # frames stay on the GPU: the flag still has to land
            torch.cuda.current_stream(self.device).synchronize()
        if not bool(self._ok_host):
            raise bad_output(self.parts.sources.get("DiT", "model.checkpoint"))
        return [f.with_pixels(host[i]) for i, f in enumerate(meta)]

    def reset(self) -> None:
        """A new stream: autoencoder memory, KV cache, stream-batch slots, motion and buffers forgotten."""
        self.ops.reset()
        self.state.reset()
        self._inbox = []
        self._pending_chunks.clear()
        self.gen = seeded_generator(self.settings.seed, self.device)
        if self.fast is not None:
            self.fast.reset()
        self.prompts.restart()

    def close(self) -> None:
        self.cache.storage = self.cache.k = self.cache.v = torch.empty(0)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def status(self) -> str:
        """One line: preset, resolution, steps, mode, device, path, and what the weights are."""
        m = self.settings
        text = (
            f"model {m.preset} {m.width}x{m.height} {m.steps} steps {m.mode}, "
            f"{self.device} {str(self.dtype).removeprefix('torch.')}, {self.path}"
        )
        if self.parts.random_parts:
            return f"{text} — RANDOM WEIGHTS (output not meaningful) in {', '.join(self.parts.random_parts)}"
        return f"{text} — {self.parts.sources['DiT']}"

    @property
    def path(self) -> str:
        return self.fast.describe() if self.fast is not None else "eager"

    # ---- the hot path ------------------------------------------------------------------------------
    @torch.no_grad()
    def step_tensor(self, frames: Tensor) -> Tensor | None:
        """frames: [frames_per_latent, H, W, 3] uint8 on the device -> [T, H, W, 3] uint8 on the device
        (T = frames_per_latent; 1 for a Wan stream's first chunk), or None while stream batch fills."""
        self.state.noise.normal_(generator=self.gen)
        out = chunk_step(frames, self.dit, self.state, self.ops, self.step_config)
        self.chunks_done += 1
        return out

    # ---- prompts -----------------------------------------------------------------------------------
    def _set_cross(self, states: Tensor) -> None:
        """Rebuild only the cross-attention K/V (and a pixel refiner's prompt vector), in place: the buffers
        a captured graph reads."""
        self.dit.cross_kv(states.expand(self.batch, -1, -1), out=self._cross)
        refiner = refiner_of(self.dit)
        if refiner is not None and self.state.look is not None:
            self.state.look.copy_(refiner.prompt_vector(states[:1]))

    @property
    def transition(self) -> PromptTransition | None:
        return self.prompts.transition


def stack_chunk(chunk: list[Frame]) -> Tensor:
    """A chunk's frames as one uint8 tensor [T, H, W, 3] on the host (each checked; all one size)."""
    pixels = [_as_tensor(f.pixels) for f in chunk]
    if any(p.shape != pixels[0].shape for p in pixels):
        raise ValueError(f"frames of one chunk differ in size: {[tuple(p.shape) for p in pixels]}")
    return torch.stack(pixels)


def bad_output(weights: str) -> BadOutput:
    """The failure for a chunk the step flagged unusable, naming the weights to check."""
    return BadOutput(
        f"the model's output is not finite (NaN/inf) or has diverged (|latent| > {LATENT_LIMIT:g}): "
        f"check the weights ({weights}) and model.shift / strength"
    )


def _as_tensor(pixels: Any) -> Tensor:
    if isinstance(pixels, np.ndarray):
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"frame pixels must be HxWx3 uint8, got {pixels.dtype} {pixels.shape}")
        return torch.from_numpy(np.ascontiguousarray(pixels))
    if isinstance(pixels, Tensor) and pixels.dtype == torch.uint8 and pixels.ndim == 3:
        return pixels
    raise ValueError(f"frame pixels must be an HxWx3 uint8 array or tensor, got {type(pixels).__name__}")


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """[N, 3, H, W] -> [N, 3, *size] bilinear, antialiased when shrinking; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]  # antialiasing an enlargement only costs time (~15x on CPU)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
