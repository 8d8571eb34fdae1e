"""Diffusion forcing with history augmentation: the per-frame noise plan of a training batch.

Diffusion forcing (Chen et al., 2024): every latent frame of a clip gets its OWN noise level, and the
model sees the clip under the same block-causal mask it streams with, so it learns to denoise any frame
given a context of frames at any noise level (the streaming cache holds frames at the last step's level).

Frames come in three kinds, chosen per clip/frame from the step's generator:
- target frames: x = (1 - sigma) z_target + sigma eps, label v = eps - z_target (plain flow matching);
- paired frames (video-to-video, as the engine runs): the INPUT clip noised SDEdit-style to
  s = sigma + offset/1000 while the model is told t = 1000 sigma (StreamDiffusionV2's convention), and the
  label is the velocity that lands on the TARGET: v = (x - z_target) / sigma, so x - sigma v = z_target;
- history frames (the first frames of some clips): a corrupted version of the target (pixel
  corruptions or the model's own rollout) at a low noise level, with no loss: later frames must learn
  to correct a damaged context instead of copying it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from streamer.model.sampling import flow_sigma
from streamer.train.config import TrainConfig

MIN_SIGMA = 1e-3  # keeps t > 0 and the paired label finite
PAIRED_MIN_SIGMA = 0.2  # SDEdit strengths below ~0.3 are not used live; the paired label grows as 1/sigma


@dataclass
class Plan:
    """Random choices of one batch; all [B, F] unless noted."""

    sigma: Tensor  # noise level the model is told (t = 1000 sigma), float64
    level: Tensor  # noise actually mixed in (sigma, or sigma + offset for paired frames), float64
    paired: Tensor  # bool: noised from the input clip
    history: Tensor  # bool: corrupted, loss-free context frame
    rollout: Tensor  # bool [B]: the history is the model's own prediction (else pixel corruptions)
    shortcut: Tensor  # bool [B]: the clip's last frame trains self-consistency
    d_full: Tensor  # [B] the shortcut step 2d (0 where no shortcut), float64

    def to(self, device: torch.device) -> Plan:
        """The same plan with every tensor on `device` (plans are drawn on the CPU: the step's
        generator is a CPU generator, so GPU and CPU runs draw identical plans)."""
        return Plan(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def weight(self) -> Tensor:
        """[B, F] loss weight: 1 for every frame except history frames."""
        return (~self.history).to(torch.float32)


def frame_sigmas(b: int, f: int, shift: float, gen: torch.Generator) -> Tensor:
    """[B, F] independent noise levels: u ~ U(0, 1) per frame through the shifted schedule (float64)."""
    u = torch.rand(b, f, generator=gen, dtype=torch.float64)
    return flow_sigma(u, shift).clamp(MIN_SIGMA, 1.0)


def make_plan(cfg: TrainConfig, b: int, f: int, gen: torch.Generator) -> Plan:
    """Draw the batch's noise levels, frame kinds, history lengths and shortcut steps."""
    sigma = frame_sigmas(b, f, cfg.shift, gen)
    paired = torch.rand(b, f, generator=gen) < cfg.p_paired
    # Drawn even when unused, so a run's other choices do not depend on paired_max_sigma.
    band = PAIRED_MIN_SIGMA + (cfg.paired_max_sigma - PAIRED_MIN_SIGMA) * torch.rand(
        b, f, generator=gen, dtype=torch.float64
    )
    paired_sigma = sigma.clamp(min=PAIRED_MIN_SIGMA) if cfg.paired_max_sigma >= 1 else band
    sigma = torch.where(paired, paired_sigma, sigma)
    # History: whole chunks at the start of a clip, at least one chunk left to learn from.
    chunks = f // cfg.chunk_frames
    history = torch.zeros(b, f, dtype=torch.bool)
    has_hist = (torch.rand(b, generator=gen) < cfg.p_history) & (chunks > 1)
    n_hist = torch.randint(1, max(chunks, 2), (b,), generator=gen) * cfg.chunk_frames
    history[has_hist] = torch.arange(f)[None] < n_hist[has_hist, None]
    hist_sigma = torch.rand(b, f, generator=gen, dtype=torch.float64) * cfg.history_max_sigma
    sigma = torch.where(history, hist_sigma.clamp(min=MIN_SIGMA), sigma)
    paired &= ~history
    rollout = has_hist & (torch.rand(b, generator=gen) < cfg.p_rollout)
    # Shortcut: the last frame of some clips; sigma in [2d, 1] so both half steps stay >= 0.
    shortcut = torch.rand(b, generator=gen) < cfg.p_shortcut
    k = torch.randint(0, cfg.shortcut_levels, (b,), generator=gen)
    d_full = torch.where(shortcut, 2.0 ** -k.to(torch.float64), torch.zeros(b, dtype=torch.float64))
    u = torch.rand(b, generator=gen, dtype=torch.float64)
    last_sigma = d_full + (1 - d_full) * u
    sigma[:, -1] = torch.where(shortcut, last_sigma.clamp(min=MIN_SIGMA), sigma[:, -1])
    paired[:, -1] &= ~shortcut  # self-consistency frames are plain target frames
    level = torch.where(paired, (sigma + cfg.sdedit_offset / 1000).clamp(max=1.0), sigma)
    return Plan(sigma, level, paired, history, rollout, shortcut, d_full)


def per_frame(v: Tensor, like: Tensor) -> Tensor:
    """[B, F] per-frame values -> [B, 1, F, 1, 1] in like's dtype (latents are [B, C, F, h, w])."""
    return v[:, None, :, None, None].to(like.dtype)


def noisy_clip(plan: Plan, z_in: Tensor, z_tgt: Tensor, z_hist: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The model input, its timesteps and the flow label.

    z_in, z_tgt, z_hist, eps: [B, C, F, h, w] (z_hist: the corrupted history content, used where
    plan.history). Returns x [B, C, F, h, w], t [B, F] (0-1000, float32), v_label [B, C, F, h, w].
    """
    src = torch.where(per_frame(plan.paired, z_in).bool(), z_in, z_tgt)
    src = torch.where(per_frame(plan.history, z_in).bool(), z_hist, src)
    level, sigma = per_frame(plan.level, z_tgt), per_frame(plan.sigma, z_tgt)
    x = (1 - level) * src + level * eps
    label = torch.where(per_frame(plan.paired, z_in).bool(), (x - z_tgt) / sigma, eps - z_tgt)
    return x, (1000 * plan.sigma).to(torch.float32), label


def frame_loss(pred: Tensor, label: Tensor, weight: Tensor) -> Tensor:
    """Weighted MSE with a FIXED normaliser (all elements of all frames), so the loss is linear in the
    samples: the mean over 2 processes' batches equals the loss of one process on both (DDP check)."""
    err = (pred.float() - label.float()).square().mean(dim=(1, 3, 4))  # [B, F]
    return (err * weight.to(err.dtype)).sum() / err.numel()
