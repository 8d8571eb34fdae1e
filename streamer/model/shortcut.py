"""Shortcut models at inference (Frans, Hafner, Levine, Abbeel: "One Step Diffusion via Shortcut Models", 2024).

The DiT is also told the step size d it will take, and trained (streamer/train/shortcut.py) so that one
step of 2d lands where two steps of d land; d = 0 is the ordinary flow-matching velocity. Our convention
is the flow-matching one of the rest of the project: sigma goes 1 (noise) -> 0 (data), the model
predicts v = eps - x0, and a step of size d moves x_sigma to x_(sigma-d) = x_sigma - d * v.

The step size enters as an extra, optional module `step_embedding` added to the time embedding `e`
(so it reaches every block's modulation and the head). It is built to output exactly zero at d = 0,
and its last layer starts at zero, so: a Wan checkpoint without it loads unchanged (strict on the
original names, d ignored), a fresh module changes nothing until trained, and a trained model run
without d behaves as the d = 0 flow model. Its weights are saved in their own file
(`shortcut.safetensors`) beside the Wan-named weights; the checkpoint loader builds a `ShortcutDiT`
when that file is there, and the engine (eager and fast path) then passes `sampler_step_size(t)`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from streamer.model.config import DiTConfig
from streamer.model.dit import DiT, linear, timestep_embedding, unwrap

SHORTCUT_FILE = "shortcut.safetensors"
PREFIX = "step_embedding."


def sampler_step_size(t: Tensor) -> Tensor:
    """The step size (sigma units) each denoising pass of the engine takes at timesteps t (0-1000, any shape).

    The samplers (streamer/model/sampling.py) jump from sigma = t / 1000 straight to the x0 estimate
    x0 = x_t - sigma * v and renoise from there, so every pass's step is its whole sigma. A device op:
    no host read, so it runs inside a captured CUDA graph.
    """
    return t / 1000


def takes_step_size(model: object) -> bool:
    """Whether the engine must pass `step_size` to `model`: a ShortcutDiT, or a torch.compile wrapper of
    one (dit.unwrap). A wrapper must be called like the module it wraps, else it computes another function."""
    return isinstance(unwrap(model), ShortcutDiT)


class StepSizeEmbedding(nn.Module):
    """d (in sigma units, [N]) -> [N, dim]: MLP(sinusoid(1000 d)) - MLP(sinusoid(0)), exactly 0 at d = 0."""

    def __init__(self, freq_dim: int, dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(linear(self.mlp, 2).weight)
        nn.init.zeros_(linear(self.mlp, 2).bias)

    def forward(self, d: Tensor) -> Tensor:
        w = linear(self.mlp, 0).weight
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

    def time_embed(self, t: Tensor, step_size: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """As DiT.time_embed, with the step-size embedding added to e before the projection to e0.

        `step_size` (the fast path passes it) else the one given to `forward`; None = d ignored.
        """
        d = step_size if step_size is not None else self._step_size
        if d is None:
            return super().time_embed(t)
        b, f = t.shape
        if d.dim() == 1:
            d = d[:, None].expand(b, f)
        acc, w = self.acc_dtype, linear(self.time_embedding, 0).weight
        e = self.time_embedding(timestep_embedding(t.reshape(-1), self.cfg.freq_dim).to(w.dtype)).to(acc)
        return self.project_time(e + self.step_embedding(d.reshape(-1)).to(acc), b, f)

    def full_precision_modules(self) -> list[nn.Module]:
        """As DiT's; the step embedding stays fp32 like the time embedding it is added to."""
        return [*super().full_precision_modules(), self.step_embedding]

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
