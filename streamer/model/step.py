"""The chunk step: the ONE function that turns a chunk of camera frames into transformed frames.

uint8 frames -> [0, 1] at the model's resolution -> motion-aware strength -> autoencoder encode ->
SDEdit noise at that strength -> `steps` DiT passes over the rolling KV cache (sequential, or one
pass of the stream batch) -> cache commit -> decode -> uint8 at the frame size.

An input-conditioned DiT (`conditions_on_input`: in_dim = 2 x out_dim) gets the chunk's clean latent z
(what `encode` returned, before noise) beside the noisy one on every pass, so the K/V its passes leave
in the cache are conditioned ones too. In a stream batch the slots hold chunks pushed at different
times, so each slot is given its own chunk's clean latent (`StreamBatchState.clean`, shifted with the
slots). The pipelined engine (model/pipeline/) streams such a DiT in sequential mode only, as every
engine does a luma-conditioned one (`refuse_stream_batch`; streamer/model/condition.py). A DiT with a pixel
refiner (streamer/model/refiner.py) has each decoded chunk refined with its own input frames and the
prompt's vector (`StreamState.look`); in sequential mode in one process only: elsewhere the stream runs
without it (`skips_refiner`).

The eager engine (engine.py) runs it with `StepOps` in plain PyTorch; the fast path (fast/) runs the
very same function with fused kernels and static autoencoder buffers, and captures it as one CUDA
graph (gpt-fast's "compile the one step"). Everything it touches lives in `StreamState`: device
tensors of fixed shape written in place, so a captured graph replays it. It reads no tensor value on
the host. Noise is drawn by the caller (outside a graph, from the engine's seeded generator), so both
paths see the same numbers. Whether a chunk's output is usable (`output_ok`) is written on the device
too; the engine's host wrapper reads it once the chunk is copied out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from streamer.model.cache import CrossAttnKV, KVCache
from streamer.model.condition import input_condition, takes_luma
from streamer.model.dit import DiT, conditions_on_input, unwrap
from streamer.model.ops import DiTOps
from streamer.model.refiner import refiner_of
from streamer.model.sampling import (
    ModelFn,
    StreamBatchState,
    motion_level,
    motion_strength,
    prime_stream_batch,
    sample_sequential,
    stream_batch_step,
    strength_timesteps,
)
from streamer.model.shortcut import sampler_step_size, takes_step_size


@dataclass
class StreamState:
    """One stream's device state, allocated once by the engine and updated in place by `chunk_step`."""

    cache: KVCache
    cross: CrossAttnKV  # the prompt's cross-attention K/V (rewritten in place on a prompt change)
    noise: Tensor  # [steps, 1, C, 1, h, w]: drawn by the caller before each step
    s_init: Tensor  # [] the configured (or live-changed) strength
    strength: Tensor  # [] the strength in effect (motion-aware)
    fixed_ts: Tensor | None  # [steps] model.timesteps, else derived from the strength
    prev: Tensor  # [3, H, W] the previous chunk's last frame at model size (motion)
    batch: StreamBatchState | None  # stream-batch slots, None in sequential mode
    output_ok: Tensor  # [] bool: the last chunk's output is usable (`output_usable`); written in place
    look: Tensor | None = None  # [1, 2 x hidden] the pixel refiner's prompt vector (rewritten in place), or None
    have_prev: bool = False  # host flag: False for a stream's first chunk

    def reset(self) -> None:
        """A new stream: cache, slots and motion forgotten; buffers (and a captured graph) kept."""
        self.cache.reset()
        if self.batch is not None:
            self.batch.reset()
        self.strength.copy_(self.s_init)
        self.output_ok.fill_(True)
        self.have_prev = False


