"""A cheaper `KVCache.commit_device` for the fast path: same cache state, a fraction of the bytes moved.

The cache's own commit (streamer/model/cache.py) is written for clarity: it clones the staged frame,
converts whole key tensors to fp32 before averaging them for the adaptive-sink test, and re-rotates
every key of the frame (time band and the rest) through a concatenation. At W1 that is ~1.5 GB of
traffic per chunk, several ms of a ~45 ms step. Here: means are taken with an fp32 accumulator
straight from bf16 (no fp32 copy), and one kernel (kernels/kv_commit.py) copies the staged frame to
its slot (staging never aliases history) and rotates the keys' time band on the way. `tests/model/
test_fast_cache.py` checks the resulting cache state against `KVCache.commit_device`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.model.cache import KVCache
from streamer.model.rope import inv_freqs, rotate_time_band
from streamer_kernels.kv_commit import commit_frame


@torch.no_grad()
def fast_commit_device(cache: KVCache, frames: int = 1) -> None:
    """Drop-in for `cache.commit_device(frames)` (graph-capturable: no host reads of tensor values)."""
    for j in range(frames):
        _commit_frame(cache, j)
    cache.pos_start.add_(frames)


def _commit_frame(c: KVCache, j: int) -> None:
    kf = c._frames_view(c.k)  # [L, B, H, slots, T, D]
    src = c.history + j
    n_layers, li = kf.shape[0], c._layer_idx
    frame_pos = (c.pos_start + j).expand(n_layers)
    dest, new_pos, advance = c.slot_choice(frame_pos, lambda: _sink_similarity(c, kf[:, :, :, src], frame_pos))
    # a promoted frame takes the sink's position: its keys' time band is rotated there (any other frame
    # keeps its own, new_pos == frame_pos: angle 0)
    freqs = _pair_freqs(c.cfg.head_dim, c.cfg.rope_theta, kf.device)
    ang = (new_pos - frame_pos).to(torch.float64)[:, None] * freqs
    commit_frame(c.storage, src, dest, ang.cos().float(), ang.sin().float(), c.tokens)
    c.slot_pos[li, dest] = new_pos
    c.valid[li, dest] = c._all_true  # a device tensor: no host scalar copy inside a graph
    c.ring_ptr.add_(advance.long())
    c.n_committed.add_(1)


@functools.cache
def _pair_freqs(head_dim: int, theta: float, device: torch.device) -> Tensor:
    """Inverse frequency of every key pair [head_dim/2] (float64): the time band's, 0 for the rest
    (a commit moves frames in time only). Made once: the commit runs in every chunk."""
    t_freqs = inv_freqs(head_dim, theta, device)[0]
    return F.pad(t_freqs, (0, head_dim // 2 - t_freqs.shape[0]))


def _sink_similarity(c: KVCache, new_k: Tensor, frame_pos: Tensor) -> Tensor:
    """`KVCache.sink_similarity` without materialising fp32 copies of the keys."""
    acc = torch.promote_types(new_k.dtype, torch.float32)
    s = c.sinks
    mean_new = new_k.mean(dim=3, dtype=acc)  # [L, B, H, D]
    sink_means = c._frames_view(c.k)[:, :, :, :s].mean(dim=4, dtype=acc)  # [L, B, H, S, D]
    delta = c.slot_pos[:, :s] - frame_pos[:, None]
    n_layers, b, h, d = mean_new.shape
    aligned = rotate_time_band(
        mean_new.unsqueeze(3).expand(n_layers, b, h, s, d), delta.view(n_layers, 1, 1, s), c.cfg.head_dim,
        c.cfg.rope_theta,
    )  # fmt: skip
    a = aligned.permute(0, 3, 1, 2, 4).flatten(3)
    k = sink_means.permute(0, 3, 1, 2, 4).flatten(3)
    return F.cosine_similarity(a, k, dim=-1).mean(dim=-1)
