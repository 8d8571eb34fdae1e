"""Rolling self-attention KV cache with attention sinks, and the per-prompt cross-attention K/V.

Layout (one storage, allocated once): K and V are [layers, B, heads, slots*T, head_dim] with T tokens
per latent frame and slots = sinks | ring history | staging:
- sinks: the first `sinks` committed frames, kept forever (or replaced by dissimilar new content when
  adaptive sinks are on: a sink whose mean-pooled K has cosine similarity below the threshold with the
  new frame's is overwritten by it, StreamDiffusionV2's rule);
- ring: the last `window - sinks - chunk_frames` committed frames; the oldest rolls out, in place;
- staging: the current chunk. Every denoising pass of a chunk writes its K/V here (keys after RoPE)
  and attends to valid sinks + ring + itself; `commit()` copies the final pass into sinks/ring.
Attention is permutation-invariant once RoPE is applied, so slots never move: eviction is an
overwrite, and the attended keys are always the static prefix [0, (sinks+ring+chunk)*T).

Everything the forward and `commit_device` read or write lives on the device (positions, ring
pointers, validity, sink choice), so both can be captured in a CUDA graph. The host mirrors only the
counters that evolve deterministically (frames committed, next position) in `advance_host`, which
also rewinds the RoPE time positions on endless streams: after `refresh_after` frames the ring's
keys are re-rotated back by the same delta (relative positions stay exact; sinks keep 0..sinks-1).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.model.config import DiTConfig
from streamer.model.rope import rotate_time_band

# The prompt positions whose values `CrossAttnKV.u` holds through the o projection: a prompt of fewer
# distinct keys (up to 127 tokens and the padding) folds the projection into the attention's weights
# (kernels/prompt_projection.py), at a cost that grows with its length: 12 x 32 products per row for
# up to 31 tokens, 12 x 128 (the plain projection's 1536) at 127. A multiple of its KEY_STEP (32).
# 141 MB of U at W1 (30 layers x 12 heads x 128 x 1536, bf16).
FOLDED_KEYS = 128


class PromptKV(NamedTuple):
    """One layer's cross-attention K/V: k, v [B, heads, L, head_dim]; where each batch row's trailing
    run of repeated positions starts ([B] int32, `tail_start`; None: not known); the first FOLDED_KEYS
    values through the o projection, u [B, heads, FOLDED_KEYS, dim] (None: not made)."""

    k: Tensor
    v: Tensor
    starts: Tensor | None
    u: Tensor | None = None


@dataclass
class CrossAttnKV:
    """Cross-attention K/V of every layer for one prompt: k, v [layers, B, heads, text_len, head_dim].

    Made by `DiT.cross_kv` (None otherwise):
    - `starts` [layers, B] int32: where each row's trailing run of copies of one position starts. A
      zero-padded prompt's padding tokens all have one key and value, so the fast path's
      cross-attention reads each run once (kernels/prompt_attention.py);
    - `u` [layers, B, heads, FOLDED_KEYS, dim]: each head's first values through the o projection
      (`fold_values`; an FP8 model's dequantized). With a short prompt the fast path projects the
      attention's weights with it, not the attention's output (kernels/prompt_projection.py)."""

    k: Tensor
    v: Tensor
    starts: Tensor | None = None
    u: Tensor | None = None

    @classmethod
    def allocate(
        cls, cfg: DiTConfig, batch: int, dtype: torch.dtype, device: torch.device | str, *, fold: bool = False
    ) -> CrossAttnKV:
        """Zeros (every position a copy of the first, so the runs start at 0); `fold`: with `u`."""
        shape = (cfg.num_layers, batch, cfg.num_heads, cfg.text_len, cfg.head_dim)
        storage = torch.zeros((2, *shape), dtype=dtype, device=device)
        starts = torch.zeros(cfg.num_layers, batch, dtype=torch.int32, device=device)
        u_shape = (cfg.num_layers, batch, cfg.num_heads, FOLDED_KEYS, cfg.dim)
        u = torch.zeros(u_shape, dtype=dtype, device=device) if fold else None
        return cls(storage[0], storage[1], starts, u)

    def layer(self, i: int) -> PromptKV:
        """Layer i's k, v [B, heads, text_len, head_dim], the runs' starts [B] and the folded values."""
        starts = None if self.starts is None else self.starts[i]
        return PromptKV(self.k[i], self.v[i], starts, None if self.u is None else self.u[i])


def tail_start(k: Tensor, v: Tensor) -> Tensor:
    """k, v [..., B, H, L, D] (a prompt's cross-attention K/V) -> [..., B] int32: the first position of
    the trailing run whose key and value (every head) equal the last position's, bitwise. L - 1 when the
    last repeats nothing. On the device, no host sync: it may run while a graph replays elsewhere."""
    last_k, last_v = k[..., -1:, :], v[..., -1:, :]
    same = (k == last_k).all(-1).all(-2) & (v == last_v).all(-1).all(-2)  # [..., B, L]
    pos = torch.arange(k.shape[-2], device=k.device)
    last_distinct = torch.where(same, -1, pos).amax(-1)  # -1 when every position equals the last
    return (last_distinct + 1).to(torch.int32)


def fold_values(v: torch.Tensor, weight: torch.Tensor, fold: int) -> torch.Tensor:
    """`CrossAttnKV.u` (kernels/prompt_projection.py): v [B, H, L, D] (a prompt's values) and the o
    projection's weight [N, H*D] -> [B, H, fold, N], U[b, h, j] = v[b, h, j] @ weight[:, h*D:(h+1)*D]^T
    for the first `fold` keys (zeros past L). A matmul in v's dtype, as the projection it replaces (fp32
    accumulation on a GPU): it runs with every `cross_kv`, so on every chunk of a prompt blend."""
    B, H, L, D = v.shape
    head_w = weight.view(weight.shape[0], H, D).to(v.dtype)  # [N, H, D]; an FP8 layer's dequantized, rounded
    u = torch.einsum("bhjd,nhd->bhjn", v[:, :, :fold], head_w)
    return F.pad(u, (0, 0, 0, fold - u.shape[2])).contiguous()


class KVCache:
    """Preallocated rolling self-attention cache for the causal DiT (see module docstring)."""

    def __init__(
        self,
        cfg: DiTConfig,
        *,
        batch: int,
        tokens_per_frame: int,
        window: int,
        sinks: int = 0,
        chunk_frames: int = 1,
        max_chunk_frames: int | None = None,
        adaptive_sinks: bool = False,
        sink_threshold: float = 0.2,
        refresh_after: int = 50,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        """window: attended latent frames per query, sinks and the query's own chunk included.
        chunk_frames: frames per chunk in steady state; max_chunk_frames: the largest chunk (e.g. 2 for
        the first chunk of the Wan VAE's 1+4k layout). refresh_after: rewind positions once the next
        chunk would start at this frame (0 = never)."""
        max_chunk = max_chunk_frames or chunk_frames
        ring = window - sinks - chunk_frames
        if sinks < 0 or chunk_frames < 1 or max_chunk < chunk_frames:
            raise ValueError(
                f"bad cache shape: sinks={sinks}, chunk_frames={chunk_frames}, max_chunk_frames={max_chunk}"
            )
        if ring < 1:
            raise ValueError(
                f"window {window} leaves no history frames beside {sinks} sinks and a chunk of {chunk_frames}"
            )
        if refresh_after and refresh_after <= window:
            raise ValueError(f"refresh_after ({refresh_after}) must exceed the window ({window}), or be 0 to disable")
        self.cfg = cfg
        self.batch, self.tokens, self.window, self.sinks = batch, tokens_per_frame, window, sinks
        self.chunk_frames, self.max_chunk, self.ring = chunk_frames, max_chunk, ring
        self.adaptive, self.threshold, self.refresh_after = adaptive_sinks and sinks > 0, sink_threshold, refresh_after
        self.history = sinks + ring
        self.slots = self.history + max_chunk
        n_layers, heads, hd = cfg.num_layers, cfg.num_heads, cfg.head_dim
        self.storage = torch.zeros(
            (2, n_layers, batch, heads, self.slots * tokens_per_frame, hd), dtype=dtype, device=device
        )
        self.k, self.v = self.storage[0], self.storage[1]
        self.slot_pos = torch.full((n_layers, self.history), -1, dtype=torch.int64, device=device)
        self.valid = torch.zeros((n_layers, self.history), dtype=torch.bool, device=device)
        self.ring_ptr = torch.zeros(n_layers, dtype=torch.int64, device=device)
        self.n_committed = torch.zeros((), dtype=torch.int64, device=device)
        self.pos_start = torch.zeros((), dtype=torch.int64, device=device)
        self._layer_idx = torch.arange(n_layers, device=device)
        self._all_true = torch.ones(n_layers, dtype=torch.bool, device=device)  # no host scalar copies in a graph
        self.committed = 0  # host mirror of n_committed; sets history_full
        self.next_pos = 0  # host mirror of pos_start
        self.refreshes = 0

    # ---- properties ------------------------------------------------------------------------------
    @property
    def stage_offset(self) -> int:
        """Token index where the staging slots (the current chunk) start."""
        return self.history * self.tokens

    @property
    def committed(self) -> int:
        """Frames committed since the reset (host mirror of n_committed)."""
        return self._committed

    @committed.setter
    def committed(self, n: int) -> None:
        self._committed = n
        # True once every sink and ring slot holds a frame: attention then needs no mask. Kept as a flag
        # that stops changing, not read off the count: a torch.compile'd forward guards on every host value
        # it reads, and the count grows every chunk (each change a recompile, minutes at max-autotune).
        self.history_full = n >= self.history

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    # ---- used by the forward ---------------------------------------------------------------------
    def check_chunk(self, frames: int, tokens_per_frame: int) -> None:
        if tokens_per_frame != self.tokens:
            raise ValueError(f"chunk has {tokens_per_frame} tokens per frame, the cache was built for {self.tokens}")
        if not 1 <= frames <= self.max_chunk:
            raise ValueError(f"chunk of {frames} frames does not fit the cache's {self.max_chunk} staging slots")

    def positions(self, frames: int) -> Tensor:
        """[frames] RoPE time positions of the current chunk (device tensor, no host sync)."""
        return self.pos_start + torch.arange(frames, device=self.pos_start.device)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Write this chunk's k, v [B, H, n, D] into staging; return the keys, values and mask to attend.

        keys/values: [B, H, history*T + n, D] views of the cache; mask: [1, 1, 1, keys] bool or None once
        the history is full (host-known, so the caller can capture a mask-free graph for steady state).
        """
        off, n = self.stage_offset, k.shape[2]
        self.k[layer, :, :, off : off + n].copy_(k)
        self.v[layer, :, :, off : off + n].copy_(v)
        keys, values = self.k[layer, :, :, : off + n], self.v[layer, :, :, : off + n]
        if self.history_full:
            return keys, values, None
        hist = self.valid[layer].repeat_interleave(self.tokens)
        mask = torch.cat([hist, torch.ones(n, dtype=torch.bool, device=hist.device)])
        return keys, values, mask.view(1, 1, 1, -1)

    def rows(self, start: int, stop: int) -> KVCache:
        """A view of batch rows [start, stop) for a forward over part of the batch (a pipeline runs the
        stream batch one slot per pass: model/pipeline/). It shares every buffer; its host flags are
        those of now, so take a fresh view per pass, and commit on the whole cache (commit couples rows)."""
        view = copy.copy(self)
        view.k, view.v, view.batch = self.k[:, start:stop], self.v[:, start:stop], stop - start
        return view

    # ---- between chunks ----------------------------------------------------------------------------
    def commit(self, frames: int) -> None:
        """Keep the staged chunk (its last forward's K/V) as history. Device work + host bookkeeping."""
        self.commit_device(frames)
        self.advance_host(frames)

    @torch.no_grad()
    def commit_device(self, frames: int) -> None:
        """Device half of `commit` (graph-capturable: no host reads of tensor values)."""
        for j in range(frames):
            self._commit_frame(j)
        self.pos_start.add_(frames)

    def advance_host(self, frames: int) -> None:
        """Host half of `commit`: mirror the counters and rewind positions when due (eager, rare)."""
        self.committed += frames
        self.next_pos += frames
        if self.refresh_after and self.next_pos >= self.refresh_after:
            self.refresh_positions()

    @torch.no_grad()
    def refresh_positions(self) -> int:
        """Rewind RoPE time positions so the next chunk ends at window-1; returns the shift applied.

        Ring keys are re-rotated by the same shift, so every distance between non-sink frames is exact;
        sinks stay at 0..sinks-1 (they are a fixed reference, as in StreamDiffusionV2's rewind).
        """
        delta = self.next_pos - (self.window - self.chunk_frames)
        if delta <= 0:
            return 0
        a, b = self.sinks * self.tokens, self.history * self.tokens
        shift = torch.tensor(-delta, device=self.k.device)
        self.k[:, :, :, a:b] = rotate_time_band(self.k[:, :, :, a:b], shift, self.cfg.head_dim, self.cfg.rope_theta)
        self.slot_pos[:, self.sinks :] -= delta
        self.pos_start -= delta
        self.next_pos -= delta
        self.refreshes += 1
        return delta

    def reset(self) -> None:
        """Forget the stream (new scene/source); keeps the buffers."""
        self.storage.zero_()
        self.slot_pos.fill_(-1)
        self.valid.zero_()
        self.ring_ptr.zero_()
        self.n_committed.zero_()
        self.pos_start.zero_()
        self.committed = self.next_pos = self.refreshes = 0

    # ---- internals -------------------------------------------------------------------------------
    def _frames_view(self, t: Tensor) -> Tensor:
        n_layers, b, h, _, d = t.shape
        return t.view(n_layers, b, h, self.slots, self.tokens, d)

    def _commit_frame(self, j: int) -> None:
        kf, vf = self._frames_view(self.k), self._frames_view(self.v)
        src = self.history + j
        new_k, new_v = kf[:, :, :, src], vf[:, :, :, src]  # [L, B, H, T, D] views; dest never overlaps staging
        n_layers, li = kf.shape[0], self._layer_idx
        frame_pos = (self.pos_start + j).expand(n_layers)
        dest, new_pos, advance = self.slot_choice(frame_pos, lambda: self.sink_similarity(new_k, frame_pos))
        if self.adaptive:
            # A promoted frame takes the sink's position: re-rotate its keys there (identity when not replaced).
            delta = (new_pos - frame_pos).view(n_layers, 1, 1, 1)
            new_k = rotate_time_band(new_k, delta, self.cfg.head_dim, self.cfg.rope_theta)
        kf[li, :, :, dest] = new_k
        vf[li, :, :, dest] = new_v
        self.slot_pos[li, dest] = new_pos
        self.valid[li, dest] = self._all_true
        self.ring_ptr.add_(advance.long())
        self.n_committed.add_(1)

    def slot_choice(self, frame_pos: Tensor, similarity: Callable[[], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Where the frame at `frame_pos` [L] goes, all on the device (no host reads: graph-capturable).

        Returns (dest slot [L], its position [L], whether the ring pointer advances [L]): the next sink
        while sinks fill, else the ring; with adaptive sinks a dissimilar frame (`similarity()` [L, sinks]
        below the threshold) replaces its least similar sink and takes that sink's position."""
        n_layers, n = frame_pos.shape[0], self.n_committed
        sinks_full = n >= self.sinks
        ring_dest = self.sinks + self.ring_ptr % self.ring
        dest = torch.where(sinks_full, ring_dest, n.clamp(max=max(self.sinks - 1, 0)).expand(n_layers))
        new_pos, advance = frame_pos, sinks_full.expand(n_layers)
        if self.adaptive:
            min_sim, victim = similarity().min(dim=-1)
            replace = (n >= self.history) & (min_sim < self.threshold)
            dest = torch.where(replace, victim, dest)
            new_pos = torch.where(replace, self.slot_pos[self._layer_idx, victim], frame_pos)
            advance = advance & ~replace
        return dest, new_pos, advance

    def sink_similarity(self, new_k: Tensor, frame_pos: Tensor) -> Tensor:
        """Cosine similarity [L, sinks] of a frame's mean-pooled keys with each sink's, batch-averaged.

        new_k: [L, B, H, T, D] keys of the new frame at positions frame_pos [L]. The new frame's mean is
        rotated to each sink's position first, so the score compares content, not position.
        """
        acc = torch.promote_types(new_k.dtype, torch.float32)
        s = self.sinks
        mean_new = new_k.to(acc).mean(dim=3)  # [L, B, H, D]
        sink_means = self._frames_view(self.k)[:, :, :, :s].to(acc).mean(dim=4)  # [L, B, H, S, D]
        delta = self.slot_pos[:, :s] - frame_pos[:, None]  # [L, S]
        n_layers, b, h, d = mean_new.shape
        aligned = rotate_time_band(
            mean_new.unsqueeze(3).expand(n_layers, b, h, s, d),
            delta.view(n_layers, 1, 1, s),
            self.cfg.head_dim,
            self.cfg.rope_theta,
        )
        a = aligned.permute(0, 3, 1, 2, 4).flatten(3)  # [L, S, B, H*D]
        c = sink_means.permute(0, 3, 1, 2, 4).flatten(3)
        return F.cosine_similarity(a, c, dim=-1).mean(dim=-1)
