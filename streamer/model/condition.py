"""What an input-conditioned DiT gets beside the noisy latent, built in one place for the chunk step, the
pipelined engine's first stage and training.

- The chunk's clean input latent (`DiTConfig.conditions_on_input`), as Wan2.1's I2V model takes its
  condition latents.
- For a luma-conditioned DiT (`DiTConfig.cond_luma_factor`, the autoencoder's spatial factor 8) also the
  input's luma at full resolution: each latent frame's input frames, pixel-unshuffled onto the latent
  grid, so one 1x2x2 patch of the condition carries the 16x16 luma pixels of its tile in every frame.

Why the luma: the tiny autoencoder's latent keeps the held-out stream's input at 27.1 dB, and the
sharp-edged looks are functions of pixel detail the latent has lost. Comic computed from the round trip
of the input lands only +2.81 dB above the untouched input against comic of the input itself (1,200
held-out frames), below the 3 dB the model must reach, while the round trip of the comic target keeps
20.95 dB (+4.6): the loss is on the way in, not out. The luma costs one 1x2x2 patch embedding of
frames_per_latent x 64 channels more (the embedded tiny autoencoder codes frame by frame: 64 channels, in_dim
32 -> 96), and luma rather than RGB because the outlines and bands that go missing are tonal; the latent
keeps the colour well.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.model.dit import DiT, conditions_on_input, unwrap

LUMA = (0.299, 0.587, 0.114)  # Rec.601


def luma(x: Tensor) -> Tensor:
    """[..., 3, H, W] RGB -> [..., 1, H, W] Rec.601 luma. Python-number weights: a weight tensor made here
    would be a host-to-device copy, which a CUDA graph capture refuses (the chunk step is captured)."""
    r, g, b = x.split(1, dim=-3)
    return r * LUMA[0] + g * LUMA[1] + b * LUMA[2]


def luma_planes(frames: Tensor, factor: int, latent_frames: int) -> Tensor:
    """frames [B, T, 3, H, W] in [0, 1] -> [B, (T / latent_frames) x factor², latent_frames, H / factor,
    W / factor]: the luma of each latent frame's T / latent_frames input frames, pixel-unshuffled (frame
    by frame, then pixel by pixel within each factor x factor tile), centred on 0 (2 x luma - 1)."""
    b, t, _, h, w = frames.shape
    if t % latent_frames or h % factor or w % factor:
        raise ValueError(f"frames {tuple(frames.shape)} do not tile {latent_frames} latent frames by {factor}")
    g = luma(frames).reshape(b * latent_frames, t // latent_frames, h, w) * 2 - 1
    planes = F.pixel_unshuffle(g, factor)  # [B*F, fpl*factor², h/f, w/f]
    return planes.reshape(b, latent_frames, *planes.shape[1:]).transpose(1, 2)


def input_condition(model: object, z: Tensor, frames: Tensor) -> Tensor | None:
    """The condition `model` takes as `cond` for the chunk whose clean latent is z [B, C, F, h, w] and
    whose input frames at model size are `frames` [B, T, 3, H, W] in [0, 1]: None for a plain DiT, z for
    an input-conditioned one, z and the luma planes (channel axis) for a luma-conditioned one."""
    if not conditions_on_input(model):
        return None
    cfg = cast(DiT, unwrap(model)).cfg
    if not cfg.cond_luma_factor:
        return z
    planes = luma_planes(frames.to(z.device, z.dtype), cfg.cond_luma_factor, z.shape[2])
    if planes.shape[1] != cfg.luma_channels or planes.shape[3:] != z.shape[3:]:
        raise ValueError(
            f"the input frames {tuple(frames.shape)} give luma planes {tuple(planes.shape)}, but the DiT takes "
            f"{cfg.luma_channels} luma channels on the latent's {tuple(z.shape[3:])} grid"
        )
    return torch.cat([z, planes], dim=1)


def takes_luma(model: object) -> bool:
    """Whether `model` (or the DiT a torch.compile wrapper holds) is luma-conditioned."""
    inner = unwrap(model)
    return isinstance(inner, DiT) and inner.cfg.cond_luma_factor > 0
