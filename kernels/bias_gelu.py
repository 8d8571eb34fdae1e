"""Bias add + GELU (tanh approximation) for the FFN's hidden layer, in one pass.

cuBLAS returns `x @ W.T` without the bias when called as a plain matmul; adding the bias and the
GELU in one kernel reads and writes the [tokens, ffn_dim] hidden tensor once instead of twice
(`F.linear` + `F.gelu` round-trip it twice; at W1 that is 1560 x 8960 x 2 B = 28 MB per pass).

gelu_tanh(u) = 0.5 u (1 + tanh(√(2/π)(u + 0.044715 u³))) = u · sigmoid(2√(2/π)(u + 0.044715 u³)),
the sigmoid form needing no tanh intrinsic (works in the interpreter too).

`bias_gelu_fp8` is the FP8 path's variant: it hands the FFN's second matmul its input already quantized
per token (kernels/fp8_quant.py). A token's scale needs its whole row (8960 wide at W1), so one program
holds a row in registers, as a power-of-two block and one for the rest (8192 + 1024 at W1, 3 % of the
lanes idle; wan-14b's FFN is 13824 = 8192 + 8192). The GELU is rounded to x's dtype
before the row's largest magnitude is taken, so the values equal `quantize_rows(bias_gelu(x, bias))`;
the bf16 hidden tensor (28 MB per pass at W1) is never written, and the quantizer's own pass over it
(55 us of W1's 230 us per FFN, H100, 2026-12-07) is gone. (A first version swept each row twice in
2048-column blocks, recomputing the GELU: 47 us per W1 call; one 16384-wide block, 45 % of it past the
row: 33 us.)
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
def _gelu_cols(X, BIAS, row, start, N, stride_x, K: tl.constexpr, BLOCK: tl.constexpr):
    """GELU of x + bias on columns [start, start + BLOCK) of a row, rounded to x's dtype (0 past N)."""
    cols = start + tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(BIAS + cols, mask=mask, other=0.0).to(tl.float32)
    return tl.where(mask, _gelu(x + b, K).to(X.dtype.element_ty).to(tl.float32), 0.0), cols, mask


@triton.jit
def _bias_gelu_fp8_kernel(X, BIAS, Q, S, N, stride_x, K: tl.constexpr, EMULATE: tl.constexpr,
                          BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):  # fmt: skip
    # a row as two power-of-two blocks (8960 = 8192 + 768 in a block of 1024), held in registers
    row = tl.program_id(0).to(tl.int64)
    ya, cols_a, mask_a = _gelu_cols(X, BIAS, row, 0, N, stride_x, K, BLOCK_A)
    amax = tl.max(tl.abs(ya), axis=0)
    if BLOCK_B > 0:
        yb, cols_b, mask_b = _gelu_cols(X, BIAS, row, BLOCK_A, N, stride_x, K, BLOCK_B)
        amax = tl.maximum(amax, tl.max(tl.abs(yb), axis=0))
    scale, inv = e4m3_scale(amax)
    tl.store(Q + row * N + cols_a, e4m3_values(ya, inv, EMULATE).to(Q.dtype.element_ty), mask=mask_a)
    if BLOCK_B > 0:
        tl.store(Q + row * N + cols_b, e4m3_values(yb, inv, EMULATE).to(Q.dtype.element_ty), mask=mask_b)
    tl.store(S + row, scale)


def _rows(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [..., N] as [M, N] with contiguous rows, after checking the bias is [N]."""
    N = x.shape[-1]
    if bias.shape != (N,):
        raise ValueError(f"bias must be [{N}], got {tuple(bias.shape)}")
    x2 = x.reshape(-1, N)
    return x2 if x2.stride(1) == 1 else x2.contiguous()


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """gelu_tanh(x + bias) over the last dim; x: [..., N] (rows contiguous), bias: [N]. In place if out is x."""
    x2 = _rows(x, bias)
    N = x2.shape[1]
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
    x2 = _rows(x, bias)
    m, N = x2.shape
    q = torch.empty((m, N), dtype=E4M3, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    # the whole row in registers (one read, one GELU per element), as a power-of-two block and the rest
    block_a = 1 << (N.bit_length() - 1)
    block_b = triton.next_power_of_2(N - block_a) if N > block_a else 0
    if block_a > 16384:
        raise ValueError(f"rows of {N}: bias_gelu_fp8 takes fewer than 32768 columns")
    width = block_a + block_b
    warps = 4 if width <= 2048 else 8 if width <= 8192 else 16
    _bias_gelu_fp8_kernel[(m,)](
        x2, bias, q, scale, N, x2.stride(0), _K, EMULATE_CAST, BLOCK_A=block_a, BLOCK_B=block_b, num_warps=warps
    )  # fmt: skip
    return q, scale


def bias_gelu_ref(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Plain torch reference: F.gelu(x + bias, approximate="tanh") in fp32, cast back."""
    return torch.nn.functional.gelu(x.float() + bias.float(), approximate="tanh").to(x.dtype)
