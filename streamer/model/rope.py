"""3D rotary position embedding of the Wan2.1 DiT, as plain functions.

Each attention head of width D is rotated as D/2 complex pairs (x[2i], x[2i+1]). The pairs are split
time:height:width the way Wan splits them: the time band gets D - 4*(D//6) real dims and height and
width 2*(D//6) each (44/42/42 for D = 128, i.e. 22:21:21 pairs); each band has its own frequency
ladder theta^(-2j/band_dims). Causal streaming only changes the time index (offset by the chunk's
start frame), so positions are tensors and angles are computed on the device, in float64 like
upstream, with no table-size limit on the time position.
"""

from __future__ import annotations

import torch
from torch import Tensor


def band_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dims of the (time, height, width) bands for a head of width `head_dim`."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"head_dim must be even and >= 6 for 3D RoPE, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def inv_freqs(head_dim: int, theta: float, device: torch.device | str | None = None) -> list[Tensor]:
    """Per-band inverse frequencies (float64), [pairs_t], [pairs_h], [pairs_w]."""
    out = []
    for d in band_dims(head_dim):
        exps = torch.arange(0, d, 2, dtype=torch.float64, device=device) / d
        out.append(theta**-exps)
    return out


def grid_angles(positions: Tensor, height: int, width: int, head_dim: int, theta: float = 10000.0) -> Tensor:
    """Rotation angles for a token grid, frame-major (f, h, w).

    positions: [F] time index of each frame (int or float tensor, any device).
    Returns [F*height*width, head_dim/2] float64 angles.
    """
    dev = positions.device
    inv_t, inv_h, inv_w = inv_freqs(head_dim, theta, dev)
    f = positions.to(torch.float64)
    n_frames = f.shape[0]
    a_t = (f[:, None] * inv_t[None]).view(n_frames, 1, 1, -1).expand(n_frames, height, width, -1)
    hs = torch.arange(height, dtype=torch.float64, device=dev)
    ws = torch.arange(width, dtype=torch.float64, device=dev)
    a_h = (hs[:, None] * inv_h[None]).view(1, height, 1, -1).expand(n_frames, height, width, -1)
    a_w = (ws[:, None] * inv_w[None]).view(1, 1, width, -1).expand(n_frames, height, width, -1)
    return torch.cat([a_t, a_h, a_w], dim=-1).reshape(n_frames * height * width, head_dim // 2)


def rope_tables(
    positions: Tensor,
    height: int,
    width: int,
    head_dim: int,
    theta: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """cos and sin tables [S, head_dim/2] for the chunk's S = F*height*width tokens (shared by all heads)."""
    ang = grid_angles(positions, height, width, head_dim, theta)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, S, H, D] by per-token tables cos/sin [S, D/2]; math in cos's dtype, result in x's dtype."""
    b, s, h, d = x.shape
    pairs = x.to(cos.dtype).view(b, s, h, d // 2, 2)
    a, c = pairs[..., 0], pairs[..., 1]
    cs, sn = cos.view(1, s, 1, d // 2), sin.view(1, s, 1, d // 2)
    out = torch.stack((a * cs - c * sn, a * sn + c * cs), dim=-1)
    return out.view(b, s, h, d).to(x.dtype)


def rotate_time_band(x: Tensor, delta: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """Move already-rotated keys by `delta` time positions: rotate only the time band's pairs.

    x: [..., D] keys (last dim a head), delta: any shape broadcastable to x.shape[:-1] (time steps to add,
    e.g. negative to rewind). RoPE is a rotation, so R(p + delta) = R(delta) R(p): no raw keys needed.
    Returns a new tensor in x's dtype; math in float32 (float64 for float64 input).
    """
    t_dims = band_dims(head_dim)[0]
    inv_t = inv_freqs(head_dim, theta, x.device)[0]
    ang = delta.to(torch.float64).unsqueeze(-1) * inv_t  # [..., pairs_t]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    cs, sn = ang.cos().to(work), ang.sin().to(work)
    band = x[..., :t_dims].to(work).unflatten(-1, (t_dims // 2, 2))
    a, c = band[..., 0], band[..., 1]
    rot = torch.stack((a * cs - c * sn, a * sn + c * cs), dim=-1).flatten(-2)
    return torch.cat([rot.to(x.dtype), x[..., t_dims:]], dim=-1)
