"""The fast path (streamer/model/fast/: path.py, ops.py) against the eager model and engine.

On CPU the fused kernels run in Triton's interpreter (kernels/backend.py) at tiny sizes, without the
CUDA graph; on a GPU the `gpu` tests check graph replay against eager over several chunks with a
prompt change mid-stream.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from streamer.config import ModelSettings
from streamer.model import cache as cache_module
from streamer.model.cache import KVCache
from streamer.model.dit import build
from streamer.model.engine import ModelTransform
from streamer.model.fast.ops import FusedOps
from streamer.model.fast.path import FastPath, fast_path_unavailable
from streamer.model.loading import LoadedParts
from streamer.model.text import RandomTextEncoder
from streamer.model.vae import TAEHV, tiny_taehv

HAS_CUDA = torch.cuda.is_available()
gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (graph capture)")]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize(("fp8", "tokens"), [(False, 5), (False, 40), (True, 5), (True, 40)])
def test_fused_dit_matches_eager_through_cache_fill_and_steady_state(
    fp8: bool, tokens: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tokens: a prompt of 5 tokens folds the cross-attention's o projection into its values
    (kernels/prompt_projection.py; in an FP8 model from the dequantized weight); 40 distinct keys do
    not fold here (FOLDED_KEYS set to 32: the tiny model's 64 text positions all fit the real 128).

    fp8: the same FP8Linears in both (fused q/k/v, the Triton quantizer vs the eager one); on a CPU
    they run the emulation in fp32, on a GPU `_scaled_mm` in bf16.

    An element-wise bound does not hold for fp8: the fused kernels compute some values an ulp away from
    eager's (bf16 roundings on a GPU; in fp32, the cross-attention's kernel against SDPA), and an ulp
    before a quantization can become a whole e4m3 step (12.5 %) after it. (On a CPU in bf16 the two
    paths differ by 0.08 % of the output's norm unquantized, by 0.36 % quantized, while fp8 itself is
    0.7 % from the unquantized model.) So the fused fp8 output must be no further than 1.5x eager fp8's
    distance from the unquantized model: a wrong layout or scale would be many times further."""
    torch.manual_seed(0)
    dev = "cuda" if HAS_CUDA else "cpu"  # compiled kernels need CUDA tensors; the interpreter CPU ones
    dtype = torch.bfloat16 if fp8 and HAS_CUDA else torch.float32
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    dit = build("tiny", device=dev, dtype=dtype)
    unquantized = copy.deepcopy(dit) if fp8 else None
    if fp8:
        dit.to_fp8()
    cfg, (hh, ww) = dit.cfg, (2, 4)
    tokens = cfg.tokens_per_frame(hh, ww)

    def cache() -> KVCache:
        return KVCache(
            cfg, batch=1, tokens_per_frame=tokens, window=4, sinks=1, adaptive_sinks=True, dtype=dtype, device=dev
        )

    eager_cache, fused_cache, plain_cache = cache(), cache(), cache()
    monkeypatch.setattr(cache_module, "FOLDED_KEYS", 32)
    text = torch.randn(1, tokens, cfg.text_dim, device=dev)
    kv = dit.cross_kv(text, fold=True)  # (the default makes u on CUDA only)
    assert kv.u is not None and kv.u.shape[-2] == 32
    assert kv.starts is not None and kv.starts.tolist() == [[tokens]] * cfg.num_layers  # the tokens, then padding
    ops = FusedOps(dit)

    def fused(x, t, kv, cache):  # noqa: ANN001, ANN202 - the same DiT forward, fused ops swapped in
        return dit(x, t, kv, cache, ops=ops)

    for chunk in range(4):  # 3 chunks fill the history, the 4th is steady state (no mask)
        x, t = torch.randn(1, 16, 1, hh, ww, device=dev), torch.rand(1, 1, device=dev) * 1000
        want = dit(x, t, kv, eager_cache)
        got = fused(x, t, kv, fused_cache)
        if unquantized is None:
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        else:
            plain = unquantized(x, t, unquantized.cross_kv(text), plain_cache)
            plain_cache.commit(1)
            eager_err, fused_err = _rel(want, plain), _rel(got, plain)
            assert fused_err <= 1.5 * eager_err, f"chunk {chunk}: from bf16, fused fp8 {fused_err:.4f}, eager {eager_err:.4f}"
        eager_cache.commit(1)
        fused_cache.commit(1)
    assert fused_cache.history_full
    # the fold was checked and used (both ways: every row unfolded too) where the model has it
    assert [ok for key, ok in ops.attn.prompt_ok.items() if key[0] == "projected"] == [True]
    if unquantized is None:
        torch.testing.assert_close(fused_cache.k, eager_cache.k, rtol=tol, atol=tol)
        torch.testing.assert_close(fused_cache.v, eager_cache.v, rtol=tol, atol=tol)
    else:
        for name in ("k", "v"):
            plain = getattr(plain_cache, name)
            eager_err, fused_err = _rel(getattr(eager_cache, name), plain), _rel(getattr(fused_cache, name), plain)
            assert fused_err <= 1.5 * eager_err, f"cache {name}: from bf16, fused fp8 {fused_err:.4f}, eager {eager_err:.4f}"


