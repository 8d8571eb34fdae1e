"""The DiT's named ops, in plain torch: what `DiT.forward` calls wherever the fast path fuses.

The forward (streamer/model/dit.py) is written once, against these ops. The fast path swaps the
object, not the model (Liger's "swap the op, keep the model"): `streamer.model.fast.ops.FusedOps`
implements the same methods with the Triton kernels of `streamer_kernels`, each of which keeps its
own `_ref` beside it. Fusions that span modules are named here: a residual add fused with the NEXT
LayerNorm + modulation (across block boundaries too), and the whole self-attention input prep.

Shapes: x is the residual stream [B, F*T, dim] in the accumulation dtype (fp32); y a sub-layer's
output [B, F*T, dim]; shift/scale/gate are per frame [B, F, dim], broadcast over each frame's T tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from streamer.model.attention import CrossAttention, SelfAttention
    from streamer.model.cache import KVCache


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x: [B, F*T, dim]; shift/scale: [B, F, dim] broadcast over each frame's T tokens."""
    b, s, d = x.shape
    frames = shift.shape[1]
    xv = x.view(b, frames, s // frames, d)
    return (xv * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)).view(b, s, d)


def gated(y: Tensor, gate: Tensor) -> Tensor:
    """y [B, F*T, dim] times the per-frame gate [B, F, dim], in the gate's dtype."""
    b, s, d = y.shape
    frames = gate.shape[1]
    return (y.to(gate.dtype).view(b, frames, s // frames, d) * gate.unsqueeze(2)).view(b, s, d)


class DiTOps:
    """Reference ops (eager PyTorch). Subclasses override any of them with fused kernels."""

    name = "eager"

    def modulated_norm(self, x: Tensor, shift: Tensor, scale: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        """LayerNorm (no affine) of x, then per-frame modulation; the next matmul's input in out_dtype."""
        return modulate(F.layer_norm(x, (x.shape[-1],), eps=eps), shift, scale).to(out_dtype)

    def residual_modulated_norm(
        self,
        x: Tensor,
        y: Tensor,
        gate: Tensor | None,
        shift: Tensor,
        scale: Tensor,
        eps: float,
        out_dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        """x + gate * y (plain x + y when gate is None), then `modulated_norm` of the sum: (new x, h)."""
        x = x + (y.to(x.dtype) if gate is None else gated(y, gate))
        return x, self.modulated_norm(x, shift, scale, eps, out_dtype)

    def residual_affine_norm(
        self, x: Tensor, y: Tensor, gate: Tensor, norm: nn.LayerNorm, out_dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """x + gate * y, then an affine LayerNorm (the cross-attention's norm3): (new x, h)."""
        x = x + gated(y, gate)
        w, b = norm.weight.to(x.dtype), norm.bias.to(x.dtype)
        return x, F.layer_norm(x, (x.shape[-1],), w, b, norm.eps).to(out_dtype)

    def self_attention(
        self,
        attn: SelfAttention,
        h: Tensor,
        cos: Tensor,
        sin: Tensor,
        *,
        mask: Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        """q/k/v projections, q/k RMSNorm + RoPE, the cache write and attention, then `o`: [B, S, dim]."""
        return attn(h, cos, sin, mask=mask, cache=cache, layer=layer)

    def cross_attention(
        self,
        attn: CrossAttention,
        h: Tensor,
        k: Tensor,
        v: Tensor,
        starts: Tensor | None = None,
        u: Tensor | None = None,
    ) -> Tensor:
        """Attention of h [B, S, dim] to a prompt's k, v [B, H, L, D] (from `cross_kv`), then `o`: [B, S, dim].
        `starts` [B], where each row's trailing run of repeated K/V starts, and `u`, the first values
        through `o` (CrossAttnKV.u), are optimisation hints: the result is the same function either way,
        and eager uses neither."""
        return attn(h, k, v)

    def ffn(self, ffn: nn.Sequential, h: Tensor) -> Tensor:
        """Linear -> GELU(tanh) -> Linear: [B, S, dim] -> [B, S, dim]."""
        return ffn(h)


EAGER_OPS = DiTOps()
