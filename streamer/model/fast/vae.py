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

from streamer.model.vae import TAEHV, MemBlock, TGrow, TPool


class _StaticStream:
    """One layer list (encoder or decoder) with a static memory buffer per MemBlock."""

    def __init__(self, layers: nn.Sequential, channels_last: bool = False) -> None:
        self.layers = layers
        self.memory: dict[int, Tensor] = {}
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self._nhwc = channels_last

    # TPool/TGrow regroup frames through the channel dim with reshapes that assume NCHW memory (on an
    # NHWC tensor they silently copy to NCHW, and every later conv pays cuDNN's layout conversions);
    # these two do the same regrouping as one NHWC -> NHWC copy.
    @staticmethod
    def _stack_frames(h: Tensor, s: int) -> Tensor:
        """[T, C, H, W] (NHWC memory) -> [T/s, s*C, H, W], frames of a group consecutive on channels."""
        t, c, hh, ww = h.shape
        if s == 1:
            return h
        raw = h.permute(0, 2, 3, 1).reshape(t // s, s, hh, ww, c).permute(0, 2, 3, 1, 4)
        return raw.reshape(t // s, hh, ww, s * c).permute(0, 3, 1, 2)

    @staticmethod
    def _split_frames(y: Tensor, s: int) -> Tensor:
        """[T, s*C, H, W] (NHWC memory) -> [T*s, C, H, W], channel groups becoming consecutive frames."""
        t, sc, hh, ww = y.shape
        if s == 1:
            return y
        raw = y.permute(0, 2, 3, 1).reshape(t, hh, ww, s, sc // s).permute(0, 3, 1, 2, 4)
        return raw.reshape(t * s, hh, ww, sc // s).permute(0, 3, 1, 2)

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
                h = layer.conv(self._stack_frames(h, layer.stride)) if self._nhwc else layer(h)
            elif isinstance(layer, TGrow):
                h = self._split_frames(layer.conv(h), layer.stride) if self._nhwc else layer(h)
            else:
                h = layer(h)
        return h


class ChunkCodec:
    """Encode a chunk of frames to one latent frame and decode a latent frame to a chunk of frames."""

    def __init__(self, vae: TAEHV, channels_last: bool = False) -> None:
        """channels_last: run the convolutions in NHWC (cuDNN's fast layout for bf16 on tensor cores);
        converts the autoencoder's weights in place (values unchanged, eager users unaffected)."""
        self.vae = vae
        self.frames_per_latent = vae.frames_per_latent
        if channels_last:
            vae.use_layout(torch.channels_last)
        self._enc = _StaticStream(vae.encoder, channels_last)
        self._dec = _StaticStream(vae.decoder, channels_last)

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
        return self._dec.run(latent[0].permute(1, 0, 2, 3)).clamp(0, 1).contiguous()
