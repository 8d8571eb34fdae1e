"""Shortcut distillation (Frans, Hafner, Levine, Abbeel: "One Step Diffusion via Shortcut Models", 2024):
the training targets.

The model half (`StepSizeEmbedding`, `ShortcutDiT`, the `shortcut.safetensors` file) lives in
streamer/model/shortcut.py, which the daemon loads; it is re-exported here so training code keeps one
import. Conventions (sigma 1 -> 0, v = eps - x0, a step of d moves x_sigma to x_sigma - d * v) are
described there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from streamer.model.shortcut import (
    PREFIX,
    SHORTCUT_FILE,
    ShortcutDiT,
    StepSizeEmbedding,
    load_shortcut_file,
    sampler_step_size,
)

__all__ = [
    "PREFIX",
    "SHORTCUT_FILE",
    "ModelFn",
    "ShortcutDiT",
    "StepSizeEmbedding",
    "load_shortcut_file",
    "sampler_step_size",
    "shortcut_target",
    "step_sizes",
]


# ---- training targets ----------------------------------------------------------------------------------
ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x [B,C,F,h,w], t [B,F] 0-1000, d [B,F] sigma units) -> v


def step_sizes(levels: int) -> Tensor:
    """The full step sizes 2d trained for self-consistency: 1, 1/2, ..., 2^-(levels-1)."""
    return 2.0 ** -torch.arange(levels, dtype=torch.float64)


def shortcut_target(
    model: ModelFn, x: Tensor, t: Tensor, d: Tensor, frame: int, d_full: Tensor, min_half: float
) -> Tensor:
    """Self-consistency target for one frame of each clip (see module docstring).

    x: [B, C, F, h, w] noisy latents; t: [B, F] timesteps (0-1000) of every frame; d: [B, F] the step
    sizes every other frame is queried with (0 normally); d_full: [B] the shortcut frame's step 2d
    (t[:, frame] / 1000 >= d_full). The two half steps move only `frame`; earlier frames are its fixed
    causal context, later frames cannot influence it. Returns v_target [B, C, h, w] (no gradient).
    """
    with torch.no_grad():
        half = d_full / 2
        q = torch.where(half <= min_half, torch.zeros_like(half), half)  # smallest step: flow velocity
        d1 = d.clone()
        d1[:, frame] = q
        v1 = model(x, t, d1)[:, :, frame]
        x2 = x.clone()
        x2[:, :, frame] = x[:, :, frame] - half.view(-1, 1, 1, 1).to(x.dtype) * v1
        t2 = t.clone()
        t2[:, frame] = t[:, frame] - 1000 * half.to(t.dtype)
        v2 = model(x2, t2, d1)[:, :, frame]
        return (v1 + v2) / 2
