"""Shortcut models (Frans, Hafner, Levine, Abbeel: "One Step Diffusion via Shortcut Models", 2024).

The DiT is also told the step size d it will take, and trained so that one step of 2d lands where two
steps of d land (self-consistency); d = 0 is the ordinary flow-matching velocity. Our convention is
the flow-matching one of the rest of the project: sigma goes 1 (noise) -> 0 (data), the model predicts
v = eps - x0, and a step of size d moves x_sigma to x_(sigma-d) = x_sigma - d * v.

The step size enters as an extra, optional module `step_embedding` added to the time embedding `e`
(so it reaches every block's modulation and the head). It is built to output exactly zero at d = 0,
and its last layer starts at zero, so: a Wan checkpoint without it loads unchanged (strict on the
original names, d ignored), a fresh module changes nothing until trained, and a trained model run
without d behaves as the d = 0 flow model. Its weights are saved in their own file
(`shortcut.safetensors`) beside the Wan-named weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from streamer.model.dit import DiT, DiTConfig, timestep_embedding

SHORTCUT_FILE = "shortcut.safetensors"
PREFIX = "step_embedding."


class StepSizeEmbedding(nn.Module):
    """d (in sigma units, [N]) -> [N, dim]: MLP(sinusoid(1000 d)) - MLP(sinusoid(0)), exactly 0 at d = 0."""

    def __init__(self, freq_dim: int, dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, d: Tensor) -> Tensor:
        w = self.mlp[0].weight
        f = timestep_embedding(1000 * d.reshape(-1), self.freq_dim).to(w.dtype)
        f0 = timestep_embedding(torch.zeros(1, device=d.device), self.freq_dim).to(w.dtype)
        # The difference is continuous at 0; the mask makes d = 0 exactly zero despite batched rounding.
        return (self.mlp(f) - self.mlp(f0)) * (d.reshape(-1, 1) != 0).to(w.dtype)


class ShortcutDiT(DiT):
    """The causal DiT plus `step_embedding`; `forward(..., step_size=d)` with d [B, F] or [B] (sigma units)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__(cfg)
        self.step_embedding = StepSizeEmbedding(cfg.freq_dim, cfg.dim)
        self._step_size: Tensor | None = None

    def forward(self, x: Tensor, t: Tensor, context: object, cache: object = None, *, step_size: Tensor | None = None,
                **kwargs: object) -> Tensor:  # fmt: skip
        """As DiT.forward; step_size None or all zeros = the plain flow model."""
        self._step_size = step_size
        try:
            return super().forward(x, t, context, cache, **kwargs)  # type: ignore[arg-type]
        finally:
            self._step_size = None

    def time_embed(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """As DiT.time_embed, with the step-size embedding added to e before the projection to e0."""
        d = self._step_size
        if d is None:
            return super().time_embed(t)
        b, f = t.shape
        if d.dim() == 1:
            d = d[:, None].expand(b, f)
        acc, w = self.acc_dtype, self.time_embedding[0].weight
        e = self.time_embedding(timestep_embedding(t.reshape(-1), self.cfg.freq_dim).to(w.dtype)).to(acc)
        e = e + self.step_embedding(d.reshape(-1)).to(acc)
        e0 = self.time_projection(e.to(self.time_projection[1].weight.dtype)).to(acc)
        return e.view(b, f, self.cfg.dim), e0.view(b, f, 6, self.cfg.dim)

    # ---- weights -----------------------------------------------------------------------------------
    def wan_state_dict(self) -> dict[str, Tensor]:
        """The original Wan-named tensors only (what the project's checkpoint loader reads)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(PREFIX)}

    def shortcut_state_dict(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(PREFIX)}

    def load_weights(self, wan: dict[str, Tensor], shortcut: dict[str, Tensor] | None = None) -> None:
        """Strict on the Wan names; the step embedding is loaded when given, else left as is (zero = ignored)."""
        missing, unexpected = self.load_state_dict({**wan, **(shortcut or {})}, strict=False)
        bad_missing = [k for k in missing if not k.startswith(PREFIX) or shortcut]
        if bad_missing or unexpected:
            raise ValueError(f"weights do not fit the model: missing {bad_missing[:8]}, unexpected {unexpected[:8]}")


def load_shortcut_file(folder: Path) -> dict[str, Tensor] | None:
    """The step-embedding tensors saved beside a model, or None when the folder has none."""
    path = Path(folder) / SHORTCUT_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))


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