class StepOps(Protocol):
    """What differs between the eager and the fast path: the kernels, never the step itself."""

    @property
    def dit_ops(self) -> DiTOps:
        """The DiT's named ops (the eager reference, or the fused kernels)."""
        ...

    def to_model(self, frames: Tensor) -> Tensor:
        """[T, H, W, 3] uint8 -> [T, 3, height, width] in [0, 1], the model's dtype."""
        ...

    def encode(self, x: Tensor) -> Tensor:
        """[T, 3, height, width] -> one latent frame [1, C, 1, h, w] (the autoencoder's stream advances)."""
        ...

    def commit(self, cache: KVCache) -> None:
        """Keep the chunk's last pass K/V as history (device work; eager also advances the host counters)."""
        ...

    def decode(self, latent: Tensor) -> Tensor:
        """[1, C, 1, h, w] -> [T', 3, height, width] in [0, 1] (T' < T for a trimmed first chunk)."""
        ...

    def to_frames(self, out: Tensor, height: int, width: int) -> Tensor:
        """[T, 3, h, w] in [0, 1] -> [T, height, width, 3] uint8."""
        ...


@dataclass(frozen=True)
class StepConfig:
    """The settings the step reads (host values fixed for an engine's life)."""

    steps: int
    shift: float
    motion_aware: bool


def denoiser(dit: nn.Module, state: StreamState, ops: DiTOps, cond: Tensor | None = None) -> ModelFn:
    """The model function the samplers call: (x_t [B, C, F, h, w], t [B, F]) -> flow v. `cond`: the
    chunk's clean latent [B, C, F, h, w] for an input-conditioned DiT (None for any other)."""
    in_dtype = cast(DiT, unwrap(dit)).acc_dtype  # what the DiT returns: what later passes get
    shortcut = takes_step_size(dit)  # shortcut-distilled: told each pass's step size (t / 1000, on the device)
    extra: dict[str, Tensor] = {} if cond is None else {"cond": cond}

    def model(x: Tensor, t: Tensor) -> Tensor:
        # One input dtype for every pass: the first pass's noised latent comes in the engine's dtype, later ones
        # are renoised from the fp32 flow prediction, and a torch.compile'd DiT compiles a second graph for a
        # second dtype. Exact: the DiT casts x to its weights' dtype first.
        x = x.to(in_dtype)
        if shortcut:
            return dit(x, t, state.cross, state.cache, step_size=sampler_step_size(t), ops=ops, **extra)
        return dit(x, t, state.cross, state.cache, ops=ops, **extra)

    return model


# A TAEHV latent sits within a few units (the decoder soft-clamps it to ±3); one past this has diverged,
# and decodes to a saturated, flat picture once the soft clamp flattens it.
LATENT_LIMIT = 1e4


def output_usable(latent: Tensor, frames: Tensor) -> Tensor:
    """[] bool on the device: the latent is finite and within ±LATENT_LIMIT, the decoded frames finite.
    NaN would leave as black frames (NaN -> uint8 is 0), so this is read before any frame goes out."""
    return (latent.abs().amax() <= LATENT_LIMIT) & torch.isfinite(frames).all()  # NaN <= x is False


def chunk_step(frames: Tensor, dit: nn.Module, state: StreamState, ops: StepOps, cfg: StepConfig) -> Tensor | None:
    """frames: [frames_per_latent, H, W, 3] uint8 on the device -> [T, H, W, 3] uint8 on the device, or None
    while the stream batch fills its slots. `state.noise` must hold this chunk's noise; `state.output_ok`
    says afterwards whether the frames are usable (all-NaN weights, an infinite shift: not)."""
    height, width = frames.shape[1:3]
    z, ts, x = prepare_chunk(frames, state, ops, cfg)
    # The condition of an input-conditioned DiT: the chunk's clean latent (inside a captured graph z is the
    # graph's own buffer) and any luma planes (streamer/model/condition.py).
    if state.batch is None:
        cond = input_condition(dit, z, x[None])
    else:  # each slot's own clean latent, kept beside its x by stream_batch_step (no luma: refuse_stream_batch)
        cond = state.batch.clean if conditions_on_input(dit) else None
    model = denoiser(dit, state, ops.dit_ops, cond)
    latent: Tensor | None
    if state.batch is None:
        latent = sample_sequential(model, z, state.noise, state.strength, ts)
    else:
        if state.batch.filled == 0:
            prime_stream_batch(state.batch, z, state.noise, ts)
        latent = stream_batch_step(model, state.batch, z, state.noise, state.strength, ts)
    ops.commit(state.cache)  # the last pass's K/V become history
    if latent is None:
        return None
    refiner, look = refiner_of(dit), state.look
    if refiner is None or look is None:  # no refiner, or a stream that runs without it (`skips_refiner`)
        return finish_chunk(latent, state, ops, height, width)
    # a trimmed first decode (T' < T frames) is the chunk's newest frames: refined with the newest inputs
    return finish_chunk(latent, state, ops, height, width, lambda out: refiner(out, x[-out.shape[0] :], look))


