"""streamer/model/fast/cache.py leaves the cache exactly as KVCache.commit_device does."""

from __future__ import annotations

import pytest
import torch

from streamer.model.cache import KVCache
from streamer.model.config import preset
from streamer.model.fast.cache import fast_commit_device

# the commit's Triton kernel: compiled on CUDA tensors where there is a GPU, the interpreter on CPU ones
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("adaptive,dtype", [(True, torch.float32), (False, torch.float32), (True, torch.bfloat16)])
def test_fast_commit_matches_cache_commit(adaptive: bool, dtype: torch.dtype) -> None:
    cfg = preset("tiny")

    def make() -> KVCache:
        return KVCache(
            cfg, batch=2, tokens_per_frame=6, window=5, sinks=2, adaptive_sinks=adaptive, dtype=dtype, device=DEVICE
        )

    ref, fast = make(), make()
    gen = torch.Generator().manual_seed(3)
    replaced = 0
    for step in range(9):  # fills sinks, then the ring, then (adaptive) replaces dissimilar sinks
        k = torch.randn(ref.k[:, :, :, ref.stage_offset :].shape, generator=gen).to(dtype).to(DEVICE)
        if step % 3 == 2:  # a frame similar to the sinks: no replacement for it
            k = ref.k[:, :, :, : k.shape[3]].clone()
        v = torch.randn(k.shape, generator=gen).to(dtype).to(DEVICE)
        for c in (ref, fast):
            c.k[:, :, :, c.stage_offset :] = k
            c.v[:, :, :, c.stage_offset :] = v
        ring_before = ref.ring_ptr.clone()
        ref.commit_device(1)
        fast_commit_device(fast, 1)
        # a replaced sink keeps its position; the tell is the ring pointer standing still
        replaced += int(step >= ref.history and bool((ref.ring_ptr == ring_before).any()))
        tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
        torch.testing.assert_close(fast.k, ref.k, **tol)
        torch.testing.assert_close(fast.v, ref.v, rtol=0, atol=0)
        for name in ("slot_pos", "valid", "ring_ptr", "n_committed", "pos_start"):
            assert torch.equal(getattr(fast, name), getattr(ref, name)), (step, name)
    assert replaced > 0 or not adaptive, "the test must exercise a sink replacement"
