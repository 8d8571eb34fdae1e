"""TAEHV over one chunk at a time with its memory in static buffers (graph-capturable streaming).

`streamer.model.vae`'s StreamingEncoder/Decoder push frames one by one and keep each MemBlock's
previous input by rebinding a Python reference, which a CUDA graph cannot replay. `ChunkCodec` runs
a whole chunk through each layer at once (a MemBlock sees [memory, frames[:-1]] as the past of
frames, exactly the frame-by-frame recurrence) and copies each MemBlock's last input into a buffer
allocated once, so the same addresses are read and written on every replay. A chunk must be a whole
number of latents (4 frames temporal, 1 per-frame), which is how the engine feeds it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from streamer.model.fast.vae_fused import FusedStream
from streamer.model.fast.vae_steps import split_frames, stack_frames
from streamer.model.vae import TAEHV, MemBlock, TGrow, TPool


class _StaticStream:
    """One layer list (encoder or decoder) with a static memory buffer per MemBlock."""

    def __init__(self, layers: nn.Sequential, channels_last: bool = False) -> None:
        self.layers = layers
        self.memory: dict[int, Tensor] = {}
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self._nhwc = channels_last

    def reset(self) -> None:
        for buf in self.memory.values():
            buf.zero_()

    def run(self, x: Tensor) -> Tensor:
        """x: [T, C, H, W] (batch 1, frames on dim 0) -> [T', C', H', W']."""
        h = x.contiguous(memory_format=self.format)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, MemBlock):
                mem = self.memory.get(i)
                if mem is None or mem.shape != h.shape[1:] or mem.dtype != h.dtype or mem.device != h.device:
                    mem = self.memory[i] = torch.zeros_like(h[:1], memory_format=self.format)[0]
                past = torch.cat([mem[None], h[:-1]]) if h.shape[0] > 1 else mem[None]
                out = layer(h, past)
                mem.copy_(h[-1])
                h = out
            elif isinstance(layer, TPool):
                if h.shape[0] % layer.stride:
                    raise ValueError(f"chunk of {h.shape[0]} frames at a TPool of stride {layer.stride}")
                h = layer.conv(stack_frames(h, layer.stride, self._nhwc))
            elif isinstance(layer, TGrow):
                h = split_frames(layer.conv(h), layer.stride, self._nhwc)
            else:
                h = layer(h)
        return h


FUSIONS = ("none", "torch", "triton", "cudnn")


class ChunkCodec:
    """Encode a chunk of frames to one latent frame and decode a latent frame to a chunk of frames."""

    # The fast path's choice (FastPath builds its codec with the defaults); measured by
    # `python -m streamer.bench.vae_speed` (H100, 2026-12-06, W1's whole fast-path chunk: none 41.19 ms,
    # torch 40.96, triton 40.79, cudnn 40.26; docs/benchmarks.md). On a CPU "cudnn" runs the same structure unfused.
    FUSION = "cudnn"

    def __init__(self, vae: TAEHV, channels_last: bool = False, fusion: str | None = None) -> None:
        """channels_last: run the convolutions in NHWC (cuDNN's fast layout for bf16 on tensor cores);
        converts the autoencoder's weights in place (values unchanged, eager users unaffected).
        fusion: None = `FUSION`; "none" runs the layers as they are; "torch", "triton" and "cudnn" run
        `FusedStream` (vae_fused.py, which says how they differ), whose weights are derived here from
        the autoencoder's: build the codec after the weights are final."""
        fusion = self.FUSION if fusion is None else fusion
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.vae = vae
        self.frames_per_latent = vae.frames_per_latent
        if channels_last:
            vae.use_layout(torch.channels_last)
        self._enc: _StaticStream | FusedStream
        self._dec: _StaticStream | FusedStream
        if fusion == "none":
            self._enc = _StaticStream(vae.encoder, channels_last)
            self._dec = _StaticStream(vae.decoder, channels_last)
        else:
            self._enc = FusedStream(vae.encoder, channels_last, fusion)
            self._dec = FusedStream(vae.decoder, channels_last, fusion)

    def reset(self) -> None:
        """A new stream: zero every memory buffer in place (the captured graph keeps its addresses)."""
        self._enc.reset()
        self._dec.reset()

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """frames: [frames_per_latent, 3, H, W] in [0, 1] -> latent [1, C, 1, H/8, W/8]."""
        if frames.shape[0] != self.frames_per_latent:
            raise ValueError(f"a chunk is {self.frames_per_latent} frames, got {frames.shape[0]}")
        return self._enc.run(frames).permute(1, 0, 2, 3).unsqueeze(0).contiguous()

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """latent: [1, C, 1, h, w] -> frames [frames_per_latent, 3, 8h, 8w] clamped to [0, 1]."""
        return self._dec.run(latent[0].permute(1, 0, 2, 3)).clamp_(0, 1).contiguous()  # a fresh conv output
