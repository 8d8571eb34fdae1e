"""Bias add + GELU (tanh approximation) for the FFN's hidden layer, in one pass.

cuBLAS returns `x @ W.T` without the bias when called as a plain matmul; adding the bias and the
GELU in one kernel reads and writes the [tokens, ffn_dim] hidden tensor once instead of twice
(`F.linear` + `F.gelu` round-trip it twice; at W1 that is 1560 x 8960 x 2 B = 28 MB per pass).

gelu_tanh(u) = 0.5 u (1 + tanh(√(2/π)(u + 0.044715 u³))) = u · sigmoid(2√(2/π)(u + 0.044715 u³)),
the sigmoid form needing no tanh intrinsic (works in the interpreter too).

`bias_gelu_fp8` is the FP8 path's variant: it hands the FFN's second matmul its input already quantized
per token (kernels/fp8_quant.py). A token's scale needs its whole row (8960 wide at W1), so one program
takes a row in two sweeps: the first finds the largest magnitude, the second recomputes the GELU (the row
is still in L2) and writes e4m3 values. The GELU is rounded to x's dtype before both, so the values equal
`quantize_rows(bias_gelu(x, bias))`; the bf16 hidden tensor (28 MB per pass at W1) is never written, and
the quantizer's own pass over it (55 us of W1's 230 us per FFN, 2026-12-07) is gone.
"""

from __future__ import annotations

import math

import torch

from streamer.model.fp8 import E4M3
from streamer_kernels.backend import tl, triton
from streamer_kernels.fp8_quant import EMULATE_CAST, e4m3_scale, e4m3_values

_K = 2.0 * math.sqrt(2.0 / math.pi)


@triton.jit
def _bias_gelu_kernel(
    X, BIAS, OUT, n_rows, N, stride_x, stride_o, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < N)
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(BIAS + cols, mask=cols < N, other=0.0).to(tl.float32)
    y = _gelu(x + b[None, :], K)
    tl.store(OUT + rows[:, None] * stride_o + cols[None, :], y.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _gelu(u, K: tl.constexpr):
    # clamp: past |z| = 40 the sigmoid is exactly 0 or 1 in fp32, and exp() must not overflow
    z = tl.minimum(tl.maximum(K * (u + 0.044715 * u * u * u), -40.0), 40.0)
    return u * tl.sigmoid(z)


@triton.jit
def _gelu_row(X, BIAS, row, start, N, stride_x, K: tl.constexpr, BLOCK_N: tl.constexpr):
    """GELU of x + bias over columns [start, start + BLOCK_N) of one row, rounded to x's dtype (0 past N)."""
    cols = start + tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(BIAS + cols, mask=mask, other=0.0).to(tl.float32)
    y = _gelu(x + b, K).to(X.dtype.element_ty).to(tl.float32)
    return tl.where(mask, y, 0.0), cols, mask


@triton.jit
def _bias_gelu_fp8_kernel(X, BIAS, Q, S, N, stride_x, K: tl.constexpr, EMULATE: tl.constexpr,
                          BLOCK_N: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    amax = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, N, BLOCK_N):
        y, _, _ = _gelu_row(X, BIAS, row, start, N, stride_x, K, BLOCK_N)
        amax = tl.maximum(amax, tl.abs(y))
    scale = e4m3_scale(tl.max(amax, axis=0))
    for start in range(0, N, BLOCK_N):
        y, cols, mask = _gelu_row(X, BIAS, row, start, N, stride_x, K, BLOCK_N)
        tl.store(Q + row * N + cols, e4m3_values(y, scale, EMULATE).to(Q.dtype.element_ty), mask=mask)
    tl.store(S + row, scale)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """gelu_tanh(x + bias) over the last dim; x: [..., N] (rows contiguous), bias: [N]. In place if out is x."""
    N = x.shape[-1]
    if bias.shape != (N,):
        raise ValueError(f"bias must be [{N}], got {tuple(bias.shape)}")
    x2 = x.reshape(-1, N)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    o2 = torch.empty_like(x2) if out is None else out.view(-1, N)
    block_n = min(triton.next_power_of_2(N), 256)
    block_m = 16
    grid = (triton.cdiv(x2.shape[0], block_m), triton.cdiv(N, block_n))
    _bias_gelu_kernel[grid](
        x2, bias, o2, x2.shape[0], N, x2.stride(0), o2.stride(0), _K, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4
    )
    return o2.view(x.shape)


def bias_gelu_fp8(x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`bias_gelu(x, bias)` quantized per token: (e4m3 [M, N], fp32 scale [M, 1]) for x [..., N], M rows."""
    N = x.shape[-1]
    if bias.shape != (N,):
        raise ValueError(f"bias must be [{N}], got {tuple(bias.shape)}")
    x2 = x.reshape(-1, N)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    q = torch.empty((m, N), dtype=E4M3, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    block_n = min(triton.next_power_of_2(N), 2048)
    _bias_gelu_fp8_kernel[(m,)](x2, bias, q, scale, N, x2.stride(0), _K, EMULATE_CAST, BLOCK_N=block_n, num_warps=8)
    return q, scale


def bias_gelu_ref(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Plain torch reference: F.gelu(x + bias, approximate="tanh") in fp32, cast back."""
    return torch.nn.functional.gelu(x.float() + bias.float(), approximate="tanh").to(x.dtype)
