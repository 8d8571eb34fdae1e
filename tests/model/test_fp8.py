"""streamer/model/fp8.py: e4m3 quantization bounds, the FP8Linear emulation against an fp32 Linear, the
`torch._scaled_mm` call convention (checked on the CPU build's own kernel), fusing, and the swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamer.model import fp8
from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.model.fp8 import (
    E4M3,
    E4M3_MAX,
    FP8Linear,
    dense_weight,
    dequantize,
    fuse,
    input_dtype,
    matmul,
    quantize_activation,
    quantize_weight,
    scaled_mm_ref,
)

HALF_ULP = 2.0**-4  # e4m3: 3 mantissa bits, round to nearest -> relative error <= 2^-4 for normal values
SUBNORMAL_HALF_STEP = 2.0**-10  # smallest subnormal 2^-9: absolute error <= 2^-10 (in units of the scale)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _within_e4m3(approx: torch.Tensor, exact: torch.Tensor, scale: torch.Tensor) -> None:
    """Each element within half an e4m3 step of the exact value (relative for normals, absolute below)."""
    bound = torch.maximum(HALF_ULP * exact.abs(), SUBNORMAL_HALF_STEP * scale) * (1 + 1e-6)
    bad = (approx - exact).abs() > bound
    assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} elements beyond half an e4m3 step"


def test_weight_quantization_is_per_output_channel_within_half_a_step() -> None:
    w = torch.randn(48, 80, generator=_gen()) * torch.logspace(-3, 1, 48)[:, None]  # rows 4 decades apart
    w[5] = 0  # an all-zero channel stays zero, without NaN
    q, scale = quantize_weight(w)
    assert q.dtype == E4M3 and scale.shape == (48,) and scale.dtype == torch.float32
    assert torch.equal(q.float().abs().amax(1)[w.abs().amax(1) > 0], torch.full((47,), E4M3_MAX))
    _within_e4m3(dequantize(q, scale), w, scale[:, None])
    assert torch.equal(dequantize(q, scale)[5], torch.zeros(80))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activation_quantization_is_per_token(dtype: torch.dtype) -> None:
    x = (torch.randn(33, 64, generator=_gen(1)) * torch.logspace(-2, 3, 33)[:, None]).to(dtype)
    x[0] = 0
    q, scale = quantize_activation(x)
    assert q.shape == (33, 64) and scale.shape == (33, 1) and scale.dtype == torch.float32
    deq = dequantize(q, scale)
    assert torch.isfinite(deq).all() and torch.equal(deq[0], torch.zeros(64))
    _within_e4m3(deq, x.float(), scale)


def _linear(n_in: int, n_out: int, seed: int) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=_gen(seed)) / n_in**0.5)
        lin.bias.copy_(torch.randn(n_out, generator=_gen(seed + 1)))
    return lin.requires_grad_(False)


def test_fp8_linear_emulation_against_the_fp32_linear() -> None:
    """Per element: |error| <= (2 * 2^-4 + 2^-8) * sum_k |x_k w_k| plus the subnormal terms (each operand
    rounds by at most half a step); over a whole output the errors average out to about 2 %."""
    lin = _linear(96, 80, seed=2)
    x = torch.randn(4, 37, 96, generator=_gen(3)) * 2
    f = FP8Linear.from_linear(lin)
    assert f.weight.dtype == E4M3 and f.scale.shape == (1, 80) and f.compute_dtype == torch.float32
    y, y8 = lin(x), f(x)
    assert y8.shape == y.shape == (4, 37, 80) and y8.dtype == torch.float32
    x2 = x.reshape(-1, 96)
    xs, ws = x2.abs().amax(1, keepdim=True) / E4M3_MAX, lin.weight.abs().amax(1) / E4M3_MAX
    mags = x2.abs() @ lin.weight.abs().t()
    sub = SUBNORMAL_HALF_STEP * (xs * lin.weight.abs().sum(1) + x2.abs().sum(1, keepdim=True) * ws)
    bound = (2 * HALF_ULP + HALF_ULP**2) * mags + sub + 1e-5
    err = (y8 - y).reshape(-1, 80).abs()
    assert (err <= bound).all(), f"{int((err > bound).sum())} elements beyond the e4m3 bound"
    rel = ((y8 - y).norm() / y.norm()).item()
    assert 1e-3 < rel < 0.04, rel  # measured ~1.6 %; never 0 (that would mean nothing was quantized)


def test_the_cuda_call_convention_on_the_cpu_kernel() -> None:
    """`scaled_mm` hands `torch._scaled_mm` the row-major weight transposed (column-major [K, N]) and
    row-wise scales [M, 1] / [1, N], bf16 out with a bf16 bias. PyTorch's CPU build implements the same
    op: it must agree with the emulation exactly, which pins down the argument convention used on GPUs."""
    lin = _linear(64, 48, seed=4)
    x = torch.randn(21, 64, generator=_gen(5)).bfloat16()
    xq, xs = quantize_activation(x)
    wq, ws = quantize_weight(lin.weight)
    bias = lin.bias.bfloat16()
    try:
        got = torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws.view(1, -1), bias=bias, out_dtype=torch.bfloat16)
    except (NotImplementedError, RuntimeError) as e:  # a CPU build without the op: only the GPU can check
        pytest.skip(f"torch {torch.__version__} has no CPU _scaled_mm: {e}")
    want = scaled_mm_ref(xq, xs, wq, ws.view(1, -1), bias, torch.bfloat16)
    assert torch.equal(got, want)
    assert not torch.equal(got, scaled_mm_ref(xq, xs.flip(0), wq, ws.view(1, -1), bias, torch.bfloat16))


def test_matmul_with_and_without_bias_for_both_layer_kinds() -> None:
    lin = _linear(32, 16, seed=6)
    f = FP8Linear.from_linear(lin)
    x = torch.randn(5, 32, generator=_gen(7))
    assert torch.equal(matmul(x, lin), lin(x))
    assert torch.allclose(matmul(x, lin, bias=False) + lin.bias, lin(x), atol=1e-6)
    assert torch.allclose(matmul(x, f, bias=False) + f.bias, f(x), atol=1e-6)
    with pytest.raises(TypeError, match="Linear"):
        matmul(x, nn.Conv1d(32, 16, 1))


def test_dense_weight_of_both_layer_kinds() -> None:
    """A Linear's own weight; an FP8Linear's e4m3 values times their row scales: the matrix its emulation
    multiplies by, so x @ dense^T is the layer on an unquantized input."""
    lin = _linear(32, 16, seed=8)
    f = FP8Linear.from_linear(lin)
    assert dense_weight(lin) is lin.weight
    dense = dense_weight(f)
    assert dense.shape == (16, 32) and dense.dtype == torch.float32
    assert torch.equal(dense, f.weight.float() * f.scale.view(-1, 1))
    assert float((dense - lin.weight).abs().max()) <= HALF_ULP * float(lin.weight.abs().max())


@pytest.mark.parametrize("kind", ["linear", "fp8"])
def test_fuse_concatenates_and_keeps_the_layers_as_views(kind: str) -> None:
    layers: list[nn.Module] = [_linear(24, 16, seed=10 + i) for i in range(3)]
    if kind == "fp8":
        layers = [FP8Linear.from_linear(m) for m in layers]  # type: ignore[arg-type]
    x = torch.randn(7, 24, generator=_gen(8))
    want = torch.cat([m(x) for m in layers], -1)
    fused = fuse(layers)
    assert type(fused) is type(layers[0])
    assert torch.equal(fused(x), want)
    assert torch.equal(torch.cat([m(x) for m in layers], -1), want)  # the views compute the same
    with torch.no_grad():  # a later weight update of one layer reaches the fused matmul
        layers[1].bias.add_(1)  # type: ignore[operator]
    assert torch.allclose(fused(x)[:, 16:32], want[:, 16:32] + 1)
    with pytest.raises(TypeError, match="one kind"):
        fuse([_linear(24, 16, 0), FP8Linear.from_linear(_linear(24, 16, 1))])


def test_dit_to_fp8_swaps_exactly_the_blocks_linears() -> None:
    cfg = preset("tiny")
    dit = DiT(cfg).to_fp8()
    block = dit.layers[0]
    swapped = [m for m in dit.modules() if isinstance(m, FP8Linear)]
    assert len(swapped) == 10 * cfg.num_layers  # self q, k, v, o; cross q, k, v, o; FFN x 2
    assert isinstance(block.ffn[0], FP8Linear) and isinstance(block.cross_attn.k, FP8Linear)
    kept = [dit.text_embedding[0], dit.time_embedding[0], dit.time_projection[1], dit.head.head]
    assert all(type(m) is nn.Linear for m in kept)
    assert input_dtype(block.self_attn.q) is torch.float32


def test_fp8_is_refused_off_cuda_and_below_ada(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "FP8 tensor cores" in (fp8.fp8_unavailable(torch.device("cpu")) or "")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 3090")
    reason = fp8.fp8_unavailable(torch.device("cuda")) or ""
    assert "RTX 3090" in reason and "8.6" in reason and "bfloat16" in reason
    for cc in ((8, 9), (9, 0), (10, 0)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, cc=cc: cc)
        assert fp8.fp8_unavailable(torch.device("cuda")) is None


def test_config_accepts_fp8_on_gpus_and_refuses_it_on_a_cpu() -> None:
    from streamer.config import ConfigError, from_dict

    assert from_dict({"model": {"dtype": "fp8", "device": "cuda"}}).model.dtype == "fp8"
    assert from_dict({"model": {"dtype": "fp8"}}).model.device == "auto"  # checked when the card is known
    with pytest.raises(ConfigError, match=r"model\.dtype.*FP8 tensor cores.*'cpu'"):
        from_dict({"model": {"dtype": "fp8", "device": "cpu"}})


def test_loading_refuses_fp8_without_the_card_and_auto_never_picks_it() -> None:
    from streamer.config import ModelSettings
    from streamer.model.loading import ModelLoadError, load_dit_for, resolve_dtype

    m = ModelSettings(dtype="fp8", checkpoint="random")
    with pytest.raises(ModelLoadError, match=r"model\.dtype = 'fp8'.*compute capability 8\.9"):
        load_dit_for(m, torch.device("cpu"), torch.bfloat16)
    assert resolve_dtype("fp8", torch.device("cuda")) is torch.bfloat16  # the dtype between the FP8 matmuls
    assert resolve_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float32)


def test_memory_estimate_counts_fp8_weights_at_one_byte() -> None:
    from streamer.config import ModelSettings
    from streamer.model.doctor import estimate_memory

    bf16 = estimate_memory(ModelSettings(preset="wan-1.3b", dtype="bfloat16", width=832, height=480), on_gpu=True)
    f8 = estimate_memory(ModelSettings(preset="wan-1.3b", dtype="fp8", width=832, height=480), on_gpu=True)
    cfg = preset("wan-1.3b")
    block_linears = cfg.num_layers * (8 * cfg.dim * cfg.attn_dim + 2 * cfg.dim * cfg.ffn_dim)
    # one byte saved per weight, plus fp32 scales [out] and bf16 biases kept
    assert bf16.weights - f8.weights == pytest.approx(block_linears, rel=0.01)
    assert (f8.kv_cache, f8.activations) == (bf16.kv_cache, bf16.activations)


def test_a_problem_cublas_refuses_computes_dequantized_and_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuBLASLt refused wan-1.3b's FFN down-projection at 128x128 (M 64, K 8960) on an H100: that shape then
    takes the dequantized bf16 matmul, asked once; any other error still surfaces."""
    torch.manual_seed(0)
    w = torch.randn(24, 32)
    wq, w_scale = fp8.quantize_weight(w)
    xq, x_scale = fp8.quantize_activation(torch.randn(5, 32))
    bias = torch.randn(24)
    calls: list[int] = []

    def refuse(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling `cublasLtMatmulAlgoGetHeuristic`")

    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    monkeypatch.setattr(fp8, "_REFUSED", set())
    ref = fp8.scaled_mm_ref(xq, x_scale, wq, w_scale.reshape(1, -1), bias, torch.float32)
    for _ in range(2):
        y = fp8.scaled_mm_cublas(xq, x_scale, wq, w_scale.reshape(1, -1), bias, torch.float32)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1  # remembered: cuBLASLt is not asked again for this shape

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch, "_scaled_mm", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        fp8.scaled_mm_cublas(xq, x_scale, wq, w_scale.reshape(1, -1), None, torch.float32)
