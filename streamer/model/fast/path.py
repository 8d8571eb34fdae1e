"""The GPU fast path: the engine's chunk step as ONE CUDA graph over static buffers.

It runs the one chunk step (streamer/model/step.py) on the engine's own `StreamState`, with the step's
ops swapped for fast ones: uint8 -> model size in a fused kernel, TAEHV over static memory (vae.py),
the DiT forward on fused kernels (ops.py: `FusedOps`), the lean cache commit (cache.py), model size
-> uint8 in a fused kernel. The host launches one graph per chunk and reads nothing back. What stays
outside the graph, on the same stream and never syncing: drawing the chunk's noise from the engine's
seeded generator (so eager and fast paths see the same numbers), the cache's host counters (and its
rare RoPE rewind), and prompt changes, which the engine writes in place into the cross-attention
K/V buffers the graph reads.

The graph covers the steady state (KV history full, autoencoder primed). The first chunks of a
stream, while the cache fills, run the same fused step eagerly; the first steady chunk after a
(re)start runs eagerly on a side stream as the capture's warm-up, the next is captured. A new frame
size recaptures; a new engine (steps, resolution, preset) builds a new FastPath.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.model.cache import KVCache
from streamer.model.fast.cache import fast_commit_device
from streamer.model.fast.ops import FusedOps
from streamer.model.fast.vae import ChunkCodec
from streamer.model.step import chunk_step
from streamer_kernels.attention import AttentionPicker
from streamer_kernels.frame_convert import frame_to_model, model_to_frame

if TYPE_CHECKING:
    from streamer.model.engine import ModelTransform

log = logging.getLogger(__name__)


def fast_path_unavailable(engine: ModelTransform) -> str | None:
    """Why the fast path cannot run this engine (None when it can)."""
    if engine.device.type != "cuda":
        return f"needs a CUDA device (engine on {engine.device})"
    if engine.batch != 1:
        return "stream-batch mode is not captured yet (sequential mode only)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


class FastOps:
    """The chunk step's ops on the GPU: fused frame conversion, static-memory TAEHV, fused DiT, lean commit."""

    def __init__(self, engine: ModelTransform, codec: ChunkCodec, attention: AttentionPicker) -> None:
        m = engine.settings
        self.size, self.dtype = (m.height, m.width), engine.dtype
        self.codec = codec
        self.dit_ops = FusedOps(engine.dit, attention)

    def to_model(self, frames: Tensor) -> Tensor:
        (height, width), (h, w) = self.size, frames.shape[1:3]
        if h < height or w < width or (h, w) == (height, width):
            return frame_to_model(frames, height, width, dtype=self.dtype)
        # downscaling: antialiased like the eager engine (the kernel's plain bilinear would alias)
        x = frames.permute(0, 3, 1, 2).to(self.dtype) / 255
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)

    def encode(self, x: Tensor) -> Tensor:
        return self.codec.encode(x)

    def commit(self, cache: KVCache) -> None:
        fast_commit_device(cache, 1)  # the host counters advance outside the graph (FastPath.step)

    def decode(self, latent: Tensor) -> Tensor:
        return self.codec.decode(latent.to(self.dtype))

    def to_frames(self, out: Tensor, height: int, width: int) -> Tensor:
        return model_to_frame(out, height, width, fmt="rgb")


