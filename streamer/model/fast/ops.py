"""`FusedOps`: the DiT's named ops (streamer/model/ops.py) on the fused kernels of `streamer_kernels`.

`DiT.forward(..., ops=FusedOps(dit))` computes the same function as the eager forward, with per block:
- one [dim -> 3*dim] matmul for q, k, v (the three Linear weights become views of one buffer, so
  loading a checkpoint into the DiT afterwards still updates what the fused matmul reads);
- one kernel for q/k RMSNorm + RoPE + the write of K/V into the cache's staging slot;
- attention through a measured backend picker (streamer_kernels.attention);
- each residual add fused with the next LayerNorm + modulation (norm3's affine is a modulation
  with scale = w - 1, shift = b), across block boundaries too (the forward passes the next one in);
- FFN bias + GELU in one pass after a bias-free matmul.
Precision is the eager model's: fp32 residual stream and modulation, matmuls in the weights' dtype.
Streaming only: the self-attention needs the KV cache (the full-sequence training pass stays eager).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.dit import linear
from streamer.model.ops import DiTOps
from streamer_kernels.attention import AttentionPicker
from streamer_kernels.bias_gelu import bias_gelu
from streamer_kernels.modulated_layernorm import gated_modulated_layernorm, modulated_layernorm
from streamer_kernels.qk_norm_rope import qk_norm_rope

if TYPE_CHECKING:
    from streamer.model.attention import CrossAttention, SelfAttention
    from streamer.model.cache import KVCache
    from streamer.model.dit import DiT


def _fuse_linears(linears: list[nn.Linear]) -> tuple[Tensor, Tensor]:
    """One [sum(out), in] weight and bias whose slices become the given layers' parameters."""
    weight = torch.cat([lin.weight.data for lin in linears])
    bias = torch.cat([lin.bias.data for lin in linears])
    row = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight.data = weight[row : row + n]
        lin.bias.data = bias[row : row + n]
        row += n
    return weight, bias


class FusedOps(DiTOps):
    """The fast path's ops for one DiT (its q/k/v weights are fused in place, values unchanged)."""

    name = "fused"

    def __init__(self, dit: DiT, attention: AttentionPicker | None = None) -> None:
        self.attn = attention or AttentionPicker()
        acc = dit.acc_dtype
        self._ones = torch.ones(1, 1, dit.cfg.dim, dtype=acc, device=dit.patch_embedding.weight.device)
        self.qkv = {
            id(b.self_attn): _fuse_linears([b.self_attn.q, b.self_attn.k, b.self_attn.v]) for b in dit.layers
        }

    def modulated_norm(self, x: Tensor, shift: Tensor, scale: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        return modulated_layernorm(x, shift, scale, eps, out_dtype=out_dtype)

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
        if gate is None:  # the ungated add after the cross-attention
            gate = self._ones.expand_as(shift)
        return gated_modulated_layernorm(x, y, gate, shift, scale, eps, out_dtype)

    def residual_affine_norm(
        self, x: Tensor, y: Tensor, gate: Tensor, norm: nn.LayerNorm, out_dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        # the affine LayerNorm as a modulation: w * n + b = n * (1 + (w - 1)) + b
        acc = x.dtype
        shift = norm.bias.to(acc).view(1, 1, -1).expand_as(gate)
        scale = (norm.weight.to(acc) - 1).view(1, 1, -1).expand_as(gate)
        return gated_modulated_layernorm(x, y, gate, shift, scale, norm.eps, out_dtype)

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
        if cache is None or mask is not None:
            raise ValueError("the fused self-attention streams through a KV cache (no full-sequence mask)")
        b, s, _ = h.shape
        w, bias = self.qkv[id(attn)]
        a = w.shape[0] // 3  # attention width: dim, or less in a head-pruned model
        q, k, v = F.linear(h, w, bias).split(a, dim=-1)
        off = cache.stage_offset
        slot_k = cache.k[layer, :, :, off : off + s].transpose(1, 2)  # [B, S, H, hd] view of the cache
        slot_v = cache.v[layer, :, :, off : off + s].transpose(1, 2)
        q, _, _ = qk_norm_rope(
            q, k, v, attn.norm_q.weight, attn.norm_k.weight, cos.float(), sin.float(), attn.num_heads,
            k_out=slot_k, v_out=slot_v, eps=attn.norm_q.eps, heads_first=True,
        )  # fmt: skip
        keys = cache.k[layer, :, :, : off + s].transpose(1, 2)
        values = cache.v[layer, :, :, : off + s].transpose(1, 2)
        if cache.history_full:  # host-known: the steady state (the captured graph) needs no mask
            y = self.attn(q, keys, values)
        else:  # filling cache: masked SDPA over the valid history + the chunk, eager (never captured)
            hist = cache.valid[layer].repeat_interleave(cache.tokens)
            keep = torch.cat([hist, torch.ones(s, dtype=torch.bool, device=hist.device)]).view(1, 1, 1, -1)
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=keep
            ).transpose(1, 2)
        return attn.o(y.reshape(b, s, a))

    def cross_attention(self, attn: CrossAttention, h: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, s, _ = h.shape
        q, _, _ = qk_norm_rope(
            attn.q(h), None, None, attn.norm_q.weight, None, None, None, attn.num_heads, eps=attn.norm_q.eps,
            heads_first=True,
        )  # fmt: skip
        y = self.attn(q, k.transpose(1, 2), v.transpose(1, 2))
        return attn.o(y.reshape(b, s, -1))

    def ffn(self, ffn: nn.Sequential, h: Tensor) -> Tensor:
        first, last = linear(ffn, 0), linear(ffn, 2)
        hidden = bias_gelu(F.linear(h, first.weight), first.bias, out=None)
        return F.linear(hidden, last.weight, last.bias)
