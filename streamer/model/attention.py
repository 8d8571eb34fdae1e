"""Attention layers of the Wan2.1 DiT and the block-causal frame mask.

Parameter names match the original checkpoints (`q`, `k`, `v`, `o`, `norm_q`, `norm_k`). q and k get an
RMSNorm over the full width before the split into heads. Attention itself is
`torch.nn.functional.scaled_dot_product_attention` on [B, heads, tokens, head_dim] so PyTorch picks the
fastest backend; the self-attention's key/value source (this chunk only, or the rolling cache) is
handed in by the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.rope import apply_rope

if TYPE_CHECKING:
    from streamer.model.cache import KVCache


class RMSNorm(nn.Module):
    """Weight-only RMSNorm over the last dim, computed in fp32 then cast back (as upstream)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., dim] -> [..., dim] in x's dtype."""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class _Projections(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float, head_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = num_heads * self.head_dim  # == dim except in a head-pruned model
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.o = nn.Linear(inner, dim)
        self.norm_q = RMSNorm(inner, eps)
        self.norm_k = RMSNorm(inner, eps)

    def heads(self, x: Tensor) -> Tensor:
        """[B, S, dim] -> [B, S, H, D]."""
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def out(self, y: Tensor) -> Tensor:
        """[B, H, S, D] attention output -> [B, S, dim] after the output projection."""
        return self.o(y.transpose(1, 2).flatten(2))


class SelfAttention(_Projections):
    """Self-attention with q/k RMSNorm and 3D RoPE; new keys are stored in the cache after RoPE."""

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        *,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> Tensor:
        """x: [B, S, dim]; cos/sin: [S, D/2]; mask: [S, S] bool (True = attend) when no cache.

        With a cache, this chunk's K/V go into the cache's staging slots and the queries attend to every
        valid cached frame plus the chunk itself. Returns [B, S, dim].
        """
        q = apply_rope(self.heads(self.norm_q(self.q(x))), cos, sin).transpose(1, 2)
        k = apply_rope(self.heads(self.norm_k(self.k(x))), cos, sin).transpose(1, 2)
        v = self.heads(self.v(x)).transpose(1, 2)
        if cache is not None:
            k, v, mask = cache.update(layer, k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y)


class CrossAttention(_Projections):
    """Cross-attention to the text; its K/V depend only on the prompt, so they are computed once per prompt."""

    def kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """context: [B, L, dim] (after text_embedding) -> k, v [B, H, L, D]."""
        k = self.heads(self.norm_k(self.k(context))).transpose(1, 2)
        v = self.heads(self.v(context)).transpose(1, 2)
        return k, v

    def forward(self, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """x: [B, S, dim]; k, v: [B, H, L, D] -> [B, S, dim]. Upstream attends to all L (padding included)."""
        q = self.heads(self.norm_q(self.q(x))).transpose(1, 2)
        return self.out(F.scaled_dot_product_attention(q, k, v))


def frame_mask(
    num_frames: int,
    chunk_frames: int | None,
    window: int | None = None,
    sinks: int = 0,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """[F, F] bool frame-level mask (True = query frame may attend key frame), or None for full attention.

    Block-causal: a query in chunk i sees every frame up to the end of chunk i. With a window (in frames,
    the query's own chunk included) it sees only the first `sinks` frames and the last
    `window - sinks - chunk_frames` frames before its chunk, exactly what the rolling KV cache holds.
    """
    if chunk_frames is None:
        if window is not None:
            raise ValueError("a window needs chunk_frames (block-causal attention)")
        return None
    f = torch.arange(num_frames, device=device)
    chunk_start = (f // chunk_frames) * chunk_frames
    chunk_end = chunk_start + chunk_frames
    mask = f[None, :] < chunk_end[:, None]
    if window is not None:
        history = window - sinks - chunk_frames
        if history < 1:
            raise ValueError(
                f"window {window} leaves no history frames beside {sinks} sinks and a chunk of {chunk_frames}"
            )
        keep = (f[None, :] < sinks) | (f[None, :] >= chunk_start[:, None] - history)
        mask = mask & keep
    return mask


def token_mask(frames: Tensor, tokens_per_frame: int) -> Tensor:
    """Expand a frame mask [Fq, Fk] to a token mask [Fq*T, Fk*T] (frame-major token order)."""
    return frames.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