class FastPath:
    """Fused kernels + one CUDA graph per chunk, driving an engine's own state (cache, noise, prompt)."""

    # Run the autoencoder's convolutions in NHWC (see ChunkCodec); chosen by measurement, docs/benchmarks.md.
    CHANNELS_LAST = False

    def __init__(self, engine: ModelTransform, *, use_graph: bool = True) -> None:
        reason = fast_path_unavailable(engine) if use_graph else None
        if reason is not None:
            raise RuntimeError(f"fast path unavailable: {reason}")
        self.engine = engine
        self.use_graph = use_graph
        self.attention = AttentionPicker()
        self.codec = ChunkCodec(engine.vae, channels_last=self.CHANNELS_LAST and engine.device.type == "cuda")
        self.ops = FastOps(engine, self.codec, self.attention)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._frame_shape: tuple[int, ...] | None = None
        self._in: Tensor | None = None
        self._out: Tensor | None = None
        self.warmup_s = self.capture_s = 0.0
        self.replays = 0
        self.reset()

    # ---- state -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """A new stream: autoencoder memory zeroed in place; the captured graph stays valid."""
        self.codec.reset()
        self._to_trim = self.codec.vae.frames_to_trim
        self._warmed = False

    def invalidate(self) -> None:
        """Drop the captured graph (the next steady chunk recaptures)."""
        self._graph = None
        self._warmed = False

    @property
    def steady(self) -> bool:
        """True when a chunk takes the captured path: cache history full, stream primed."""
        e = self.engine
        return e.cache.history_full and e.state.have_prev and self._to_trim == 0

    def describe(self) -> str:
        state = "graph captured" if self._graph is not None else "graph not captured yet"
        return f"fast (fused Triton kernels + CUDA graph; {state}, {self.replays} replays)"

    # ---- the step ------------------------------------------------------------------------------------
    def _body(self, frames: Tensor) -> Tensor:
        """The chunk step with the fast ops (capturable once `steady`). frames: [T, H, W, 3] uint8."""
        e = self.engine
        out = chunk_step(frames, e.dit, e.state, self.ops, e.step_config)
        assert out is not None, "the fast path runs sequential mode only"
        return out

    @torch.no_grad()
    def step(self, frames: Tensor) -> Tensor:
        """frames: [frames_per_latent, H, W, 3] uint8 on the device -> [T, H, W, 3] uint8 (a fresh tensor)."""
        e = self.engine
        if self._frame_shape != tuple(frames.shape):
            self._frame_shape = tuple(frames.shape)
            self._in = torch.empty_like(frames)
            self.invalidate()
        assert self._in is not None
        self._in.copy_(frames)
        e.state.noise.normal_(generator=e.gen)
        if self.use_graph and self.steady:
            if self._graph is None and self._warmed:
                self._capture()
            if self._graph is not None:
                self._graph.replay()
                self.replays += 1
                out = self._out
            else:
                out = self._side_stream_body()
                self._warmed = True
        else:
            out = self._body(self._in)
        assert out is not None
        e.cache.advance_host(1)
        e.chunks_done += 1
        if self._to_trim:
            out, self._to_trim = out[self._to_trim :], 0
        return out.clone()

    def _side_stream_body(self) -> Tensor:
        """The capture's warm-up: the same step eagerly on a side stream (lazy library init, autotuning)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            assert self._in is not None
            out = self._body(self._in)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self) -> None:
        t0 = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        assert self._in is not None
        with torch.cuda.graph(graph):
            self._out = self._body(self._in)
        self._graph = graph
        self.capture_s = time.perf_counter() - t0
        log.info("fast path: captured the chunk step as one CUDA graph in %.2f s", self.capture_s)

    def prepare(self, height: int, width: int) -> None:
        """Warm up and capture at start (frames of height x width), then reset the stream."""
        e = self.engine
        grey = torch.full((e.frames_per_latent, height, width, 3), 64, dtype=torch.uint8, device=e.device)
        t0 = time.perf_counter()
        while self._graph is None:
            self.step(grey)
            if e.chunks_done > e.cache.history + 8:
                raise RuntimeError("fast path: the chunk step never reached a capturable steady state")
        torch.cuda.synchronize()
        self.warmup_s = time.perf_counter() - t0 - self.capture_s
        e.reset()
        msg = f"fast path ready: warm-up {self.warmup_s:.2f} s, graph capture {self.capture_s:.2f} s"
        log.info(msg)
        print(msg, flush=True)


def enable_fast_path(engine: ModelTransform, frame_height: int, frame_width: int) -> FastPath | None:
    """Build, warm up and capture the fast path for an engine when it can run; None (logged) otherwise."""
    reason = fast_path_unavailable(engine)
    if reason is not None:
        log.info("fast path off: %s", reason)
        return None
    fast = FastPath(engine)
    fast.prepare(frame_height, frame_width)
    return fast
