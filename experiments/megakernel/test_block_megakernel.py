"""block_megakernel.py against the DiT's own block forward (its `_ref`), steady-state cache.

CPU (CI): Triton's interpreter, the tiny preset's real widths (dim 256, 4 heads x 64, ffn 1024) at a
few tokens, fp32, relative error < 1e-4. GPU: W3 sizes (1024 tokens, 6-frame window) in bf16.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from experiments.megakernel.block_megakernel import (
    BlockWeights,
    MegakernelConfig,
    MegakernelWorkspace,
    block_megakernel,
    block_megakernel_ref,
    block_modulation,
)
from streamer.model.cache import KVCache
from streamer.model.config import preset
from streamer.model.dit import DiTBlock
from streamer.model.rope import rope_tables
from tests.kernels.kernel_asserts import HAS_CUDA, assert_matches, needs_gpu, small_device


def _case(batch, grid, window, sinks, dtype, device, seed=None):
    """A random tiny-preset block, a full cache (history random), text K/V and a residual chunk."""
    cfg = preset("tiny")
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**31)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    block = DiTBlock(cfg)
    with torch.no_grad():  # non-trivial norms and biases (defaults are ones / zeros)
        for name, p in block.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    block = block.to(device)
    block.to(dtype)
    block.modulation.data = block.modulation.data.float()
    frames, hp, wp = grid
    S = frames * hp * wp
    cache = KVCache(
        cfg, batch=batch, tokens_per_frame=hp * wp, window=window, sinks=sinks, chunk_frames=frames,
        dtype=dtype, device=device,
    )  # fmt: skip
    cache.storage.normal_(generator=None)
    cache.committed = cache.history  # history full: the steady state the kernel covers
    x = (torch.randn(batch, S, cfg.dim) * 2).to(device)
    e0 = (torch.randn(batch, frames, 6, cfg.dim) * 0.5).to(device)
    cos, sin = rope_tables(torch.arange(frames, device=device) + 7, hp, wp, cfg.head_dim, cfg.rope_theta)
    tk = torch.randn(batch, cfg.num_heads, cfg.text_len, cfg.head_dim).to(dtype).to(device)
    tv = torch.randn(batch, cfg.num_heads, cfg.text_len, cfg.head_dim).to(dtype).to(device)
    return block, cache, x, e0, cos, sin, tk, tv


def _run_both(block, cache, x, e0, cos, sin, tk, tv, layer=1, config=None):
    ref_cache_storage = cache.storage.clone()
    ck, cv = cache.k[layer].clone(), cache.v[layer].clone()
    got = block_megakernel(
        BlockWeights.from_block(block), x, block_modulation(block, e0), cos, sin, ck, cv, cache.stage_offset,
        tk, tv, config=config,
    )  # fmt: skip
    cache.storage.copy_(ref_cache_storage)
    with torch.no_grad():
        want = block_megakernel_ref(block, x, e0, cos, sin, cache, layer, tk, tv)
    return got, want, (ck, cv), (cache.k[layer], cache.v[layer])


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    "batch,grid,window,sinks",
    [(1, (1, 2, 2), 4, 1), (2, (1, 3, 7), 3, 1), (1, (2, 2, 5), 5, 2)],  # 4 / 21 / 20 tokens per chunk
)
def test_block_megakernel_fp32(batch, grid, window, sinks):
    dev = small_device()
    block, cache, x, e0, cos, sin, tk, tv = _case(batch, grid, window, sinks, torch.float32, dev)
    got, want, (ck, cv), (rk, rv) = _run_both(block, cache, x, e0, cos, sin, tk, tv)
    assert _rel(got - x, want - x) < 1e-4, "block update"
    assert_matches(got, want, torch.float32, "residual", rtol=1e-4, atol=1e-4)
    assert_matches(ck, rk, torch.float32, "cache k (staging written, history untouched)", rtol=1e-4, atol=1e-4)
    assert_matches(cv, rv, torch.float32, "cache v", rtol=1e-4, atol=1e-4)


def test_one_key_split_and_in_place_output():
    """nsplit=1 (no merge) and out=x (the residual updated in place) give the same block."""
    dev = small_device()
    block, cache, x, e0, cos, sin, tk, tv = _case(1, (1, 2, 3), 4, 1, torch.float32, dev, seed=5)
    layer = 0
    ck, cv = cache.k[layer].clone(), cache.v[layer].clone()
    with torch.no_grad():
        want = block_megakernel_ref(block, x, e0, cos, sin, cache, layer, tk, tv)
    base = MegakernelConfig(bm=16, bma=16, bn=16, bmc=16, bf=64, nsplit=1, num_warps=1, num_stages=1)
    cfg = base if not HAS_CUDA else dataclasses.replace(base, num_warps=4)
    w = BlockWeights.from_block(block)
    ws = MegakernelWorkspace(1, x.shape[1], 256, 4, 1, torch.float32, torch.device(dev))
    xi = x.clone()
    got = block_megakernel(
        w, xi, block_modulation(block, e0), cos, sin, ck, cv, cache.stage_offset, tk, tv, out=xi, workspace=ws,
        config=cfg,
    )  # fmt: skip
    assert got.data_ptr() == xi.data_ptr()
    assert _rel(got - x, want - x) < 1e-4


def test_rejects_bad_inputs():
    block, cache, x, e0, cos, sin, tk, tv = _case(1, (1, 2, 2), 4, 1, torch.float32, "cpu", seed=1)
    w, mod = BlockWeights.from_block(block), block_modulation(block, e0)
    ck, cv, off = cache.k[0], cache.v[0], cache.stage_offset
    with pytest.raises(ValueError, match="float32"):
        block_megakernel(w, x.double(), mod, cos, sin, ck, cv, off, tk, tv)
    with pytest.raises(ValueError, match="slots"):
        block_megakernel(w, x, mod, cos, sin, ck, cv, off + 1, tk, tv)
    with pytest.raises(ValueError, match="cos"):
        block_megakernel(w, x, mod, cos[:, :8], sin, ck, cv, off, tk, tv)
    with pytest.raises(ValueError, match="mod"):
        block_megakernel(w, x, mod[:, :, :5], cos, sin, ck, cv, off, tk, tv)
    cache.committed = 0
    with pytest.raises(ValueError, match="history must be full"):
        block_megakernel_ref(block, x, e0, cos, sin, cache, 0, tk, tv)


@needs_gpu
def test_block_megakernel_w3_bf16():
    """W3 sizes: 32x32 latent tokens, window 6 incl. 3 sinks (6144 keys), bf16, one CUDA graph replay too."""
    block, cache, x, e0, cos, sin, tk, tv = _case(1, (1, 32, 32), 6, 3, torch.bfloat16, "cuda", seed=3)
    got, want, (ck, cv), (rk, rv) = _run_both(block, cache, x, e0, cos, sin, tk, tv)
    # fp32 truth: the same bf16 weights and inputs, computed in fp32
    b32 = block.float()
    cache32 = KVCache(
        preset("tiny"), batch=1, tokens_per_frame=1024, window=6, sinks=3, dtype=torch.float32, device="cuda"
    )
    cache32.storage.copy_(cache.storage.float())
    cache32.committed = cache32.history
    with torch.no_grad():
        truth = block_megakernel_ref(b32, x, e0, cos, sin, cache32, 1, tk.float(), tv.float())
    err_kernel, err_eager = _rel(got - x, truth - x), _rel(want - x, truth - x)
    assert err_kernel < 2e-2 and err_kernel < 2 * err_eager + 2e-3, (err_kernel, err_eager)
    assert_matches(ck, rk, torch.bfloat16, "cache k", rtol=2e-2, atol=2e-2)
    assert_matches(cv, rv, torch.bfloat16, "cache v", rtol=2e-2, atol=2e-2)


def _fused_vs_eager(dev, dtype, hw, steady_chunks, graph):
    """The bench's MegakernelDiT against the eager DiT through cache fill and steady chunks; the DiT is a
    ShortcutDiT with a non-zero step embedding, so both must be told the step size as the engine does."""
    from experiments.megakernel.bench import MegakernelDiT
    from streamer.model.shortcut import ShortcutDiT, sampler_step_size

    torch.manual_seed(0)
    dit = ShortcutDiT(preset("tiny"))
    torch.nn.init.normal_(dit.step_embedding.mlp[2].weight, std=0.5)  # fresh = zero = step size ignored
    dit = dit.to(dev).to_inference_dtype(dtype).eval()
    cfg, (hh, ww) = dit.cfg, hw
    tokens = cfg.tokens_per_frame(hh, ww)

    def cache() -> KVCache:
        return KVCache(cfg, batch=1, tokens_per_frame=tokens, window=4, sinks=1, dtype=dtype, device=dev)

    eager_cache, fused_cache = cache(), cache()
    kv = dit.cross_kv(torch.randn(1, 5, cfg.text_dim, device=dev))
    fused = MegakernelDiT(dit)
    x_in = torch.empty(1, 16, 1, hh, ww, device=dev)
    t_in = torch.empty(1, 1, device=dev)
    graph_out = None
    errs = []
    for i in range(3 + steady_chunks):  # 3 chunks fill the history (masked, unfused-kernel path)
        x_in.copy_(torch.randn(1, 16, 1, hh, ww, device=dev))
        t_in.copy_(torch.rand(1, 1, device=dev) * 1000)
        with torch.no_grad():
            want = dit(x_in, t_in, kv, eager_cache, step_size=sampler_step_size(t_in))
        if graph and fused_cache.history_full and i >= 4:
            if graph_out is None:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    graph_out = fused(x_in, t_in, kv, fused_cache, sampler_step_size(t_in))
            g.replay()
            got = graph_out
        else:
            got = fused(x_in, t_in, kv, fused_cache, sampler_step_size(t_in))
        errs.append(_rel(got, want))
        eager_cache.commit(1)
        fused_cache.commit(1)
    return errs


def test_megakernel_dit_matches_eager():
    errs = _fused_vs_eager(small_device(), torch.float32, (2, 4), 1, graph=False)
    assert max(errs) < 1e-4, errs


@needs_gpu
def test_megakernel_dit_graph_replay_matches_eager_w3():
    """W3 latent size (64x64) in bf16: eager chunk (warm-up) then graph replays, each vs the eager DiT."""
    errs = _fused_vs_eager("cuda", torch.bfloat16, (64, 64), 5, graph=True)
    assert max(errs) < 5e-2, errs  # bf16 roundings differ from eager's; a wrong block is O(1) off
