"""The FP8 fast path's fused input quantization (streamer/model/fast/ops.py): the norms and the FFN's
bias + GELU hand their matmuls e4m3 rows they wrote themselves, and only the attention outputs go
through the standalone quantizer. The result must equal quantizing every input on its own.

On CPU the kernels run in Triton's interpreter and the FP8 matmuls in their fp32 emulation."""

from __future__ import annotations

import torch

import streamer.model.fast.ops as fused_ops
from streamer.model.cache import KVCache
from streamer.model.dit import build
from streamer.model.fast.ops import FusedOps

HAS_CUDA = torch.cuda.is_available()


def _run(ops: FusedOps, dit, inputs, kv, dev: str, dtype: torch.dtype) -> list[torch.Tensor]:  # noqa: ANN001
    cfg, tokens = dit.cfg, dit.cfg.tokens_per_frame(2, 4)
    cache = KVCache(
        cfg, batch=1, tokens_per_frame=tokens, window=4, sinks=1, adaptive_sinks=True, dtype=dtype, device=dev
    )
    outs = []
    for x, t in inputs:  # 3 chunks fill the history, the 4th is steady state
        outs.append(dit(x, t, kv, cache, ops=ops))
        cache.commit(1)
    return outs


def test_fused_quantization_equals_quantizing_each_input_alone(monkeypatch) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    dev = "cuda" if HAS_CUDA else "cpu"
    dtype = torch.bfloat16 if HAS_CUDA else torch.float32
    dit = build("tiny", device=dev, dtype=dtype).to_fp8()
    kv = dit.cross_kv(torch.randn(1, 5, dit.cfg.text_dim, device=dev), fold=True)  # folded on a CPU too
    inputs = [(torch.randn(1, 16, 1, 2, 4, device=dev), torch.rand(1, 1, device=dev) * 1000) for _ in range(4)]

    calls: list[tuple[int, ...]] = []
    standalone = fused_ops.quantize_rows

    def counted(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(tuple(x.shape))
        return standalone(x)

    monkeypatch.setattr(fused_ops, "quantize_rows", counted)
    fused = FusedOps(dit)
    assert fused.fused_quant
    got = _run(fused, dit, inputs, kv, dev, dtype)
    # per block: the self-attention output only (q/k/v, cross q and both FFN inputs come fused; a short
    # prompt's cross-attention projects its weights through CrossAttnKV.u, no output to quantize)
    assert len(calls) == 1 * dit.cfg.num_layers * len(inputs), calls

    calls.clear()
    alone = FusedOps(dit)
    alone.fused_quant = False  # every matmul input through the standalone quantizer, as before
    want = _run(alone, dit, inputs, kv, dev, dtype)
    assert len(calls) == 5 * dit.cfg.num_layers * len(inputs)  # + q/k/v, cross q and both FFN inputs
    # the interpreter: the same values exactly; compiled, a fused norm's bf16 output may be an ulp off the
    # plain norm's (tests/kernels/test_modulated_layernorm.py), and the e4m3 rounding can amplify that
    tol = 2e-2 if HAS_CUDA else 0.0
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)