def test_cross_kv_makes_the_folded_values_only_for_the_fast_path() -> None:
    """u (the values through the o projections) is made where the fast path runs, on CUDA; a CPU engine
    would make it on every prompt change and every chunk of a blend for nothing. In place, like k/v."""
    torch.manual_seed(0)
    dit = build("tiny", device="cpu")
    cfg = dit.cfg
    first, second = torch.randn(1, 5, cfg.text_dim), torch.randn(1, 9, cfg.text_dim)
    assert dit.cross_kv(first).u is None
    kv = dit.cross_kv(first, fold=True)
    assert kv.u is not None and kv.u.shape == (cfg.num_layers, 1, cfg.num_heads, cache_module.FOLDED_KEYS, cfg.dim)
    again = dit.cross_kv(second, out=kv)
    assert again is kv and kv.starts is not None and kv.starts[0].item() == 9
    want = cache_module.fold_values(kv.v[2], dit.layers[2].cross_attn.o.weight, cache_module.FOLDED_KEYS)
    torch.testing.assert_close(kv.u[2], want)


def _engine(
    preset: str, size: int, device: str, dtype: torch.dtype, *, fp8: bool = False, **over: object
) -> ModelTransform:
    """A fresh engine on seeded random weights; `over`: other [model] settings (mode, steps, window)."""
    m = dataclasses.replace(
        ModelSettings(), preset=preset, width=size, height=size, steps=2, window=4, sinks=1,
        dtype="fp8" if fp8 else {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype], device=device,
    )  # fmt: skip
    m = dataclasses.replace(m, **over)  # type: ignore[arg-type]
    torch.manual_seed(0)
    dit = build(preset, device=device, dtype=dtype)
    if fp8:
        dit.to_fp8()
    vae = (tiny_taehv() if preset == "tiny" else TAEHV(True)).to(device=device, dtype=dtype).eval()
    text = RandomTextEncoder(dit.cfg.text_len, dit.cfg.text_dim)
    return ModelTransform(m, LoadedParts(torch.device(device), dtype, dit, vae, text, {}, ["DiT"]))


def _run(engine: ModelTransform, step, frames: list[torch.Tensor], prompt_at: int) -> list[torch.Tensor]:
    engine.reset()
    engine._set_cross(engine.text.encode(["first"]).to(engine.device))
    outs = []
    for i, f in enumerate(frames):
        if i == prompt_at:  # a prompt change mid-stream rewrites the cross-attention K/V in place
            engine._set_cross(engine.text.encode(["second"]).to(engine.device))
        outs.append(step(f).float())
    return outs


def test_fused_step_matches_engine_eager() -> None:
    engine = _engine("tiny", 16, "cuda" if HAS_CUDA else "cpu", torch.float32)
    gen = torch.Generator().manual_seed(1)
    frames = [
        torch.randint(0, 256, (1, 16, 16, 3), generator=gen, dtype=torch.uint8).to(engine.device) for _ in range(4)
    ]
    want = _run(engine, engine.step_tensor, frames, prompt_at=2)
    fast = FastPath(engine, use_graph=False)
    got = _run(engine, fast.step, frames, prompt_at=2)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape, i
        assert float((a - b).abs().max()) <= 1.0, f"chunk {i}: uint8 outputs differ by more than rounding"


def test_fast_path_needs_cuda_for_the_graph() -> None:
    engine = _engine("tiny", 32, "cpu", torch.float32)
    assert "CUDA" in (fast_path_unavailable(engine) or "")
    with pytest.raises(RuntimeError, match="CUDA"):
        FastPath(engine)


@pytest.mark.parametrize("preset,size,fp8", [("tiny", 64, False), ("wan-1.3b", 128, False), ("wan-1.3b", 128, True)])
def test_graph_replay_matches_eager_with_prompt_change(preset: str, size: int, fp8: bool) -> None:
    engine = _engine(preset, size, "cuda", torch.bfloat16, fp8=fp8)
    fpl = engine.frames_per_latent
    gen = torch.Generator().manual_seed(2)
    frames = [torch.randint(0, 256, (fpl, size, size, 3), generator=gen, dtype=torch.uint8).cuda() for _ in range(12)]
    eager_fused = FastPath(engine, use_graph=False)
    want = _run(engine, eager_fused.step, frames, prompt_at=8)
    graph = FastPath(engine)
    got = _run(engine, graph.step, frames, prompt_at=8)
    assert graph._graph is not None and graph.replays >= 3, "the steady-state chunks must replay the graph"
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        diff = (a - b).abs()
        assert float(diff.mean()) < 0.5 and float((diff > 2).float().mean()) < 1e-3, f"chunk {i}: {diff.max()}"
    # and the fused path stays close to the engine's own eager step (bf16: a few code values)
    plain = _run(engine, engine.step_tensor, frames, prompt_at=8)
    for i, (a, b) in enumerate(zip(got, plain, strict=True)):
        assert float((a - b).abs().mean()) < 4.0, f"chunk {i}: fast vs eager engine"


for _m in gpu:
    test_graph_replay_matches_eager_with_prompt_change = _m(test_graph_replay_matches_eager_with_prompt_change)
