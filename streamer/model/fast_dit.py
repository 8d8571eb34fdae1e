"""The DiT forward rebuilt on the fused kernels in kernels/ (the GPU fast path's model half).

`FusedDiT(dit)` wraps a `streamer.model.dit.DiT` without copying its weights and computes the same
function as `dit(x, t, cross_kv, cache)` with, per block:
- one [dim -> 3*dim] matmul for q, k, v (the three Linear weights become views of one buffer, so
  loading a checkpoint into the DiT afterwards still updates what the fused matmul reads);
- one kernel for q/k RMSNorm + RoPE + the write of K/V into the cache's staging slot;
- attention through a measured backend picker (kernels/attention.py);
- the gated residual adds fused with the next LayerNorm + modulation (norm3's affine is a
  modulation with scale = w - 1, shift = b), across block boundaries too;
- FFN bias + GELU in one pass after a bias-free matmul.
The time embedding is the model's own `time_embed` (a `ShortcutDiT` adds its step-size embedding there
when given `step_size`), so the prologue stays the eager model's math, graph-capturable as is.
Precision is the eager model's: fp32 residual stream and modulation, matmuls in the weights' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.model.cache import CrossAttnKV, KVCache
from streamer.model.dit import DiT
from streamer.model.rope import rope_tables
from streamer.model.shortcut import ShortcutDiT
from streamer_kernels.attention import AttentionPicker
from streamer_kernels.bias_gelu import bias_gelu
from streamer_kernels.modulated_layernorm import gated_modulated_layernorm, modulated_layernorm
from streamer_kernels.qk_norm_rope import qk_norm_rope


def _fuse_linears(linears: list[torch.nn.Linear]) -> tuple[Tensor, Tensor]:
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


class FusedDiT:
    """Callable like the DiT in streaming mode: (x, t, cross_kv, cache[, step_size]) -> flow prediction v."""

    def __init__(self, dit: DiT, attention: AttentionPicker | None = None) -> None:
        self.dit = dit
        self.attn = attention or AttentionPicker()
        cfg = dit.cfg
        self.qkv = [_fuse_linears([b.self_attn.q, b.self_attn.k, b.self_attn.v]) for b in dit.blocks]
        acc = dit.acc_dtype
        self._ones = torch.ones(1, 1, cfg.dim, dtype=acc, device=dit.patch_embedding.weight.device)

    def _norm3(self, i: int) -> tuple[Tensor, Tensor]:
        """norm3's affine as modulation (shift, scale) [1, 1, dim] in fp32 (cheap; read fresh each call)."""
        n3 = self.dit.blocks[i].norm3
        acc = self.dit.acc_dtype
        return n3.bias.to(acc).view(1, 1, -1), (n3.weight.to(acc) - 1).view(1, 1, -1)

    @torch.no_grad()
    def __call__(
        self, x: Tensor, t: Tensor, context: CrossAttnKV, cache: KVCache, step_size: Tensor | None = None
    ) -> Tensor:
        """x: [B, in_dim, F, H, W] current chunk; t: [B, F] or [B]; context: CrossAttnKV; step_size: as
        ShortcutDiT's (a model with a step embedding only) -> v [B, out_dim, F, H, W]."""
        dit, cfg = self.dit, self.dit.cfg
        acc, dtype = dit.acc_dtype, dit.dtype
        tokens, e, e0, cos, sin, grid = self._embed(x, t, cache, step_size)
        b, frames = tokens.shape[0], grid[0]
        masked = not cache.history_full  # host-known: steady state (the captured graph) needs no mask
        mods = [blk.modulation.to(acc).unsqueeze(0) + e0 for blk in dit.blocks]
        head = dit.head
        head_mod = head.modulation.to(acc).unsqueeze(0) + e.unsqueeze(2)  # [B, F, 2, dim]
        h = modulated_layernorm(tokens, mods[0][:, :, 0], mods[0][:, :, 1], cfg.eps, out_dtype=dtype)
        for i, blk in enumerate(dit.blocks):
            m = mods[i]
            y = self._self_attention(
                i, h, cos, sin, cache, self._history_mask(cache, i, tokens.shape[1]) if masked else None
            )
            shift3, scale3 = self._norm3(i)
            n = tokens.shape[1]
            tokens, h = gated_modulated_layernorm(
                tokens, y, m[:, :, 2], shift3.expand(b, frames, -1), scale3.expand(b, frames, -1), cfg.eps, dtype
            )
            y = self._cross_attention(i, h, context)
            ones = self._ones.expand(b, frames, -1)
            tokens, h = gated_modulated_layernorm(tokens, y, ones, m[:, :, 3], m[:, :, 4], cfg.eps, dtype)
            ffn = blk.ffn
            hidden = bias_gelu(F.linear(h, ffn[0].weight), ffn[0].bias, out=None)
            y = F.linear(hidden, ffn[2].weight, ffn[2].bias)
            if i + 1 < len(dit.blocks):
                nxt, out_dtype = mods[i + 1], dtype
                shift, scale = nxt[:, :, 0], nxt[:, :, 1]
            else:
                shift, scale, out_dtype = head_mod[:, :, 0], head_mod[:, :, 1], head.head.weight.dtype
            tokens, h = gated_modulated_layernorm(tokens, y, m[:, :, 5], shift, scale, cfg.eps, out_dtype)
            assert tokens.shape[1] == n
        return self._unpatchify(head.head(h).to(acc), grid)

    def _embed(
        self, x: Tensor, t: Tensor, cache: KVCache, step_size: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, tuple[int, int, int]]:
        """Patchify, time embedding and RoPE tables for one chunk: tokens [B, S, dim] (acc dtype),
        e [B, F, dim], e0 [B, F, 6, dim], cos/sin [S, head_dim/2], grid (frames, hp, wp)."""
        dit, cfg = self.dit, self.dit.cfg
        b, _, f_in, h_in, w_in = x.shape
        pt, ph, pw = cfg.patch_size
        frames, hp, wp = f_in // pt, h_in // ph, w_in // pw
        if t.dim() == 1:
            t = t[:, None].expand(b, frames)
        cache.check_chunk(frames, hp * wp)
        tokens = dit.patch_embedding(x.to(dit.dtype)).flatten(2).transpose(1, 2).to(dit.acc_dtype)
        if step_size is None:
            e, e0 = dit.time_embed(t)
        elif isinstance(dit, ShortcutDiT):
            e, e0 = dit.time_embed(t, step_size)
        else:
            raise ValueError("step_size given to a DiT without a step embedding (not a ShortcutDiT)")
        cos, sin = rope_tables(cache.positions(frames), hp, wp, cfg.head_dim, cfg.rope_theta, dtype=torch.float32)
        return tokens, e, e0, cos, sin, (frames, hp, wp)

    def _unpatchify(self, out: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Head output [B, S, prod(patch) * out_dim] -> v [B, out_dim, F, H, W]."""
        cfg = self.dit.cfg
        frames, hp, wp = grid
        pt, ph, pw = cfg.patch_size
        out = out.view(out.shape[0], frames, hp, wp, pt, ph, pw, cfg.out_dim).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(out.shape[0], cfg.out_dim, frames * pt, hp * ph, wp * pw)

    @staticmethod
    def _history_mask(cache: KVCache, layer: int, n: int) -> Tensor:
        """While the cache fills: valid history frames + the chunk's n tokens ([1,1,1,keys] bool; eager only)."""
        hist = cache.valid[layer].repeat_interleave(cache.tokens)
        return torch.cat([hist, torch.ones(n, dtype=torch.bool, device=hist.device)]).view(1, 1, 1, -1)

    def _self_attention(
        self, i: int, h: Tensor, cos: Tensor, sin: Tensor, cache: KVCache, mask: Tensor | None
    ) -> Tensor:
        sa = self.dit.blocks[i].self_attn
        b, s, d = h.shape
        w, bias = self.qkv[i]
        a = w.shape[0] // 3  # attention width: dim, or less in a head-pruned model
        q, k, v = F.linear(h, w, bias).split(a, dim=-1)
        off = cache.stage_offset
        slot_k = cache.k[i, :, :, off : off + s].transpose(1, 2)  # [B, S, H, hd] view of the cache
        slot_v = cache.v[i, :, :, off : off + s].transpose(1, 2)
        q, _, _ = qk_norm_rope(
            q, k, v, sa.norm_q.weight, sa.norm_k.weight, cos, sin, sa.num_heads,
            k_out=slot_k, v_out=slot_v, eps=sa.norm_q.eps, heads_first=True,
        )  # fmt: skip
        keys = cache.k[i, :, :, : off + s].transpose(1, 2)
        values = cache.v[i, :, :, : off + s].transpose(1, 2)
        if mask is None:
            y = self.attn(q, keys, values)
        else:  # filling cache: masked SDPA, eager (never captured)
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask
            ).transpose(1, 2)
        return sa.o(y.reshape(b, s, a))

    def _cross_attention(self, i: int, h: Tensor, context: CrossAttnKV) -> Tensor:
        ca = self.dit.blocks[i].cross_attn
        b, s, d = h.shape
        q, _, _ = qk_norm_rope(
            ca.q(h), None, None, ca.norm_q.weight, None, None, None, ca.num_heads, eps=ca.norm_q.eps, heads_first=True
        )
        k, v = context.layer(i)  # [B, H, L, hd]
        y = self.attn(q, k.transpose(1, 2), v.transpose(1, 2))
        return ca.o(y.reshape(b, s, -1))
