"""The causal Wan2.1 DiT: one configurable module, checkpoint-compatible with the open Wan2.1 models.

Parameter names and shapes are exactly those of the original Wan2.1 state dict (model.md §1), so the
Wan, Self-Forcing, CausVid, StreamDiffusionV2 and LongLive weights load with `strict=True`. Causal
variants add no parameters: only masking and the rolling KV cache (streamer/model/cache.py) differ.

Precision follows upstream: the residual stream, LayerNorms, time embedding, modulation and gating run
in fp32; the linear layers and attention run in the weights' dtype (see `DiT.to_inference_dtype`).
The forward has fixed shapes for a fixed chunk size, keeps positions and timesteps as tensors, and
never reads tensor values on the host, so the fast path can capture it as a CUDA graph.
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.attention import CrossAttention, SelfAttention, frame_mask, token_mask
from streamer.model.cache import CrossAttnKV, KVCache, PromptKV, fold_values, tail_start
from streamer.model.config import DiTConfig, preset
from streamer.model.fp8 import dense_weight, input_dtype, to_fp8
from streamer.model.ops import EAGER_OPS, DiTOps
from streamer.model.rope import rope_tables


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoid of t (0-1000 scale, not normalised): [N] -> [N, dim] float64, cos half then sin half."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def linear(seq: nn.Sequential, i: int) -> nn.Linear:
    """Layer i of a Sequential, typed as the Linear it is (Wan's names index Sequentials: `time_embedding.0`)."""
    return cast(nn.Linear, seq[i])


class DiTBlock(nn.Module):
    """Self-attention, cross-attention and FFN with per-frame AdaLN modulation (`modulation` [1, 6, dim]).

    Each sub-layer's residual add is fused with the LayerNorm that follows it (named ops, ops.py), so a
    block takes its first sub-layer's input `h` ready-made and hands the next one its own: the last add
    is normalised and modulated for the NEXT block (or the head) with the modulation it is given.
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.dim, self.eps = cfg.dim, cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps, cfg.head_dim)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps, cfg.head_dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, cfg.dim)
        )

    def forward(
        self,
        x: Tensor,
        h: Tensor,
        mod: Tensor,
        next_mod: tuple[Tensor, Tensor, torch.dtype],
        rope: tuple[Tensor, Tensor],
        text_kv: PromptKV,
        *,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        ops: DiTOps = EAGER_OPS,
    ) -> tuple[Tensor, Tensor]:
        """x: [B, F*T, dim] residual (fp32, or fp64 for an fp64 model); h: the self-attention's input
        (x normalised and modulated by this block's shift/scale); mod: [B, F, 6, dim] this block's
        modulation + time embedding; next_mod: (shift, scale [B, F, dim], dtype) for what follows;
        rope: cos/sin [F*T, D/2]; text_kv: k, v [B, H, L, D] and where their repeated tail starts.
        Returns (new residual, next input h)."""
        dtype = input_dtype(self.self_attn.q)
        _, _, gate1, shift2, scale2, gate2 = mod.unbind(2)
        y = ops.self_attention(self.self_attn, h, *rope, mask=mask, cache=cache, layer=layer)
        x, h = ops.residual_affine_norm(x, y, gate1, self.norm3, dtype)
        y = ops.cross_attention(self.cross_attn, h, *text_kv)
        x, h = ops.residual_modulated_norm(x, y, None, shift2, scale2, self.eps, dtype)
        return ops.residual_modulated_norm(x, ops.ffn(self.ffn, h), gate2, *next_mod[:2], self.eps, next_mod[2])


class Head(nn.Module):
    """Final modulated LayerNorm + Linear to patch pixels (`head.modulation` [1, 2, dim], `head.head`).

    The LayerNorm and modulation run fused with the last block's residual add (DiTBlock); `modulation`
    gives their shift and scale, and `forward` is the Linear."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.dim, self.eps = cfg.dim, cfg.eps
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def shift_scale(self, e: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
        """e: [B, F, dim] time embedding (acc dtype) -> (shift, scale [B, F, dim], the Linear's input dtype)."""
        shift, scale = (self.modulation.to(e.dtype).unsqueeze(0) + e.unsqueeze(2)).unbind(2)
        return shift, scale, self.head.weight.dtype

    def forward(self, h: Tensor) -> Tensor:
        """h: [B, F*T, dim] normalised and modulated -> [B, F*T, prod(patch)*out]."""
        return self.head(h)


class DiT(nn.Module):
    """Causal Wan2.1 DiT predicting the flow v = noise - x0 for each latent frame."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)

    # ---- precision -------------------------------------------------------------------------------
    def to_inference_dtype(self, dtype: torch.dtype) -> DiT:
        """Cast the matmul weights to `dtype`, keeping time embedding, modulation and head in fp32 (upstream).

        Each tensor is cast once, straight to its target: the kept ones never pass through `dtype`
        (a round trip through bf16 would round them)."""
        keep = torch.promote_types(dtype, torch.float32)
        kept = {id(t) for m in self.full_precision_modules() for t in (*m.parameters(), *m.buffers())}
        kept |= {id(block.modulation) for block in self.blocks}
        for t in (*self.parameters(), *self.buffers()):
            t.data = t.data.to(keep if id(t) in kept else dtype)
        return self

    def to_fp8(self) -> DiT:
        """Swap every Linear of the blocks for an FP8Linear (model.dtype = "fp8", streamer/model/fp8.py):
        e4m3 weights with per-channel scales; call after the weights are loaded, in the compute dtype."""
        to_fp8(self.blocks)
        return self

    def full_precision_modules(self) -> list[nn.Module]:
        """Modules whose weights stay fp32 at inference (the blocks' `modulation` too, and an attached pixel
        refiner: streamer/model/refiner.py)."""
        refiner = getattr(self, "refiner", None)
        return [self.time_embedding, self.time_projection, self.head, *([refiner] if refiner is not None else [])]

    @property
    def acc_dtype(self) -> torch.dtype:
        """Dtype of the residual stream and modulation math: fp32, or fp64 for an fp64 model."""
        return torch.promote_types(self.dtype, torch.float32)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    # ---- conditioning ----------------------------------------------------------------------------
    def embed_text(self, text: Tensor) -> Tensor:
        """text: [B, L, text_dim] encoder output (L <= text_len) -> [B, text_len, dim]; zero-padded like upstream."""
        b, n, d = text.shape
        if d != self.cfg.text_dim:
            raise ValueError(f"text embedding width {d} != model text_dim {self.cfg.text_dim}")
        if n > self.cfg.text_len:
            raise ValueError(f"text has {n} tokens, more than text_len {self.cfg.text_len}")
        text = F.pad(text.to(linear(self.text_embedding, 0).weight.dtype), (0, 0, 0, self.cfg.text_len - n))
        return self.text_embedding(text)

    @torch.no_grad()
    def cross_kv(
        self, text: Tensor, out: CrossAttnKV | None = None, layers: range | None = None, *, fold: bool | None = None
    ) -> CrossAttnKV:
        """Per-layer cross-attention K/V for a prompt: text [B, L, text_dim] -> CrossAttnKV.

        Written into `out` in place when given (static buffers for a captured graph), else allocated.
        `layers`: only these blocks, stored from index 0 (a pipeline stage holds its own layers' K/V).
        `fold`: whether an allocated one holds `u`, the values through the o projections, which only
        the fast path reads. Default: on a CUDA device (the fast path's), not elsewhere, where making it
        with every prompt change and every chunk of a blend would be work for nothing.
        """
        layers = range(self.cfg.num_layers) if layers is None else layers
        ctx = self.embed_text(text)
        if out is None:
            cfg = dataclasses.replace(self.cfg, num_layers=len(layers))
            fold = ctx.device.type == "cuda" if fold is None else fold
            out = CrossAttnKV.allocate(cfg, text.shape[0], ctx.dtype, ctx.device, fold=fold)
        for j, i in enumerate(layers):
            attn = self.layers[i].cross_attn
            k, v = attn.kv(ctx)
            out.k[j].copy_(k)
            out.v[j].copy_(v)
            if out.u is not None:
                out.u[j].copy_(fold_values(v, dense_weight(attn.o), out.u.shape[-2]))
        if out.starts is not None:  # where the zero padding's repeated K/V start (kernels/prompt_attention.py)
            out.starts.copy_(tail_start(out.k, out.v))
        return out

    def time_embed(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """t: [B, F] timesteps (0-1000) -> e [B, F, dim], e0 [B, F, 6, dim], both in acc_dtype (fp32)."""
        b, f = t.shape
        acc, w = self.acc_dtype, linear(self.time_embedding, 0).weight
        e = self.time_embedding(timestep_embedding(t.reshape(-1), self.cfg.freq_dim).to(w.dtype)).to(acc)
        return self.project_time(e, b, f)

    def project_time(self, e: Tensor, b: int, f: int) -> tuple[Tensor, Tensor]:
        """Time embedding e [B*F, dim] (acc dtype) -> e [B, F, dim], e0 [B, F, 6, dim] (the blocks' modulation)."""
        e0 = self.time_projection(e.to(linear(self.time_projection, 1).weight.dtype)).to(self.acc_dtype)
        return e.view(b, f, self.cfg.dim), e0.view(b, f, 6, self.cfg.dim)

    @property
    def layers(self) -> list[DiTBlock]:
        """The blocks, typed (an nn.ModuleList yields plain Modules to a type checker)."""
        return cast(list[DiTBlock], list(self.blocks))

    # ---- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: CrossAttnKV | Tensor,
        cache: KVCache | None = None,
        *,
        chunk_frames: int | None = None,
        window: int | None = None,
        sinks: int = 0,
        start: int = 0,
        ops: DiTOps = EAGER_OPS,
        cond: Tensor | None = None,
    ) -> Tensor:
        """Flow prediction for latent frames.

        x: [B, out_dim, F, H, W] noisy latents; t: [B, F] per-frame timesteps (or [B], shared by all frames);
        context: CrossAttnKV from `cross_kv`, or raw text [B, L, text_dim].
        cond: the clean input latents [B, out_dim, F, H, W] of an input-conditioned model
        (`cfg.conditions_on_input`; required there, refused elsewhere; see `patchify`).
        With `cache`: x is the current chunk; its time positions come from the cache, it attends to the
        cached frames plus itself, and its K/V are left in the cache's staging slots (call
        `cache.commit(F)` once the chunk is final). Without: the whole sequence in one pass, positions
        start..start+F-1, block-causal over `chunk_frames` (bidirectional when None), optionally with the
        cache's window/sink mask for reference computations.
        `ops` computes the fused spans (ops.py): the eager reference, or the fast path's fused kernels.
        Returns v: [B, out_dim, F, H, W] in acc_dtype (float32; float64 for a float64 model).
        """
        b = x.shape[0]
        tokens, grid = self.patchify(x, cond)
        if t.dim() == 1:
            t = t[:, None].expand(b, grid[0])
        if tuple(t.shape) != (b, grid[0]):
            raise ValueError(f"t must be [B, F] = [{b}, {grid[0]}], got {tuple(t.shape)}")
        if isinstance(context, Tensor):
            context = self.cross_kv(context)
        e, e0 = self.time_embed(t)
        if cache is not None and (chunk_frames is not None or window is not None or sinks or start):
            raise ValueError("chunk_frames/window/sinks/start describe the full-sequence pass; the cache sets them")
        rope, mask = self.attention_layout(grid, cache, chunk_frames, window, sinks, start, device=x.device)
        h = self.block_input(tokens, e, e0, ops)
        _, h = self.run_blocks(
            range(self.cfg.num_layers), tokens, h, e, e0, rope, context, mask=mask, cache=cache, ops=ops
        )
        return self.head_out(h, grid)

    # ---- the forward's pieces (a pipeline stage runs a slice of them: streamer/model/pipeline/) -----
    def patchify(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, tuple[int, int, int]]:
        """x [B, out_dim, F, H, W] (+ cond [B, in_dim - out_dim, F, H, W] for an input-conditioned model: the
        clean latent and any luma planes, streamer/model/condition.py; concatenated after x on the channel
        axis, Wan2.1 I2V's order) -> tokens [B, F*T, dim] (acc dtype) and the (frames, hp, wp) grid."""
        if self.cfg.conditions_on_input != (cond is not None):
            raise ValueError(
                f"an input-conditioned DiT (in_dim {self.cfg.in_dim} = 2 x out_dim) needs the clean input latent (cond)"
                if cond is None
                else f"cond given to a DiT that does not take it (in_dim {self.cfg.in_dim}, out_dim {self.cfg.out_dim})"
            )
        if cond is not None:
            want = (x.shape[0], self.cfg.in_dim - x.shape[1], *x.shape[2:])
            if tuple(cond.shape) != want:
                raise ValueError(f"cond {tuple(cond.shape)} must be {want} (the noisy latent is {tuple(x.shape)})")
            x = torch.cat([x.to(self.dtype), cond.to(self.dtype)], dim=1)
        (pt, ph, pw), (_, _, f_in, h_in, w_in) = self.cfg.patch_size, x.shape
        if f_in % pt or h_in % ph or w_in % pw:
            raise ValueError(f"latent shape {tuple(x.shape)} is not divisible by the patch {self.cfg.patch_size}")
        tokens = self.patch_embedding(x.to(self.dtype)).flatten(2).transpose(1, 2).to(self.acc_dtype)
        return tokens, (f_in // pt, h_in // ph, w_in // pw)

    def attention_layout(
        self,
        grid: tuple[int, int, int],
        cache: KVCache | None,
        chunk_frames: int | None = None,
        window: int | None = None,
        sinks: int = 0,
        start: int = 0,
        *,
        device: torch.device,
    ) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
        """RoPE tables and the mask for a chunk of `grid`: positions from the cache (and its mask, given
        per layer by the cache), or start..start+F-1 with a block-causal frame mask without one."""
        cfg, (frames, hp, wp) = self.cfg, grid
        mask = None
        if cache is not None:
            cache.check_chunk(frames, hp * wp)
            positions = cache.positions(frames)
        else:
            positions = torch.arange(start, start + frames, device=device)
            fm = frame_mask(frames, chunk_frames, window, sinks, device=device)
            mask = None if fm is None else token_mask(fm, hp * wp)
        return rope_tables(positions, hp, wp, cfg.head_dim, cfg.rope_theta, dtype=self.acc_dtype), mask

    def block_modulation(self, i: int, e: Tensor, e0: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
        """(shift, scale, input dtype) that normalise the input of block i, or of the head for i = num_layers."""
        if i == self.cfg.num_layers:
            return self.head.shift_scale(e)
        return self._input_norm(i, self._modulation(i, e0))

    def _modulation(self, i: int, e0: Tensor) -> Tensor:
        """Block i's modulation + time embedding [B, F, 6, dim] (acc dtype)."""
        return cast(DiTBlock, self.blocks[i]).modulation.to(self.acc_dtype).unsqueeze(0) + e0

    def _input_norm(self, i: int, mod: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
        """(shift, scale, input dtype) of block i's input norm, from its modulation `mod`."""
        return mod[:, :, 0], mod[:, :, 1], input_dtype(cast(DiTBlock, self.blocks[i]).self_attn.q)

    def block_input(self, tokens: Tensor, e: Tensor, e0: Tensor, ops: DiTOps = EAGER_OPS) -> Tensor:
        """The first block's input h: the embedded tokens normalised and modulated."""
        shift, scale, dtype = self.block_modulation(0, e, e0)
        return ops.modulated_norm(tokens, shift, scale, self.cfg.eps, dtype)

    def run_blocks(
        self,
        layers: range,
        tokens: Tensor,
        h: Tensor,
        e: Tensor,
        e0: Tensor,
        rope: tuple[Tensor, Tensor],
        context: CrossAttnKV,
        *,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        ops: DiTOps = EAGER_OPS,
        offset: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """Blocks `layers` (consecutive): (residual, input h) -> (residual, h normalised for what follows:
        the next block, or the head after the last). `context` and `cache` index layer i as i - offset
        (0 for the whole model; a pipeline stage holds only its own layers, from its first one)."""
        nxt: Tensor | None = None
        for i in layers:
            block = cast(DiTBlock, self.blocks[i])
            mod = self._modulation(i, e0) if nxt is None else nxt
            # block i + 1's modulation, made once: it normalises block i's output, then runs block i + 1
            nxt = self._modulation(i + 1, e0) if i + 1 < self.cfg.num_layers else None
            next_mod = self.head.shift_scale(e) if nxt is None else self._input_norm(i + 1, nxt)
            tokens, h = block(
                tokens, h, mod, next_mod, rope, context.layer(i - offset), mask=mask, cache=cache,
                layer=i - offset, ops=ops,
            )  # fmt: skip
        return tokens, h

    def head_out(self, h: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """The last block's h -> v [B, out_dim, F, H, W] in acc dtype."""
        return self.unpatchify(self.head(h).to(self.acc_dtype), grid)

    def unpatchify(self, out: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Head output [B, F*T, prod(patch) * out_dim] over a (frames, hp, wp) grid -> v [B, out_dim, F, H, W]."""
        cfg = self.cfg
        (frames, hp, wp), (pt, ph, pw) = grid, cfg.patch_size
        out = out.view(out.shape[0], frames, hp, wp, pt, ph, pw, cfg.out_dim).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(out.shape[0], cfg.out_dim, frames * pt, hp * ph, wp * pw)


def unwrap(model: object) -> object:
    """The module itself: `torch.compile(module)` returns an OptimizedModule that keeps it as `_orig_mod`
    (not a subclass, so isinstance and attributes must look through it)."""
    return getattr(model, "_orig_mod", model)


def conditions_on_input(model: object) -> bool:
    """Whether `model` (a DiT, or a torch.compile wrapper of one) takes the chunk's clean input latent as
    `cond` on every pass: the one rule the engine, the fast path, the pipeline stages and training read
    (DiTConfig.conditions_on_input)."""
    inner = unwrap(model)
    return isinstance(inner, DiT) and inner.cfg.conditions_on_input


def build(preset_name: str, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DiT:
    """A DiT of a named preset with random weights, on `device`, in inference precision `dtype`."""
    model = DiT(preset(preset_name)).to(device)
    return model.to_inference_dtype(dtype).eval()
