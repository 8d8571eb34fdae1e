"""kernels/fp8_quant.py against its plain-torch reference (the eager path's own quantizer)."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import needs_gpu, small_device

from streamer.model.fp8 import E4M3, dequantize
from streamer_kernels.fp8_quant import quantize_rows, quantize_rows_ref

ONE_STEP = 2.0**-3  # one e4m3 step, relative (3 mantissa bits); 2^-9 x scale below the normal range


def _check(x: torch.Tensor) -> None:
    q, scale = quantize_rows(x)
    q_ref, scale_ref = quantize_rows_ref(x)
    assert q.dtype == E4M3 and q.shape == x.shape and scale.shape == (x.shape[0], 1)
    assert torch.allclose(scale, scale_ref, rtol=1e-6, atol=0)
    got, want = dequantize(q, scale).cpu(), dequantize(q_ref, scale_ref).cpu()
    assert torch.isfinite(got).all(), "NaN/Inf in the quantized rows"
    bound = torch.maximum(ONE_STEP * want.abs(), 2.0**-9 * scale_ref.cpu()) * (1 + 1e-6)
    bad = (got - want).abs() > bound
    assert not bad.any(), f"{int(bad.sum())} elements more than one e4m3 step from the reference"
    # the same division and rounding as the reference: equal values (a tiny negative may become +0)
    off = int((q.float() != q_ref.float()).sum())
    assert off == 0, f"{off} of {q.numel()} elements differ from the reference"


@pytest.mark.parametrize("shape", [(7, 33), (1, 1), (19, 257), (3, 1536)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_rows_small(shape: tuple[int, int], dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = (torch.randn(*shape, generator=g) * torch.logspace(-3, 3, shape[0])[:, None]).to(dtype)
    _check(x.to(small_device()))


def test_zero_rows_strided_input_and_extremes() -> None:
    x = torch.randn(6, 80) * 100
    x[1] = 0  # an all-zero row: zeros and the minimum scale, no NaN
    x[2, :3] = torch.tensor([3e38, -3e38, 1e-30])
    wide = torch.zeros(6, 160)
    wide[:, ::2] = x  # rows with a column stride of 2: copied contiguous first
    _check(x.to(small_device()))
    _check(wide[:, ::2].to(small_device()))
    with pytest.raises(ValueError, match=r"\[M, K\]"):
        quantize_rows(torch.randn(2, 3, 4))


@needs_gpu
@pytest.mark.parametrize("shape", [(1560, 1536), (1560, 8960), (1024, 1536), (512, 1536)])
def test_quantize_rows_gpu_real_sizes(shape: tuple[int, int]) -> None:
    x = (torch.randn(*shape, device="cuda") * 4).bfloat16()
    _check(x)
