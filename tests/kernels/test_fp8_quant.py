"""kernels/fp8_quant.py against its plain-torch reference (the eager path's own quantizer)."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_quantized_rows, needs_gpu, small_device

from streamer_kernels.fp8_quant import quantize_rows


def _check(x: torch.Tensor) -> None:
    q, scale = quantize_rows(x)
    assert_quantized_rows(q, scale, x)


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


_COMPILE_FOR_SM90 = """
import os
os.environ["TRITON_INTERPRET"] = "0"  # real compilation: no GPU is needed to compile for one
from triton.compiler import ASTSource, compile
from triton.backends.compiler import GPUTarget
import streamer_kernels.fp8_quant as Q
import streamer_kernels.modulated_layernorm as L
import streamer_kernels.bias_gelu as G

def build(fn, types, constexprs, num_warps):
    names = fn.arg_names
    sig = {n: ("constexpr" if n in constexprs else types.get(n, "i32")) for n in names}
    cx = {(names.index(n),): v for n, v in constexprs.items()}
    k = compile(ASTSource(fn, sig, constexprs=cx), target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    ptx = k.asm["ptx"]
    # the hardware's round-to-nearest-even conversion, and no register spills
    assert "cvt.rn.satfinite.e4m3x2.f32" in ptx and "ld.local" not in ptx, fn.__name__
    print(fn.__name__, "compiled")

build(Q._quantize_rows_kernel, {"X": "*bf16", "Q": "*fp8e4nv", "S": "*fp32"}, dict(EMULATE=False, BLOCK_M=4, BLOCK_K=2048), 8)
build(Q._quantize_rows_kernel, {"X": "*bf16", "Q": "*fp8e4nv", "S": "*fp32"}, dict(EMULATE=False, BLOCK_M=1, BLOCK_K=16384), 16)
t = {n: "*fp32" for n in ("X", "GATE", "SHIFT", "SCALE", "XOUT")}
t.update(Y="*bf16", OUT="*bf16", Q="*fp8e4nv", S="*fp32", eps="fp32")
build(L._gated_mod_ln_kernel, t, dict(HAS_RESIDUAL=True, QUANT=True, EMULATE=False, BLOCK_D=2048), 4)
build(G._bias_gelu_fp8_kernel, {"X": "*bf16", "BIAS": "*bf16", "Q": "*fp8e4nv", "S": "*fp32"}, dict(K=G._K, EMULATE=False, BLOCK_A=8192, BLOCK_B=1024), 16)
"""


@pytest.mark.slow
def test_the_gpu_variants_compile_for_hopper() -> None:
    """On CPU too: the quantizing kernels compile for sm_90 with the hardware's e4m3 conversion (the
    interpreter runs the hand rounding instead), without register spills."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert run.stdout.count("compiled") == 4, run.stdout
