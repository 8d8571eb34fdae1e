"""kernels/modulated_layernorm.py against its plain-torch reference (interpreter on CPU, compiled on GPU)."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, assert_quantized_rows, needs_gpu, small_device

from streamer_kernels.modulated_layernorm import (
    gated_modulated_layernorm,
    gated_modulated_layernorm_fp8,
    gated_modulated_layernorm_ref,
    modulated_layernorm,
    modulated_layernorm_fp8,
    modulated_layernorm_ref,
)


def _inputs(B: int, F: int, T: int, D: int, dtype: torch.dtype, device: str, mod_dtype: torch.dtype):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)  # fresh inputs every run
    x = (torch.randn(B, F * T, D, generator=g) * 3 + 0.5).to(dtype).to(device)
    y = torch.randn(B, F * T, D, generator=g).to(dtype).to(device)
    # e0-like layout [B, F, 6, D]: shift/scale/gate are strided slices of it, as the DiT passes them
    e0 = (torch.randn(B, F, 6, D, generator=g) * 0.5).to(mod_dtype).to(device)
    return x, y, e0[:, :, 0], e0[:, :, 1], e0[:, :, 2]


SMALL = [(1, 1, 5, 32), (2, 3, 7, 48), (1, 2, 3, 130)]  # odd token counts, non-power-of-2 widths


@pytest.mark.parametrize("shape", SMALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_modulated_layernorm_small(shape, dtype):
    x, _, shift, scale, _ = _inputs(*shape, dtype, small_device(), torch.float32)
    assert_matches(modulated_layernorm(x, shift, scale), modulated_layernorm_ref(x, shift, scale), dtype)


@pytest.mark.parametrize("shape", SMALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_modulated_layernorm_small(shape, dtype):
    x, y, shift, scale, gate = _inputs(*shape, dtype, small_device(), torch.float32)
    x_new, out = gated_modulated_layernorm(x, y, gate, shift, scale)
    x_ref, out_ref = gated_modulated_layernorm_ref(x, y, gate, shift, scale)
    assert_matches(x_new, x_ref, dtype, "x_new")
    assert_matches(out, out_ref, dtype, "modulated LN")


def test_fp32_residual_with_bf16_activations():
    """Upstream keeps the residual stream in fp32 while the branch output is bf16."""
    x, y, shift, scale, gate = _inputs(2, 2, 5, 64, torch.float32, small_device(), torch.float32)
    y = y.bfloat16()
    x_new, out = gated_modulated_layernorm(x, y, gate, shift, scale, out_dtype=torch.bfloat16)
    x_ref, out_ref = gated_modulated_layernorm_ref(x, y, gate, shift, scale, out_dtype=torch.bfloat16)
    assert x_new.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert_matches(x_new, x_ref, torch.float32, "x_new")
    assert_matches(out, out_ref, torch.bfloat16, "modulated LN")


def _check_fp8(shape: tuple[int, int, int, int], device: str) -> None:
    """The _fp8 variants: the same outputs as the plain ones, and those outputs quantized as the FP8 path's
    own quantizer would (fp32 residual, bf16 output, as the DiT runs them)."""
    x, y, shift, scale, gate = _inputs(*shape, torch.float32, device, torch.float32)
    y = y.bfloat16()
    bf = torch.bfloat16
    x_new, out = gated_modulated_layernorm(x, y, gate, shift, scale, 1e-6, bf)
    x_new8, out8, q, q_scale = gated_modulated_layernorm_fp8(x, y, gate, shift, scale, 1e-6, bf)
    # the two compiled variants may round an output an ulp apart (seen on an H100); the interpreter's agree
    assert torch.equal(x_new8, x_new)
    assert_matches(out8, out, bf, "gated, fp8 variant vs plain")
    assert_quantized_rows(q, q_scale, out8.reshape(-1, out8.shape[-1]), "gated")
    plain = modulated_layernorm(x, shift, scale, 1e-6, bf)
    out8, q, q_scale = modulated_layernorm_fp8(x, shift, scale, 1e-6, bf)
    assert_matches(out8, plain, bf, "ungated, fp8 variant vs plain")
    assert_quantized_rows(q, q_scale, out8.reshape(-1, out8.shape[-1]), "ungated")
    if device == "cpu":
        assert torch.equal(out8, plain)


@pytest.mark.parametrize("shape", SMALL)
def test_fp8_variants_quantize_their_output(shape):
    _check_fp8(shape, small_device())


def test_rejects_bad_shapes():
    x = torch.randn(1, 6, 32)
    with pytest.raises(ValueError, match="N % F"):
        modulated_layernorm(x, torch.randn(1, 4, 32), torch.randn(1, 4, 32))
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        modulated_layernorm(x[0], torch.randn(1, 1, 32), torch.randn(1, 1, 32))


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1560, 1536), (2, 1, 1024, 1536), (1, 3, 1560, 5120), (1, 1, 1024, 256)])
def test_gated_modulated_layernorm_gpu_real_sizes(shape, dtype):
    x, y, shift, scale, gate = _inputs(*shape, dtype, "cuda", torch.float32)
    x_new, out = gated_modulated_layernorm(x, y, gate, shift, scale)
    x_ref, out_ref = gated_modulated_layernorm_ref(x, y, gate, shift, scale)
    assert_matches(x_new, x_ref, dtype, "x_new")
    assert_matches(out, out_ref, dtype, "modulated LN")


@needs_gpu
@pytest.mark.parametrize("shape", [(1, 1, 1560, 1536), (1, 3, 1560, 5120)])
def test_fp8_variants_gpu_real_sizes(shape):
    _check_fp8(shape, "cuda")
