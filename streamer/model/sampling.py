"""Few-step flow-matching samplers for streaming video-to-video, as short pure functions.

References (facts in model.md §2-§3):
- Flow matching with a shifted schedule (Esser et al., "Scaling Rectified Flow Transformers", 2024;
  Wan2.1): sigma(u) = shift·u / (1 + (shift-1)·u), model timestep t = 1000·sigma; x_t = (1-sigma)·x0 +
  sigma·eps; the model predicts v = eps - x0, so x0 = x_t - sigma·v.
- SDEdit (Meng et al., 2022) as StreamDiffusionV2 uses it (Feng et al., 2025): the input latent z is
  noised to strength s as s·eps + (1-s)·z and the model is told t = 1000·s - 100; its motion-aware
  controller lowers s on fast motion; its stream batch runs one forward over `steps` chunks at
  different steps.

Every sampler takes `model(x [B,C,F,h,w], t [B,F]) -> v` plus explicitly passed noise, so results
are reproducible (noise comes from a seeded torch.Generator owned by the caller) and the same code
runs under CUDA-graph capture: schedules are tensors, nothing here calls .item().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor], Tensor]

TIMESTEP_OFFSET = 100.0  # StreamDiffusionV2: strength s is announced to the model as t = 1000·s - 100
MOTION_RMS_FULL = 0.2  # RMS frame difference (pixels in [-1, 1]) that counts as full motion
MOTION_DAMPING = 0.1  # weight of the previous strength (smoothing against flicker)
MOTION_REDUCTION = 0.1  # full motion lowers the strength by this much


def flow_sigma(u: Tensor, shift: float) -> Tensor:
    """The shifted flow-matching noise level for a uniform position u in [0, 1]."""
    return shift * u / (1 + (shift - 1) * u)


def inverse_flow_sigma(sigma: Tensor, shift: float) -> Tensor:
    """u with flow_sigma(u) = sigma."""
    return sigma / (shift - (shift - 1) * sigma)


def warp_timesteps(timesteps: Tensor, shift: float) -> Tensor:
    """Self-Forcing's `warp_denoising_step`: nominal steps (e.g. 1000, 750, 500, 250) mapped through
    the shifted schedule (≈ 1000, 937.5, 833.3, 625 at shift 5)."""
    return 1000 * flow_sigma(timesteps / 1000, shift)


def strength_timesteps(strength: Tensor, steps: int, shift: float, offset: float = TIMESTEP_OFFSET) -> Tensor:
    """Timesteps [steps] for SDEdit at `strength` (a 0-d tensor): the first is 1000·s - offset (the
    StreamDiffusionV2 fact); the rest continue down the shifted schedule at even spacing in u, so
    s = 0.8, shift 5, 2 steps gives ≈ [700, 486] (StreamDiffusionV2's fixed list: [700, 500])."""
    t0 = (1000 * strength - offset).clamp(1.0, 1000.0)
    u0 = inverse_flow_sigma(t0 / 1000, shift)
    frac = torch.arange(steps, 0, -1, dtype=strength.dtype, device=strength.device) / steps
    return 1000 * flow_sigma(u0 * frac, shift)


def sdedit_noise(z: Tensor, noise: Tensor, strength: Tensor) -> Tensor:
    """The clean latent noised to strength s: s·eps + (1-s)·z."""
    return strength * noise + (1 - strength) * z


def to_x0(x_t: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    """The clean estimate from a flow prediction: x0 = x_t - sigma·v."""
    return x_t - sigma * v


def renoise(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """x0 taken to noise level sigma for the next step: (1-sigma)·x0 + sigma·eps."""
    return (1 - sigma) * x0 + sigma * noise


def _per_frame_t(t: Tensor, x: Tensor) -> Tensor:
    """A timestep per batch row (shape [] or [B]) broadcast to the model's [B, F]."""
    return t.reshape(-1, 1).expand(x.shape[0], x.shape[2])


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def sample_sequential(model: ModelFn, z: Tensor, noises: Tensor, strength: Tensor, timesteps: Tensor) -> Tensor:
    """One chunk, steps back to back (lowest latency). z: [B,C,F,h,w]; noises: [steps, *z.shape];
    timesteps: [steps] (sigma_i = t_i / 1000). Returns the final x0 estimate of the chunk."""
    x: Tensor | None = sdedit_noise(z, noises[0], strength)
    x0 = z
    for i in range(timesteps.shape[0]):
        assert x is not None
        x0, x = pass_update(x, model(x, _per_frame_t(timesteps[i], x)), noises, timesteps, i)
    return x0


def pass_update(x: Tensor, v: Tensor, noises: Tensor, timesteps: Tensor, i: int) -> tuple[Tensor, Tensor | None]:
    """After pass i of a chunk (input x, flow v): its x0 estimate, and the input of pass i+1 (x0 renoised
    with noises[i+1] to timesteps[i+1]), None after the last pass. The update every sampler makes: the
    sequential one here, a stream-batch slot moving on, and a pipeline's last stage (model/pipeline/)."""
    x0 = to_x0(x, v, timesteps[i] / 1000)
    if i + 1 >= timesteps.shape[0]:
        return x0, None
    return x0, renoise(x0, noises[i + 1], timesteps[i + 1] / 1000)


@dataclass
class StreamBatchState:
    """Slot i holds a chunk at step i: its noisy latent, its noises, its own schedule (the strength
    may differ per chunk) and its clean latent (what an input-conditioned DiT is given beside the noisy
    one). `filled` counts pushes, so the first steps-1 outputs are known to be empty."""

    x: Tensor  # [steps, *chunk]
    noises: Tensor  # [steps, steps, *chunk]
    timesteps: Tensor  # [steps, steps]: row = slot, column = step
    clean: Tensor  # [steps, *chunk]: each slot's chunk as encoded, before noise
    filled: int = 0

    @classmethod
    def allocate(
        cls, steps: int, chunk_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
    ) -> StreamBatchState:
        return cls(
            x=torch.zeros(steps, *chunk_shape, device=device, dtype=dtype),
            noises=torch.zeros(steps, steps, *chunk_shape, device=device, dtype=dtype),
            timesteps=torch.zeros(steps, steps, device=device, dtype=torch.float32),
            clean=torch.zeros(steps, *chunk_shape, device=device, dtype=dtype),
        )

    @property
    def steps(self) -> int:
        return self.x.shape[0]

    def reset(self) -> None:
        self.x.zero_(), self.noises.zero_(), self.timesteps.zero_(), self.clean.zero_()
        self.filled = 0


def stream_batch_step(
    model: ModelFn, state: StreamBatchState, z: Tensor, noises: Tensor, strength: Tensor, timesteps: Tensor
) -> Tensor | None:
    """Push one chunk (z: [1,C,F,h,w]), advance every slot with ONE forward of batch `steps`, and
    return the chunk that finished (x0, [1,C,F,h,w]) — the one pushed steps-1 calls ago — or None while
    the pipeline fills. With a stateless model the outputs equal `sample_sequential`'s, delayed. The
    model may read `state.clean` (each slot's own clean latent, the new chunk's in slot 0) as its condition."""
    steps = state.steps
    state.clean[0] = z[0]
    state.x[0] = sdedit_noise(z[0], noises[0, 0], strength)
    state.noises[0] = noises[:, 0]
    state.timesteps[0] = timesteps
    # Slot i is at its step i: the schedules' diagonal, read as views (no index tensors: the fast path
    # captures this step in a CUDA graph). The model's copy is its own: the slots shift after the forward.
    t_now = state.timesteps.diagonal().clone()
    x0 = to_x0(state.x, model(state.x, _per_frame_t(t_now, state.x)), _bcast(t_now / 1000, state.x))
    done = x0[steps - 1 :].clone()
    if steps > 1:  # slot i's estimate, renoised to its own next step (i+1) with its own noise, moves to slot i+1
        nxt = state.timesteps.diagonal(1) / 1000
        nxt_noise = state.noises.diagonal(1, 0, 1).movedim(-1, 0)  # [steps-1, *chunk]: noises[i, i+1]
        state.x[1:] = renoise(x0[:-1], nxt_noise, _bcast(nxt, x0[:-1]))
        state.noises[1:] = state.noises[:-1].clone()
        state.timesteps[1:] = state.timesteps[:-1].clone()
        state.clean[1:] = state.clean[:-1].clone()
    state.filled += 1
    return done if state.filled >= steps else None


def prime_stream_batch(state: StreamBatchState, z: Tensor, noises: Tensor, timesteps: Tensor) -> None:
    """Fill the empty slots of a fresh stream with the first chunk at each slot's noise level (the clean
    latent as its own x0 estimate), so a causal model's per-slot history starts from real content
    instead of zeros. Outputs stay None until real chunks reach the last slot (`filled` unchanged)."""
    for i in range(1, state.steps):
        state.x[i] = renoise(z[0], noises[i, 0], timesteps[i] / 1000)
        state.noises[i] = noises[:, 0]
        state.timesteps[i] = timesteps
        state.clean[i] = z[0]


def motion_level(frames: Tensor, previous: Tensor | None) -> Tensor:
    """d in [0, 1] for a chunk: the largest RMS difference between consecutive frames (the previous
    chunk's last frame included), pixels read on the [-1, 1] scale, divided by MOTION_RMS_FULL.
    frames: [T, 3, H, W] in [0, 1]; previous: [3, H, W] or None (start of stream: no motion)."""
    seq = frames if previous is None else torch.cat([previous[None], frames])
    if seq.shape[0] < 2:
        return frames.new_zeros(())
    diff = 2 * (seq[1:].float() - seq[:-1].float())  # [0,1] -> [-1,1] scale doubles differences
    rms = diff.square().mean(dim=(1, 2, 3)).sqrt()
    return (rms.max() / MOTION_RMS_FULL).clamp(0, 1)


def motion_strength(initial: Tensor, previous: Tensor, motion: Tensor) -> Tensor:
    """StreamDiffusionV2's controller: s = 0.9·(s_init - 0.1·d) + 0.1·s_prev (fast motion -> less noise)."""
    return (1 - MOTION_DAMPING) * (initial - MOTION_REDUCTION * motion) + MOTION_DAMPING * previous


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """The engine's only source of randomness: same seed + same inputs -> same output."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
