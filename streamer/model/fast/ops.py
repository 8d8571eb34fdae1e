"""`FusedOps`: the DiT's named ops (streamer/model/ops.py) on the fused kernels of `streamer_kernels`.

`DiT.forward(..., ops=FusedOps(dit))` computes the same function as the eager forward, with per block:
- one [dim -> 3*dim] matmul for q, k, v (the three Linear weights become views of one buffer, so
  loading a checkpoint into the DiT afterwards still updates what the fused matmul reads);
- every matmul through `streamer.model.fp8.matmul`: a bf16 Linear, or an FP8Linear (model.dtype =
  "fp8") whose input is quantized per token. In an FP8 model the kernels that make a matmul's input
  quantize it as they write it: the fused norms (their bf16 output and its e4m3 rows in one pass, kept
  in `_held` until the matmul that takes it) and the FFN's bias + GELU (e4m3 only). The attention
  outputs go through the standalone quantizer (streamer_kernels.fp8_quant). The values are the same as
  quantizing each bf16 input on its own;
- one kernel for q/k RMSNorm + RoPE + the write of K/V into the cache's staging slot;
- self-attention through a measured backend picker (streamer_kernels.attention); cross-attention over
  the prompt's distinct K/V only (streamer_kernels.prompt_attention: the zero padding's repeated
  positions are read once, weighted by their count), and for a short prompt its o projection folded
  into the values (streamer_kernels.prompt_projection: weights @ CrossAttnKV.u; in an FP8 model that
  projection is then made in bf16, from the dequantized weight, with no activation quantized);
- each residual add fused with the next LayerNorm + modulation (norm3's affine is a modulation
  with scale = w - 1, shift = b), across block boundaries too (the forward passes the next one in);
- FFN bias + GELU: in a bf16 model on CUDA, cuBLASLt's epilogue of the up-projection; else one pass
  after a bias-free matmul (in FP8, the pass that quantizes the down-projection's input).
Precision is the eager model's: fp32 residual stream and modulation, matmuls in the weights' dtype.
Streaming only: the self-attention needs the KV cache (the full-sequence training pass stays eager).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.fp8 import FP8Linear, dense_weight, fuse, matmul
from streamer.model.ops import DiTOps
from streamer_kernels.attention import AttentionPicker
from streamer_kernels.bias_gelu import bias_gelu, bias_gelu_fp8
from streamer_kernels.fp8_quant import quantize_rows
from streamer_kernels.modulated_layernorm import (
    gated_modulated_layernorm,
    gated_modulated_layernorm_fp8,
    modulated_layernorm,
    modulated_layernorm_fp8,
)
from streamer_kernels.qk_norm_rope import qk_norm_rope

if TYPE_CHECKING:
    from streamer.model.attention import CrossAttention, SelfAttention
    from streamer.model.cache import KVCache
    from streamer.model.dit import DiT


T = TypeVar("T")


class FusedOps(DiTOps):
    """The fast path's ops for one DiT (its q/k/v weights are fused in place, values unchanged)."""

    name = "fused"
    GELU_EPILOGUE = True  # bf16 FFN on CUDA: bias + GELU in the up-projection's matmul (see ffn)
    # q as [B, H, S, hd] memory for the attention backends; off, [B, S, H, hd], the layout the blocks'
    # matmuls read back, so an SDPA output (allocated in q's layout) needs no copy before the o projection.
    # Off: W1 32.89 / 32.93 ms against 33.40 / 33.26 on (H100, alternated, 2026-12-07; the cross-attention
    # output's 0.42 ms copy is gone, and neither attention got slower)
    Q_HEADS_FIRST = False
    # cross-attention over the prompt's distinct K/V (kernels/prompt_attention.py); off, the picker's
    # backend over all text_len positions. A switch for the whole-chunk A/B (tools/device/ab.py)
    PROMPT_ATTENTION = True
    # with it, a short prompt's o projection folded into its values (kernels/prompt_projection.py): the
    # attention's weights times CrossAttnKV.u, not the output times o's weight. Off: the matmul after it
    PROMPT_FOLD = True

    def __init__(self, dit: DiT, attention: AttentionPicker | None = None) -> None:
        self.attn = attention or AttentionPicker()
        acc = dit.acc_dtype
        self._ones = torch.ones(1, 1, dit.cfg.dim, dtype=acc, device=dit.patch_embedding.weight.device)
        self.qkv = {id(b.self_attn): fuse([b.self_attn.q, b.self_attn.k, b.self_attn.v]) for b in dit.layers}
        # FP8 blocks (model.dtype = "fp8"): the kernels that make a matmul's input quantize it (every norm
        # output feeds an FP8 matmul but the head's); off, each input goes through the standalone quantizer
        self.fused_quant = any(isinstance(b.self_attn.q, FP8Linear) for b in dit.layers)
        self._held: tuple[Tensor, Tensor, Tensor] | None = None  # (norm output, its e4m3 rows, scales)
        # tensors derived from a module's weights: id -> (the weights' versions, what was made)
        self._derived: dict[tuple[int, torch.dtype], tuple[tuple[int, ...], Any]] = {}

    def _mm(self, x: Tensor, layer: nn.Module, *, bias: bool = True) -> Tensor:
        held = self._held
        if held is not None and held[0] is x and isinstance(layer, FP8Linear):
            return layer.quantized_input(held[1], held[2], x.shape[:-1], bias=bias)
        return matmul(x, layer, bias=bias, quantize=quantize_rows)

    def _hold(self, out: Tensor, q: Tensor, scale: Tensor) -> Tensor:
        self._held = (out, q, scale)
        return out

    def modulated_norm(self, x: Tensor, shift: Tensor, scale: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        if self.fused_quant:
            return self._hold(*modulated_layernorm_fp8(x, shift, scale, eps, out_dtype))
        return modulated_layernorm(x, shift, scale, eps, out_dtype=out_dtype)

    def _gated_norm(
        self, x: Tensor, y: Tensor, gate: Tensor, shift: Tensor, scale: Tensor, eps: float, out_dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        if self.fused_quant:
            x_new, out, q, q_scale = gated_modulated_layernorm_fp8(x, y, gate, shift, scale, eps, out_dtype)
            return x_new, self._hold(out, q, q_scale)
        return gated_modulated_layernorm(x, y, gate, shift, scale, eps, out_dtype)

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
        return self._gated_norm(x, y, gate, shift, scale, eps, out_dtype)

    def residual_affine_norm(
        self, x: Tensor, y: Tensor, gate: Tensor, norm: nn.LayerNorm, out_dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        shift, scale = self._as_modulation(norm, x.dtype)
        return self._gated_norm(x, y, gate, shift.expand_as(gate), scale.expand_as(gate), norm.eps, out_dtype)

    def _derive(self, module: nn.Module, dtype: torch.dtype, sources: tuple[Tensor, ...], make: Callable[[], T]) -> T:
        """make(), kept per (module, dtype): made once, not on every call, and again when a load changes
        one of its `sources` (their version counters)."""
        versions = tuple(t._version for t in sources)
        held = self._derived.get((id(module), dtype))
        if held is None or held[0] != versions:
            held = self._derived[(id(module), dtype)] = (versions, make())
        return cast(T, held[1])

    def _as_modulation(self, norm: nn.LayerNorm, acc: torch.dtype) -> tuple[Tensor, Tensor]:
        """The affine LayerNorm as a modulation, w * n + b = n * (1 + (w - 1)) + b: (b, w - 1) in the
        residual's dtype as [1, 1, dim] (two conversions per block and pass, made on every call, were
        0.49 ms of a W1 chunk)."""
        return self._derive(norm, acc, (norm.weight, norm.bias), lambda: (
            norm.bias.detach().to(acc).view(1, 1, -1), (norm.weight.detach().to(acc) - 1).view(1, 1, -1),
        ))  # fmt: skip

    def _o_weight(self, o: nn.Module) -> Tensor:
        """The o projection's weight as the folded cross-attention's plain path multiplies it: a Linear's
        own; an FP8Linear's dequantized to its compute dtype (prompts too long to fold only)."""
        if not isinstance(o, FP8Linear):
            return dense_weight(o)
        return self._derive(o, o.compute_dtype, (o.weight, o.scale), lambda: dense_weight(o).to(o.compute_dtype))

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
        a = attn.num_heads * attn.head_dim  # attention width: dim, or less in a head-pruned model
        q, k, v = self._mm(h, self.qkv[id(attn)]).split(a, dim=-1)
        off = cache.stage_offset
        slot_k = cache.k[layer, :, :, off : off + s].transpose(1, 2)  # [B, S, H, hd] view of the cache
        slot_v = cache.v[layer, :, :, off : off + s].transpose(1, 2)
        q, _, _ = qk_norm_rope(
            q, k, v, attn.norm_q.weight, attn.norm_k.weight, cos.float(), sin.float(), attn.num_heads,
            k_out=slot_k, v_out=slot_v, eps=attn.norm_q.eps, heads_first=self.Q_HEADS_FIRST,
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
        return self._mm(y.reshape(b, s, a), attn.o)

    def cross_attention(
        self,
        attn: CrossAttention,
        h: Tensor,
        k: Tensor,
        v: Tensor,
        starts: Tensor | None = None,
        u: Tensor | None = None,
    ) -> Tensor:
        b, s, _ = h.shape
        q, _, _ = qk_norm_rope(
            self._mm(h, attn.q), None, None, attn.norm_q.weight, None, None, None, attn.num_heads, eps=attn.norm_q.eps,
            heads_first=self.Q_HEADS_FIRST,
        )  # fmt: skip
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if self.PROMPT_ATTENTION and starts is not None:
            bias = attn.o.bias
            if self.PROMPT_FOLD and u is not None and isinstance(bias, Tensor):
                # a short prompt's values come projected (u): its weights go through u, not an output
                return self.attn.prompt_projected(q, k, v, starts, u, self._o_weight(attn.o), bias)
            # a zero-padded prompt's padding positions share one key and value: each run read once
            y = self.attn.prompt(q, k, v, starts)
        else:
            y = self.attn(q, k, v)
        return self._mm(y.reshape(b, s, -1), attn.o)

    def ffn(self, ffn: nn.Sequential, h: Tensor) -> Tensor:
        first, last = ffn[0], ffn[2]
        if self.GELU_EPILOGUE and h.is_cuda and type(first) is nn.Linear and first.bias is not None:
            # cuBLASLt's GELU_BIAS epilogue: bias + GELU(tanh) on the fp32 accumulator as the matmul
            # writes, so the hidden tensor is written once, not written, read and written again.
            # CUDA only: on a CPU `_addmm_activation` applies the exact GELU, not the tanh one.
            hidden = torch._addmm_activation(first.bias, h.flatten(0, -2), first.weight.t(), use_gelu=True)
            return self._mm(hidden.unflatten(0, h.shape[:-1]), last)
        pre = self._mm(h, first, bias=False)
        if self.fused_quant and isinstance(last, FP8Linear):
            q, scale = bias_gelu_fp8(pre, first.bias)
            return last.quantized_input(q, scale, pre.shape[:-1])
        return self._mm(bias_gelu(pre, first.bias, out=None), last)
