"""One pipeline stage: a range of the DiT's layers with their KV cache, in its own process.

Each chunk's denoising is a sequence of passes (chunk, step); a pass runs through every stage in order.
The first stage encodes the chunk (`prepare_chunk`, the one-process step's start), makes each pass's
input latent and runs the prologue (patchify, time embedding); every stage runs its blocks on its own
cache (`DiT.run_blocks`, the one forward's loop); the last runs the head, the sampler update
(`pass_update`) and, after a chunk's last pass, the decode (`finish_chunk`), handing frames to the
driver. A pass that is not a chunk's last goes round the ring to the first stage as the next pass's input.

Order of passes (what makes the output equal the one-process engine's):
- sequential: (c, 0) .. (c, steps-1); pass i+1 waits for pass i to come round. Chunk c+1 enters as
  soon as the first stage has committed chunk c, so with 1 step N chunks are in flight.
- stream-batch: a forward of the one-process batch is split into its `steps` slots (rows), each a
  pass of batch 1 on its cache row (`KVCache.rows`): (f, 0) is the new chunk, (f, r) is slot r-1 of
  forward f-1 come round. Stage k works on one slot while stage k+1 works on the slot before it; with
  N <= steps + 1 stages no stage waits. The commit after slot steps-1 couples the rows, as in one process.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import time
from typing import Any

import torch
from torch import Tensor

from streamer.config import ModelSettings, effective_strength, effective_window
from streamer.model.cache import KVCache
from streamer.model.condition import input_condition
from streamer.model.dit import DiT
from streamer.model.engine import EagerOps
from streamer.model.pipeline.graph import StageGraphs
from streamer.model.pipeline.wire import Flag, Header, Kind, Link, PassSpec
from streamer.model.sampling import pass_update, renoise, sdedit_noise, seeded_generator
from streamer.model.shortcut import sampler_step_size, takes_step_size
from streamer.model.step import (
    StepConfig,
    StreamState,
    finish_chunk,
    prepare_chunk,
    refuse_stream_batch,
    skips_refiner,
)
from streamer.model.vae import TAEHV

log = logging.getLogger(__name__)


class Stage:
    """Stage `rank` of `world`: its layers, cache and prompt K/V; the autoencoder on the first and last."""

    def __init__(
        self,
        m: ModelSettings,
        rank: int,
        world: int,
        layers: range,
        dit: DiT,
        vae: TAEHV | None,
        link: Link,
        outbox: Any,
        *,
        heartbeat_s: float,
        graphs: bool,
    ) -> None:
        self.m, self.rank, self.world, self.layers, self.dit, self.link, self.outbox = (
            m, rank, world, layers, dit, link, outbox,
        )  # fmt: skip
        self.first, self.last = rank == 0, rank == world - 1
        self.device, self.dtype = dit.patch_embedding.weight.device, dit.dtype
        self.stream = m.mode == "stream-batch"
        refuse_stream_batch(dit, m.mode, pipelined=True)  # an input-conditioned DiT streams sequentially here
        if self.first and (skipped := skips_refiner(dit, m.mode, pipelined=True)):
            log.warning("%s", skipped)
        self.heartbeat_s = heartbeat_s
        cfg = dit.cfg
        lh, lw = m.height // 8, m.width // 8
        self.grid = (1, lh // cfg.patch_size[1], lw // cfg.patch_size[2])
        window, sinks = effective_window(m)
        cache = KVCache(
            dataclasses.replace(cfg, num_layers=len(layers)),
            batch=m.steps if self.stream else 1,
            tokens_per_frame=cfg.tokens_per_frame(lh, lw),
            window=window,
            sinks=sinks,
            adaptive_sinks=m.adaptive_sinks,
            sink_threshold=m.sink_threshold,
            refresh_after=m.rope_refresh_after,
            dtype=self.dtype,
            device=self.device,
        )
        self.ops: EagerOps | None = None
        channels = 16
        if vae is not None:  # first stage: encode; last stage: decode
            layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
            vae.use_layout(layout)  # as the one-process engine (oneDNN is faster on NHWC)
            self.ops, channels = EagerOps(vae, m, self.dtype, layout), vae.latent_channels
        self.spec = PassSpec.of(m, cfg, self.dtype, channels)
        s_init = torch.tensor(effective_strength(m), device=self.device)
        self.state = StreamState(
            cache=cache,
            cross=dit.cross_kv(torch.zeros(1, 1, cfg.text_dim, device=self.device), layers=layers),
            noise=torch.empty(self.spec.noises, device=self.device, dtype=self.dtype),
            s_init=s_init,
            strength=s_init.clone(),
            fixed_ts=torch.tensor(m.timesteps, device=self.device) if m.timesteps else None,
            prev=torch.zeros(3, m.height, m.width, device=self.device, dtype=self.dtype),
            batch=None,
            output_ok=torch.ones((), dtype=torch.bool, device=self.device),
        )
        self.step_config = StepConfig(steps=m.steps, shift=m.shift, motion_aware=m.motion_aware)
        self.shortcut = takes_step_size(dit)
        self.busy = BusyClock(self.device)
        self.graphs: StageGraphs | None = None
        if graphs:
            self.inputs = [torch.empty(s, dtype=d, device=self.device) for s, d in self.spec.pass_layout()[:4]]
            self.graphs = StageGraphs(self._blocks_from_inputs, self.inputs)
        self.reset()

    # ---- state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """A new stream: cache, autoencoder memory, motion, noise generator and stream-batch slots."""
        self.state.reset()
        if self.ops is not None:
            self.ops.reset()
        self.gen = seeded_generator(self.m.seed, self.device)
        self.forwards = 0  # stream-batch forwards since the reset (first stage)
        self.slots: list[tuple[Tensor, Tensor]] = []  # each slot's (noises, timesteps) (first stage)

    def set_prompt(self, states: Tensor) -> None:
        """Rebuild this stage's layers' cross-attention K/V in place from text states [1, text_len, text_dim]."""
        self.dit.cross_kv(states, out=self.state.cross, layers=self.layers)

    # ---- a pass through this stage's layers ------------------------------------------------------------
    def _cache(self, row: int) -> KVCache:
        return self.state.cache.rows(row, row + 1) if self.stream else self.state.cache

    def _blocks(self, row: int, tokens: Tensor, h: Tensor, e: Tensor, e0: Tensor) -> tuple[Tensor, Tensor]:
        cache = self._cache(row)
        rope, _ = self.dit.attention_layout(self.grid, cache, device=self.device)
        return self.dit.run_blocks(
            self.layers, tokens, h, e, e0, rope, self.state.cross, cache=cache, offset=self.layers.start
        )

    def _blocks_from_inputs(self, row: int) -> tuple[Tensor, Tensor]:
        return self._blocks(row, *self.inputs)

    def run_pass(self, hdr: Header, tokens: Tensor, h: Tensor, e: Tensor, e0: Tensor) -> tuple[Tensor, Tensor]:
        if self.graphs is not None:
            tokens, h = self.graphs(hdr.row, [tokens, h, e, e0], steady=self.state.cache.history_full)
        else:
            tokens, h = self._blocks(hdr.row, tokens, h, e, e0)
        if hdr.flags & Flag.COMMIT:
            self.state.cache.commit(1)
        return tokens, h

    # ---- the first stage --------------------------------------------------------------------------------
    def serve_first(self, inbox: Any) -> None:
        """Take the driver's messages (chunk, reset, stop) in order; idle, send heartbeats down the line."""
        while True:
            try:
                msg = inbox.get(timeout=self.heartbeat_s)
            except queue.Empty:
                self.link.send_header(1, Header(Kind.HEARTBEAT))
                continue
            if msg[0] == "stop":
                self.link.send_header(1, Header(Kind.STOP))
                return
            if msg[0] == "stats":
                self._stats()
                continue
            if msg[0] == "reset":
                self._drain_ring()
                self.reset()
                self.link.send_header(1, Header(Kind.RESET, epoch=msg[1]))
                continue
            _, epoch, chunk, frames, s_init, states = msg
            if states is not None:
                states = torch.from_numpy(states).to(self.device)
                self.set_prompt(states)
                self.link.send_header(1, Header(Kind.PROMPT), [states])
            self.state.s_init.fill_(s_init)
            self._chunk(epoch, chunk, torch.from_numpy(frames).to(self.device))

    def _chunk(self, epoch: int, chunk: int, frames: Tensor) -> None:
        assert self.ops is not None
        with self.busy:
            self.state.noise.normal_(generator=self.gen)
            noise = self.state.noise.clone()  # slots keep it past this chunk; the buffer is redrawn next time
            z, ts, x_in = prepare_chunk(frames, self.state, self.ops, self.step_config)
        size = {"height": frames.shape[1], "width": frames.shape[2]}
        steps, strength = self.m.steps, self.state.strength
        if not self.stream:
            x = sdedit_noise(z, noise[0], strength)
            cond = input_condition(self.dit, z, x_in[None])
            for i in range(steps):
                x = x if i == 0 else self._ring()
                flags = Flag.COMMIT | Flag.FINAL | Flag.EMIT if i == steps - 1 else Flag(0)
                self._emit(Header(Kind.PASS, epoch, chunk, i, 0, flags, **size), x, noise, ts, cond)
            return
        # slot r of this forward: the new chunk (r = 0), else slot r-1 of the last forward come round; a
        # fresh stream's first forward fills them from its first chunk (prime_stream_batch's rule)
        slots = [(noise, ts)] + (self.slots[:-1] if self.forwards else [(noise, ts)] * (steps - 1))
        for r, (nz, t) in enumerate(slots):
            if r == 0:
                x = sdedit_noise(z, nz[0], strength)
            else:
                x = renoise(z, nz[r], t[r] / 1000) if self.forwards == 0 else self._ring()
            flags = Flag(0)
            if r == steps - 1:
                flags = Flag.COMMIT | Flag.FINAL | (Flag.EMIT if self.forwards + 1 >= steps else Flag(0))
            self._emit(Header(Kind.PASS, epoch, chunk, r, r, flags, **size), x, nz, t)
        self.slots = slots
        self.forwards += 1

    def _emit(self, hdr: Header, x: Tensor, noises: Tensor, ts: Tensor, cond: Tensor | None = None) -> None:
        """The prologue and this stage's blocks for a pass with input latent x (and, for an input-conditioned
        DiT, the chunk's clean latent `cond`); sent to stage 1."""
        with self.busy:
            x = x.to(self.spec.acc)  # the one input dtype of every pass (as `denoiser`)
            tokens, _ = self.dit.patchify(x, cond)
            t = ts[hdr.step].reshape(1, 1)
            e, e0 = self.dit.time_embed(t, sampler_step_size(t)) if self.shortcut else self.dit.time_embed(t)  # type: ignore[call-arg]
            h = self.dit.block_input(tokens, e, e0)
            tokens, h = self.run_pass(hdr, tokens, h, e, e0)
        self.link.send_header(1, hdr, [tokens, h, e, e0, x, noises, ts])

    def _ring(self) -> Tensor:
        """The next pass's input latent, come round from the last stage."""
        (x,) = self.link.recv(self.world - 1, [(self.spec.latent, self.spec.acc)])
        return x

    def _drain_ring(self) -> None:
        """Before a reset: the slots of the last stream-batch forward still come round; take and drop them."""
        for _ in range(self.m.steps - 1 if self.stream and self.forwards else 0):
            self._ring()

    # ---- the other stages -----------------------------------------------------------------------------
    def serve(self) -> None:
        """Take passes and control messages from the previous stage, in order, until STOP."""
        while True:
            hdr = self.link.recv_header(self.rank - 1)
            if hdr.kind == Kind.PASS:
                self._pass(hdr, self.link.recv(self.rank - 1, self.spec.pass_layout()))
                continue
            if hdr.kind == Kind.PROMPT:
                (states,) = self.link.recv(self.rank - 1, [(self.spec.text, torch.float32)])
                self.set_prompt(states)
                self._forward(hdr, [states])
            elif hdr.kind == Kind.RESET:
                self.reset()
                self._forward(hdr)
            elif hdr.kind == Kind.STATS:
                self._stats()
            else:  # HEARTBEAT, STOP
                self._forward(hdr)
            if hdr.kind == Kind.STOP:
                return

    def _stats(self) -> None:
        """Report busy seconds, wall seconds and peak memory since the last report, then pass it on."""
        busy, wall = self.busy.take()
        peak = torch.cuda.max_memory_allocated(self.device) / 1e9 if self.device.type == "cuda" else 0.0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.outbox.put(("stats", self.rank, busy, wall, peak))
        self._forward(Header(Kind.STATS))

    def _forward(self, hdr: Header, tensors: list[Tensor] | None = None) -> None:
        if not self.last:
            self.link.send_header(self.rank + 1, hdr, tensors or [])

    def _pass(self, hdr: Header, received: list[Tensor]) -> None:
        tokens, h, e, e0, x, noises, ts = received
        with self.busy:
            tokens, h = self.run_pass(hdr, tokens, h, e, e0)
        if not self.last:
            self.link.send_header(self.rank + 1, hdr, [tokens, h, e, e0, x, noises, ts])
            return
        with self.busy:
            v = self.dit.head_out(h, self.grid)
            # stream-batch: per-slot sigmas broadcast as one batch row ([1,1,1,1,1]), as the batched update does
            sched = ts.view(-1, 1, 1, 1, 1, 1) if self.stream else ts
            x0, x_next = pass_update(x, v, noises, sched, hdr.step)
        if not hdr.flags & Flag.FINAL:
            assert x_next is not None
            if self.stream:  # a stream-batch slot is stored in the engine's dtype between forwards
                x_next = x_next.to(self.dtype)
            self.link.send(0, [x_next.to(self.spec.acc)])
            return
        frames, ok = None, True
        if hdr.flags & Flag.EMIT:
            assert self.ops is not None
            with self.busy:
                out = finish_chunk(x0, self.state, self.ops, hdr.height, hdr.width)
            frames, ok = out.cpu().numpy(), bool(self.state.output_ok)
        self.outbox.put(("result", hdr.epoch, hdr.chunk, frames, ok))


class BusyClock:
    """Seconds a stage computes (vs waits), for the bubble fraction: host time on the CPU, CUDA events on
    a GPU (its work is asynchronous: the host returns long before the kernels end)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.busy = 0.0
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.since = time.perf_counter()

    def __enter__(self) -> None:
        if self.cuda:
            self.events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self.events[-1][0].record()
        else:
            self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.events[-1][1].record()
        else:
            self.busy += time.perf_counter() - self._t0

    def take(self) -> tuple[float, float]:
        """(busy, wall) seconds since the last call; starts the next period."""
        if self.cuda:
            torch.cuda.synchronize()
            self.busy += sum(a.elapsed_time(b) for a, b in self.events) / 1e3
            self.events = []
        now = time.perf_counter()
        out = (self.busy, now - self.since)
        self.busy, self.since = 0.0, now
        return out
