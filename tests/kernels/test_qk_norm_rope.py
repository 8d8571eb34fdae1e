"""kernels/qk_norm_rope.py against its plain-torch reference, including the write into a cache slot."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu, small_device

from streamer.model.rope import rope_tables
from streamer_kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref


def _case(B: int, grid: tuple[int, int, int], heads: int, hd: int, dtype: torch.dtype, device: str):
    F, H, W = grid
    S, D = F * H * W, heads * hd
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    qkv = (torch.randn(B, S, 3 * D, generator=g) * 2).to(dtype).to(device)  # fused projection output
    q, k, v = qkv.split(D, dim=-1)  # strided views, as a fused qkv linear hands them over
    wq = (1 + 0.3 * torch.randn(D, generator=g)).to(dtype).to(device)
    wk = (1 + 0.3 * torch.randn(D, generator=g)).to(dtype).to(device)
    start = torch.randint(0, 60, (1,), generator=g)
    cos, sin = rope_tables(torch.arange(F, device=device) + start.to(device), H, W, hd)
    return q, k, v, wq, wk, cos, sin


SMALL = [(1, (1, 2, 3), 2, 16), (2, (2, 3, 1), 3, 8), (1, (1, 1, 5), 1, 128)]


@pytest.mark.parametrize("B,grid,heads,hd", SMALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qk_norm_rope_small(B, grid, heads, hd, dtype):
    q, k, v, wq, wk, cos, sin = _case(B, grid, heads, hd, dtype, small_device())
    got = qk_norm_rope(q, k, v, wq, wk, cos, sin, heads)
    want = qk_norm_rope_ref(q, k, v, wq, wk, cos, sin, heads)
    for name, a, b in zip(("q", "k", "v"), got, want, strict=True):
        assert_matches(a, b, dtype, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_writes_into_heads_first_cache_slot_only(dtype):
    """k/v land in a slice of a preallocated [B, H, slots*T, hd] cache (the DiT's layout); nothing
    outside it is touched; q comes back as [B, H, S, hd] memory for SDPA."""
    dev = small_device()
    B, grid, heads, hd = 2, (1, 3, 2), 2, 16
    q, k, v, wq, wk, cos, sin = _case(B, grid, heads, hd, dtype, dev)
    S = math.prod(grid)
    cache_k = torch.full((B, heads, 4 * S, hd), float("nan"), dtype=dtype, device=dev)
    cache_v = torch.full_like(cache_k, float("nan"))
    slot_k, slot_v = cache_k[:, :, S : 2 * S].transpose(1, 2), cache_v[:, :, S : 2 * S].transpose(1, 2)
    q_out, _, _ = qk_norm_rope(q, k, v, wq, wk, cos, sin, heads, k_out=slot_k, v_out=slot_v, heads_first=True)
    q_ref, k_ref, v_ref = qk_norm_rope_ref(q, k, v, wq, wk, cos, sin, heads)
    assert q_out.transpose(1, 2).is_contiguous()
    assert_matches(q_out, q_ref, dtype, "q")
    assert_matches(slot_k, k_ref, dtype, "cached k")
    assert_matches(slot_v, v_ref, dtype, "cached v")
    assert torch.isnan(cache_k[:, :, :S]).all() and torch.isnan(cache_k[:, :, 2 * S :]).all()
    assert torch.isnan(cache_v[:, :, :S]).all() and torch.isnan(cache_v[:, :, 2 * S :]).all()


def test_norm_only_for_cross_attention():
    q, _, _, wq, _, _, _ = _case(1, (1, 2, 2), 2, 16, torch.float32, small_device())
    got, k, v = qk_norm_rope(q, None, None, wq, None, None, None, 2)
    assert k is None and v is None
    assert_matches(got, qk_norm_rope_ref(q, None, None, wq, None, None, None, 2)[0], torch.float32)


def test_rope_tables_split():
    """22:21:21 pairs for head_dim 128; the time block depends on the frame index only."""
    cos, sin = rope_tables(torch.tensor([0, 7]), 2, 3, 128)
    assert cos.shape == (12, 64)
    assert torch.allclose(cos[0], torch.ones(64))  # position (0,0,0): no rotation
    assert torch.allclose(cos[6, :22], cos[11, :22]) and not torch.allclose(cos[6, :22], cos[0, :22])
    assert torch.allclose(cos[6, 22:43], cos[0, 22:43])  # same h, w in both frames
    assert torch.allclose(cos[1, 43], torch.cos(torch.tensor(1.0)))  # w=1, first width frequency is 1


def test_rejects_bad_tables():
    q, k, v, wq, wk, cos, sin = _case(1, (1, 2, 2), 2, 16, torch.float32, "cpu")
    with pytest.raises(ValueError, match="cos/sin"):
        qk_norm_rope(q, k, v, wq, wk, cos[:-1], sin[:-1], 2)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,grid,heads", [(1, (1, 30, 52), 12), (2, (1, 32, 32), 12), (1, (3, 30, 52), 40)])
def test_qk_norm_rope_gpu_real_sizes(B, grid, heads, dtype):
    q, k, v, wq, wk, cos, sin = _case(B, grid, heads, 128, dtype, "cuda")
    got = qk_norm_rope(q, k, v, wq, wk, cos, sin, heads)
    want = qk_norm_rope_ref(q, k, v, wq, wk, cos, sin, heads)
    for name, a, b in zip(("q", "k", "v"), got, want, strict=True):
        assert_matches(a, b, dtype, name)