def prepare_chunk(frames: Tensor, state: StreamState, ops: StepOps, cfg: StepConfig) -> tuple[Tensor, Tensor, Tensor]:
    """The step's start: frames -> model size x [T, 3, height, width], the (motion-aware) strength, the
    latent z [1, C, 1, h, w] and the chunk's timesteps [steps]; returns (z, timesteps, x). (A pipeline's
    first stage runs it alone: model/pipeline/.)"""
    x = ops.to_model(frames)
    if cfg.motion_aware:
        motion = motion_level(x, state.prev if state.have_prev else None)
        state.strength.copy_(motion_strength(state.s_init, state.strength, motion))
    else:  # a live change (chat, dashboard) lands in s_init; without motion it is the strength as is
        state.strength.copy_(state.s_init)
    state.prev.copy_(x[-1])
    state.have_prev = True
    z = ops.encode(x)
    ts = state.fixed_ts if state.fixed_ts is not None else strength_timesteps(state.strength, cfg.steps, cfg.shift)
    return z, ts, x


def skips_refiner(dit: nn.Module, mode: str, *, pipelined: bool = False) -> str:
    """Why a stream of `dit` in `mode` runs without its pixel refiner ("" when it runs with it, or has none).
    The refiner needs each chunk's own input frames beside its output: stream-batch slots finish chunks
    pushed earlier, and the pipelined engine's last stage never sees the input. Such streams run the model
    without it (v4.4's output for the shipped tiny model), which beats refusing them."""
    if refiner_of(dit) is None or (mode != "stream-batch" and not pipelined):
        return ""
    where = "the pipelined engine (model.gpus > 1)" if pipelined else "stream-batch mode"
    return (f"{where} runs this model without its pixel refiner (refiner.safetensors needs each chunk's input "
            "frames beside its output); model.mode = 'sequential' with one GPU runs it")  # fmt: skip


def refuse_stream_batch(dit: nn.Module, mode: str, *, pipelined: bool = False) -> None:
    """ValueError when `dit` cannot stream in `mode`: stream-batch slots carry each chunk's clean latent
    only, so a luma-conditioned DiT streams in sequential mode only, and the pipelined engine's stages carry
    no condition at all in stream-batch mode, so there any input-conditioned one does."""
    if mode != "stream-batch" or not (takes_luma(dit) or (pipelined and conditions_on_input(dit))):
        return
    what = "luma-conditioned (it takes each chunk's input luma)" if takes_luma(dit) else (
        "input-conditioned (in_dim = 2 x out_dim: it takes each chunk's clean input latent)")  # fmt: skip
    where = "the pipelined engine (model.gpus > 1) runs" if pipelined else "the engine runs"
    raise ValueError(f"this DiT is {what}, which {where} in sequential mode only; set model.mode = 'sequential'")


def finish_chunk(
    latent: Tensor, state: StreamState, ops: StepOps, height: int, width: int,
    refine: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:  # fmt: skip
    """The step's end: the final latent -> decoded frames (passed through `refine` when given: the pixel
    refiner) as uint8 [T, height, width, 3], with the usability flag written on the device. (A pipeline's
    last stage runs it alone.)"""
    decoded = ops.decode(latent)
    if refine is not None:
        decoded = refine(decoded)
    state.output_ok.copy_(output_usable(latent, decoded))  # device-side: no sync, captured with the rest
    return ops.to_frames(decoded, height, width)
