"""On a GPU: one streamed chunk (2 passes + commit, adaptive sinks on) captured as a CUDA graph equals eager."""

from __future__ import annotations

import pytest
import torch

from streamer.model.cache import KVCache
from streamer.model.dit import build

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.inference_mode()
def test_cached_chunk_replays_as_a_cuda_graph() -> None:
    dev = "cuda"
    torch.manual_seed(11)
    model = build("tiny", device=dev, dtype=torch.bfloat16)
    cfg = model.cfg
    cache = KVCache(cfg, batch=1, tokens_per_frame=64, window=6, sinks=3, chunk_frames=1, adaptive_sinks=True,
                    refresh_after=0, dtype=torch.bfloat16, device=dev)  # fmt: skip
    ctx = model.cross_kv(torch.randn(1, 9, cfg.text_dim, device=dev))
    x = torch.randn(1, 16, 1, 16, 16, device=dev)
    out = torch.empty_like(x)

    def chunk() -> None:
        y = x
        for t in (700.0, 500.0):
            y = y - 0.2 * model(y, torch.full((1, 1), t, device=dev), ctx, cache)
        out.copy_(y)
        cache.commit_device(1)

    for _ in range(7):  # fill the history eagerly, then capture the mask-free steady state
        x.normal_()
        chunk()
        cache.advance_host(1)
    assert cache.history_full
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        chunk()
    torch.cuda.current_stream().wait_stream(side)
    cache.advance_host(1)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chunk()
    state = [t.clone() for t in (cache.storage, cache.slot_pos, cache.ring_ptr, cache.n_committed, cache.pos_start)]
    x.normal_()
    graph.replay()
    torch.cuda.synchronize()
    got, got_cache, got_pos = out.clone(), cache.storage.clone(), cache.slot_pos.clone()
    for t, s in zip(
        (cache.storage, cache.slot_pos, cache.ring_ptr, cache.n_committed, cache.pos_start), state, strict=True
    ):
        t.copy_(s)
    chunk()
    assert torch.equal(got, out)
    assert torch.equal(got_cache, cache.storage)
    assert torch.equal(got_pos, cache.slot_pos)
    assert int(cache.pos_start) == 9
