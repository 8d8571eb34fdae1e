"""kernels/bias_gelu.py against its plain-torch reference."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, assert_quantized_rows, needs_gpu, small_device

from streamer_kernels.bias_gelu import bias_gelu, bias_gelu_fp8, bias_gelu_ref


def _case(shape: tuple[int, ...], dtype: torch.dtype, device: str):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = (torch.randn(*shape, generator=g) * 3).to(dtype).to(device)
    b = torch.randn(shape[-1], generator=g).to(dtype).to(device)
    return x, b


@pytest.mark.parametrize("shape", [(7, 33), (2, 5, 300), (1, 1), (19, 257)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bias_gelu_small(shape, dtype):
    x, b = _case(shape, dtype, small_device())
    assert_matches(bias_gelu(x, b), bias_gelu_ref(x, b), dtype)


def test_in_place_and_extremes():
    x, b = _case((5, 40), torch.float32, small_device())
    x[0, :4] = torch.tensor([-80.0, 80.0, 1e4, -1e4])  # sigmoid saturation must not give NaN
    want = bias_gelu_ref(x, b)
    got = bias_gelu(x, b, out=x)
    assert got.data_ptr() == x.data_ptr()
    assert_matches(got, want, torch.float32)


@pytest.mark.parametrize("shape", [(7, 33), (2, 5, 300), (3, 4100), (2, 64)])  # 33 = 32 + a block of 1; 64: one block
def test_fp8_variant_quantizes_the_bf16_gelu(shape):
    x, b = _case(shape, torch.bfloat16, small_device())
    x.view(-1, shape[-1])[0] = 0  # a row of -bias: still finite, its own scale
    q, scale = bias_gelu_fp8(x, b)
    assert_quantized_rows(q, scale, bias_gelu(x, b).reshape(-1, shape[-1]))


def test_rejects_wrong_bias():
    with pytest.raises(ValueError, match="bias"):
        bias_gelu(torch.randn(3, 8), torch.randn(7))
    with pytest.raises(ValueError, match="bias"):
        bias_gelu_fp8(torch.randn(3, 8), torch.randn(7))


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1560, 8960), (2048, 8960), (1024, 1024), (4680, 13824)])
def test_bias_gelu_gpu_real_sizes(shape, dtype):
    x, b = _case(shape, dtype, "cuda")
    assert_matches(bias_gelu(x, b), bias_gelu_ref(x, b), dtype)


@needs_gpu
@pytest.mark.parametrize("shape", [(1560, 8960), (1024, 8960)])
def test_bias_gelu_fp8_gpu_real_sizes(shape):
    x, b = _case(shape, torch.bfloat16, "cuda")
    q, scale = bias_gelu_fp8(x, b)
    assert_quantized_rows(q, scale, bias_gelu(x, b))
