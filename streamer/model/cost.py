"""What one steady-state chunk costs: FLOPs and bytes moved, by part, from the DiT's shape and the chunk's.

A leaf (DiTConfig only). `streamer init --gpu` (gpu_plan.py) predicts speed from it, and the 24 GB card
projection in docs/benchmarks.md (streamer/bench/projection.py) times each part on a card's published
rates. Per DiT pass (the chunk takes `steps` of them; the rolling KV cache holds `window` latent frames):

- linear: 2 FLOP per weight per token, over the blocks' matmuls that run per chunk (self-attention
  q, k, v, o; cross-attention q, o; the FFN's two; cross-attention k, v run once per prompt) plus the
  patch embedding and the head: 2 T (3 d a + a d + d a + a d + 2 d f + patch terms);
- attention: QK^T and PV, 2 FLOP each per query, key and channel: 4 T (window T + text_len) a;
- weights: every per-chunk Linear weight read once per pass (2 bytes in bf16, 1 in fp8);
- KV: the self-attention reads K and V of the whole window, the cross-attention those of the prompt;
- fused elementwise (the fast path's kernels): three residual-add + LayerNorm + modulation passes
  (fp32 residual in and out, bf16 input and output: 12 bytes per element), q/k RMSNorm + RoPE + the
  cache write (q, k, v in and out: 12), the cross-attention's q norm (4), bias + GELU (4 per FFN unit);
- fp8 only: each matmul input quantized per token in one pass (bf16 in, e4m3 out: 3 bytes per element).

T = tokens per latent frame, d = dim, a = attention width (heads x head_dim), f = FFN width. The
autoencoder (TAEHV encode + decode of one chunk) is `VAE_FLOP_PER_PIXEL` per video-frame pixel (0.79
TFLOP at 480x832). W1 in all: 14.27 TFLOP, what the bench's FlopCounterMode counted on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamer.model.config import DiTConfig

# TAEHV (taew2_1 widths) encode + decode of one steady 4-frame chunk, per model-resolution pixel of one
# frame, counted with torch's FlopCounterMode (tests/model/test_cost.py recounts it): 0.79 TFLOP at
# 480x832 (the performance notes' hand count from its layer list said 0.74).
VAE_FLOP_PER_PIXEL = 1.96816e6


@dataclass(frozen=True)
class ChunkShape:
    """The sizes one chunk runs at: tokens per latent frame, KV window (latent frames, the chunk's own
    included), DiT passes, and the video frames of the chunk at the model's resolution."""

    tokens: int
    window: int
    steps: int
    pixels: int  # model width x height
    video_frames: int = 4  # the Wan autoencoder packs 4 frames into a latent (tiny's: 1)
    vae_flop_per_pixel: float = VAE_FLOP_PER_PIXEL

    @classmethod
    def at(cls, cfg: DiTConfig, width: int, height: int, steps: int, window: int, video_frames: int = 4) -> ChunkShape:
        """The shape of a chunk at a model resolution (the latent is 1/8 of it)."""
        return cls(cfg.tokens_per_frame(height // 8, width // 8), window, steps, width * height, video_frames)


@dataclass(frozen=True)
class ChunkCost:
    """FLOPs and bytes of one chunk, every pass included (the autoencoder's bytes are not modelled)."""

    linear_flop: float
    attention_flop: float
    vae_flop: float
    weight_bytes: float
    kv_bytes: float
    elementwise_bytes: float
    quantize_bytes: float  # fp8 only: per-token quantization of the matmul inputs

    @property
    def total_flop(self) -> float:
        return self.linear_flop + self.attention_flop + self.vae_flop

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes + self.elementwise_bytes + self.quantize_bytes


def per_chunk_weights(cfg: DiTConfig) -> int:
    """Weights of the Linears that run every pass (the blocks' minus cross k/v; patch embedding; head)."""
    d, a, f = cfg.dim, cfg.attn_dim, cfg.ffn_dim
    patch = math.prod(cfg.patch_size)
    block = 3 * d * a + a * d + d * a + a * d + 2 * d * f
    return cfg.num_layers * block + cfg.in_dim * patch * d + d * patch * cfg.out_dim


def chunk_cost(cfg: DiTConfig, shape: ChunkShape, *, fp8: bool = False) -> ChunkCost:
    """The cost of one steady-state chunk of `shape` through a DiT of `cfg` (module docstring)."""
    t, d, a, f, n = shape.tokens, cfg.dim, cfg.attn_dim, cfg.ffn_dim, cfg.num_layers
    passes = shape.steps
    keys = shape.window * t
    linear = 2.0 * t * per_chunk_weights(cfg) * passes
    attention = 4.0 * t * (keys + cfg.text_len) * a * n * passes
    weight_bytes = per_chunk_weights(cfg) * (1 if fp8 else 2) * passes
    kv_bytes = 2.0 * (keys + cfg.text_len) * a * 2 * n * passes  # K and V, bf16
    elementwise = t * (3 * 12 * d + 12 * a + 4 * a + 4 * f) * n * passes
    quantize = 3.0 * t * (d + a + d + a + d + f) * n * passes if fp8 else 0.0
    vae = shape.vae_flop_per_pixel * shape.pixels
    return ChunkCost(linear, attention, vae, weight_bytes, kv_bytes, elementwise, quantize)
