"""The GPU fast path: the engine's chunk step as ONE CUDA graph over static buffers.

It runs the one chunk step (streamer/model/step.py) on the engine's own `StreamState`, with the step's
ops swapped for fast ones: uint8 -> model size in a fused kernel, TAEHV over static memory (vae.py),
the DiT forward on fused kernels (ops.py: `FusedOps`), the lean cache commit (cache.py), model size
-> uint8 in a fused kernel. The host launches one graph per chunk and reads nothing back. What stays
outside the graph, on the same stream and never syncing: drawing the chunk's noise from the engine's
seeded generator (so eager and fast paths see the same numbers), the cache's host counters (and its
rare RoPE rewind), and prompt changes, which the engine writes in place into the cross-attention
K/V buffers the graph reads.

The graph covers the steady state (KV history full, autoencoder primed, and in stream-batch mode the
slots full, so the step always returns a chunk). The first chunks of a stream, while the cache and the
slots fill, run the same fused step eagerly (they take host branches: the cache's mask, the slots'
priming, no output while they fill); the first steady chunk after a (re)start runs eagerly on a side
stream as the capture's warm-up, the next is captured. A reset (new stream) fills eagerly again and
then replays the graph it kept. A new frame size recaptures; a new engine (steps, mode, resolution,
preset) builds a new FastPath.

Stream-batch mode captures the same way: one DiT forward of batch `steps` over the slots kept in the
engine's `StreamBatchState` buffers. Its `filled` count is a host value the step advances in Python,
which a replay does not run: `FastPath` advances it beside the replay (and undoes the capture's own
advance), so it still counts pushes.
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

    # Run the autoencoder's convolutions in NHWC (see ChunkCodec). Chosen by measurement (docs/benchmarks.md,
    # "third session"): with the cudnn fusion, NCHW made cuDNN transpose every conv's input and output
    # (3.7 ms of W1's chunk), and NHWC takes the whole chunk from 39.9 to 38.6 ms (W1), 25.0 to 24.0 ms (W2).
    CHANNELS_LAST = True

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
        """True when the next chunk takes the captured path: cache history full, stream primed, and in
        stream-batch mode every slot but the first filled (the step then returns a chunk, no priming)."""
        e, batch = self.engine, self.engine.state.batch
        filled = batch is None or batch.filled >= batch.steps - 1
        return e.cache.history_full and e.state.have_prev and self._to_trim == 0 and filled

    def describe(self) -> str:
        state = "graph captured" if self._graph is not None else "graph not captured yet"
        return f"fast (fused Triton kernels + CUDA graph; {state}, {self.replays} replays)"

    # ---- the step ------------------------------------------------------------------------------------
    def _body(self, frames: Tensor) -> Tensor | None:
        """The chunk step with the fast ops (capturable once `steady`). frames: [T, H, W, 3] uint8.
        None while a stream batch fills its slots (never once `steady`)."""
        e = self.engine
        return chunk_step(frames, e.dit, e.state, self.ops, e.step_config)

    @torch.no_grad()
    def step(self, frames: Tensor) -> Tensor | None:
        """frames: [frames_per_latent, H, W, 3] uint8 on the device -> [T, H, W, 3] uint8 (a fresh tensor),
        or None while a stream batch fills its slots."""
        e = self.engine
        if self._frame_shape != tuple(frames.shape):
            self._frame_shape = tuple(frames.shape)
            self._in = torch.empty_like(frames)
            self.invalidate()
        assert self._in is not None
        self._in.copy_(frames)
        e.state.noise.normal_(generator=e.gen)
        out: Tensor | None
        if self.use_graph and self.steady:
            if self._graph is None and self._warmed:
                self._capture()
            if self._graph is not None:
                out = self._replay()
            else:
                out = self._warm_up()
                self._warmed = True
        else:
            out = self._body(self._in)
        e.cache.advance_host(1)
        e.chunks_done += 1
        if out is None:  # the stream batch is still filling its slots
            return None
        if self._to_trim:
            out, self._to_trim = out[self._to_trim :], 0
        return out.clone()

    def _replay(self) -> Tensor:
        """The captured step on this chunk: the graph's device work, then the host counter the step
        advances in Python (the stream batch's `filled`), which a replay does not run."""
        assert self._graph is not None and self._out is not None
        self._graph.replay()
        self.replays += 1
        if self.engine.state.batch is not None:
            self.engine.state.batch.filled += 1
        return self._out

    def _warm_up(self) -> Tensor | None:
        """The capture's warm-up: the same step eagerly on a side stream (lazy library init, autotuning)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            assert self._in is not None
            out = self._body(self._in)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _record(self, frames: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor | None]:
        """Capture the step on `frames` (a static buffer) as one CUDA graph: (graph, its output buffer)."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: the text encoder's weights may be arriving on the GPU from their loading thread
        # meanwhile (builder.py); the default ("global") mode would fail that thread's allocations and copies.
        # This thread itself still makes no unsafe call during the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._body(frames)
        return graph, out

    def _capture(self) -> None:
        t0 = time.perf_counter()
        assert self._in is not None
        batch = self.engine.state.batch
        filled = batch.filled if batch is not None else 0
        graph, out = self._record(self._in)
        if batch is not None:  # capturing ran the step's Python, not its device work: the replay counts the push
            batch.filled = filled
        if out is None:
            raise RuntimeError("fast path: the captured step returned no chunk (stream batch not full)")
        self._graph, self._out = graph, out
        self.capture_s = time.perf_counter() - t0
        log.info("fast path: captured the chunk step as one CUDA graph in %.2f s", self.capture_s)

    def prepare(self, height: int, width: int) -> None:
        """Warm up and capture at start (frames of height x width), then reset the stream."""
        e = self.engine
        grey = torch.full((e.frames_per_latent, height, width, 3), 64, dtype=torch.uint8, device=e.device)
        t0 = time.perf_counter()
        while self._graph is None:
            self.step(grey)
            if e.chunks_done > e.cache.history + e.batch + 8:
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
