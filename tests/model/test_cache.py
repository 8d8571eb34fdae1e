"""Rolling KV cache: eviction with sinks == windowed full forward, preallocation, RoPE rewind, adaptive sinks."""

from __future__ import annotations

import pytest
import torch

from streamer.model.cache import KVCache
from streamer.model.config import preset
from streamer.model.dit import DiT, build
from streamer.model.rope import apply_rope, rope_tables

F64 = torch.float64
TINY = preset("tiny")


@pytest.fixture(scope="module")
def model() -> DiT:
    torch.manual_seed(4)
    return build("tiny", dtype=F64)


def _stream(model: DiT, cache: KVCache, x: torch.Tensor, t: torch.Tensor, ctx, chunk: int) -> torch.Tensor:
    outs = []
    for s in range(0, x.shape[2], chunk):
        outs.append(model(x[:, :, s : s + chunk], t[:, s : s + chunk], ctx, cache))
        cache.commit(chunk)
    return torch.cat(outs, dim=2)


def _inputs(frames: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return (
        torch.randn(batch, 16, frames, 4, 4, dtype=F64, generator=g),
        torch.rand(batch, frames, dtype=F64, generator=g) * 1000,
        torch.randn(batch, 6, 384, dtype=F64, generator=g),
    )


@pytest.mark.parametrize(("window", "sinks", "chunk"), [(4, 1, 1), (6, 3, 1), (6, 0, 2), (7, 2, 2)])
@torch.no_grad()
def test_rolling_eviction_keeps_sinks_and_matches_windowed_full_forward(
    model: DiT, window: int, sinks: int, chunk: int
) -> None:
    frames = 10
    x, t, text = _inputs(frames, batch=2)
    ctx = model.cross_kv(text)
    cache = KVCache(TINY, batch=2, tokens_per_frame=4, window=window, sinks=sinks, chunk_frames=chunk, dtype=F64)
    streamed = _stream(model, cache, x, t, ctx, chunk)
    full = model(x, t, ctx, chunk_frames=chunk, window=window, sinks=sinks)
    torch.testing.assert_close(streamed, full, rtol=0, atol=1e-11)
    # the window really evicted something: the unwindowed causal pass differs
    assert (model(x, t, ctx, chunk_frames=chunk) - full).abs().max() > 1e-4
    ring = window - sinks - chunk
    held = sorted(cache.slot_pos[0].tolist())
    assert held == list(range(sinks)) + list(range(frames - ring, frames))
    assert bool(cache.valid.all())


@torch.no_grad()
def test_cache_is_preallocated_once(model: DiT) -> None:
    x, t, text = _inputs(12)
    ctx = model.cross_kv(text)
    cache = KVCache(TINY, batch=1, tokens_per_frame=4, window=5, sinks=2, chunk_frames=1, adaptive_sinks=True,
                    refresh_after=8, dtype=F64)  # fmt: skip
    ptrs = (cache.storage.data_ptr(), cache.k.data_ptr(), cache.v.data_ptr(), cache.slot_pos.data_ptr())
    shape = cache.storage.shape
    assert cache.nbytes == 2 * TINY.num_layers * TINY.num_heads * 5 * 4 * TINY.head_dim * 8
    for s in range(12):
        model(x[:, :, s : s + 1], t[:, s : s + 1], ctx, cache)
        cache.commit(1)
        assert (cache.storage.data_ptr(), cache.k.data_ptr(), cache.v.data_ptr(), cache.slot_pos.data_ptr()) == ptrs
        assert cache.storage.shape == shape
    assert cache.refreshes >= 1  # the rewind also worked in place


@torch.no_grad()
def test_rope_rewind_keeps_positions_bounded_and_outputs_unchanged(model: DiT) -> None:
    """Without sinks a rewind shifts every cached frame equally, so attention is exactly unchanged."""
    frames = 40
    x, t, text = _inputs(frames)
    ctx = model.cross_kv(text)
    plain = KVCache(TINY, batch=1, tokens_per_frame=4, window=4, chunk_frames=1, refresh_after=0, dtype=F64)
    bounded = KVCache(TINY, batch=1, tokens_per_frame=4, window=4, chunk_frames=1, refresh_after=9, dtype=F64)
    outs_plain, outs_bounded, max_pos = [], [], 0
    for s in range(frames):
        outs_plain.append(model(x[:, :, s : s + 1], t[:, s : s + 1], ctx, plain))
        outs_bounded.append(model(x[:, :, s : s + 1], t[:, s : s + 1], ctx, bounded))
        max_pos = max(max_pos, int(bounded.positions(1).max()))
        plain.commit(1)
        bounded.commit(1)
    assert plain.next_pos == frames and int(plain.pos_start) == frames
    assert max_pos < 9 and bounded.refreshes >= 5
    assert bounded.next_pos == int(bounded.pos_start) and int(bounded.slot_pos.max()) < 9
    torch.testing.assert_close(torch.cat(outs_bounded, 2), torch.cat(outs_plain, 2), rtol=0, atol=1e-10)


def test_rewind_resets_to_window_minus_one() -> None:
    cache = KVCache(TINY, batch=1, tokens_per_frame=1, window=6, sinks=3, chunk_frames=1, refresh_after=50)
    cache.next_pos = 50
    cache.pos_start.fill_(50)
    assert cache.refresh_positions() == 45
    assert int(cache.positions(1)[0]) == 5  # StreamDiffusionV2 rewinds to frame window-1


def _stage(cache: KVCache, raw: torch.Tensor, pos: int) -> None:
    """Write one frame's keys (raw content rotated to `pos`) into staging of every layer, then commit."""
    cos, sin = rope_tables(torch.tensor([pos]), 2, 2, TINY.head_dim, dtype=F64)
    k = apply_rope(raw, cos, sin).transpose(1, 2)  # [B, H, T, D]
    for layer in range(TINY.num_layers):
        cache.update(layer, k, k)
    cache.commit(1)


def test_adaptive_sink_replaced_by_dissimilar_content_only() -> None:
    g = torch.Generator().manual_seed(6)
    base = torch.randn(1, 4, TINY.num_heads, TINY.head_dim, dtype=F64, generator=g) + 0.5
    kw = dict(batch=1, tokens_per_frame=4, window=5, sinks=2, chunk_frames=1, adaptive_sinks=True, dtype=F64)
    cache = KVCache(TINY, **kw)
    for pos in range(6):  # similar content (same keys, new positions): plain rolling, sinks kept
        _stage(cache, base + 0.01 * torch.randn(base.shape, dtype=F64, generator=g), pos)
    assert sorted(cache.slot_pos[0].tolist()) == [0, 1, 4, 5]
    assert cache.ring_ptr.tolist() == [4] * TINY.num_layers
    sink_keys = cache.k[:, :, :, : 2 * 4].clone()

    _stage(cache, -base, 6)  # opposite content: cosine ~ -1 < 0.2, replaces a sink
    assert cache.ring_ptr.tolist() == [4] * TINY.num_layers  # the ring did not advance
    assert sorted(cache.slot_pos[0].tolist()) == [0, 1, 4, 5]  # the promoted frame took the sink's position
    changed = [(cache.k[0, :, :, s * 4 : (s + 1) * 4] - sink_keys[0, :, :, s * 4 : (s + 1) * 4]).abs().max() > 0.1
               for s in range(2)]  # fmt: skip
    assert sum(bool(c) for c in changed) == 1
    victim = changed.index(True)
    # its keys are the new content rotated to that sink's position
    cos, sin = rope_tables(torch.tensor([victim]), 2, 2, TINY.head_dim, dtype=F64)
    want = apply_rope(-base, cos, sin).transpose(1, 2)
    torch.testing.assert_close(cache.k[0, :, :, victim * 4 : (victim + 1) * 4], want, rtol=0, atol=1e-10)


def test_adaptive_threshold_is_configurable() -> None:
    g = torch.Generator().manual_seed(7)
    base = torch.randn(1, 4, TINY.num_heads, TINY.head_dim, dtype=F64, generator=g) + 0.5
    cache = KVCache(TINY, batch=1, tokens_per_frame=4, window=5, sinks=2, chunk_frames=1, adaptive_sinks=True,
                    sink_threshold=-1.5, dtype=F64)  # fmt: skip
    for pos in range(4):
        _stage(cache, base, pos)
    _stage(cache, -base, 4)  # dissimilar, but nothing is below -1.5
    assert cache.ring_ptr.tolist() == [3] * TINY.num_layers
    assert sorted(cache.slot_pos[0].tolist()) == [0, 1, 3, 4]


def test_reset_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="no history"):
        KVCache(TINY, batch=1, tokens_per_frame=4, window=3, sinks=2, chunk_frames=1)
    with pytest.raises(ValueError, match="refresh_after"):
        KVCache(TINY, batch=1, tokens_per_frame=4, window=6, chunk_frames=1, refresh_after=4)
    cache = KVCache(TINY, batch=1, tokens_per_frame=4, window=6, sinks=3, chunk_frames=1, max_chunk_frames=2)
    with pytest.raises(ValueError, match="staging"):
        cache.check_chunk(3, 4)
    with pytest.raises(ValueError, match="tokens per frame"):
        cache.check_chunk(1, 9)
    cache.check_chunk(2, 4)  # the Wan VAE's first chunk of two latents fits
    _stage(cache, torch.ones(1, 4, TINY.num_heads, TINY.head_dim, dtype=torch.float32), 0)
    assert cache.committed == 1 and bool(cache.valid[:, 0].all())
    cache.reset()
    assert cache.committed == 0 and int(cache.pos_start) == 0 and not bool(cache.valid.any())
    assert int(cache.storage.abs().max()) == 0
