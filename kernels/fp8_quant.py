"""Per-token FP8 quantization of a matmul's input, in one pass: x [M, K] -> e4m3 [M, K], fp32 scale [M, 1].

The FP8 linear layers (streamer/model/fp8.py) quantize every matmul input per row at run time. In plain
torch that is seven kernels with an fp32 copy of x (abs, amax, cast, clamp, divide, divide, cast:
about 17 bytes of traffic per element); here a program reads its rows once (2 bytes per element in
bf16), finds each row's largest magnitude, and writes the e4m3 rows (1 byte) and their scales.

Speed (H100, 2026-12-07): the first version, one row per program and the e4m3 rounding done by hand in
fp32 (two IEEE divisions per element), took 12 us for W1's 1560 x 1536 input (590 GB/s) and 5.2 ms of
W1's fp8 chunk - more than the e4m3 matmuls saved. Now a program takes several rows, values are
multiplied by one reciprocal per row, and on a GPU the rounding is the hardware's conversion
(cvt.rn.satfinite: round to nearest even, as torch's cast).
The hand rounding stays for Triton's interpreter, whose own fp8 cast does not carry a round-up into the
exponent (124 -> 64, not 128). `e4m3_scale` and `e4m3_values` are shared with the kernels that quantize
their own output (kernels/modulated_layernorm.py, kernels/bias_gelu.py).

The reference is the eager path's own quantizer (`quantize_rows_ref` = streamer.model.fp8's
`quantize_activation`), so the kernel and the CPU path are held to the same function: the same IEEE
reciprocal, product and round-to-nearest-even onto the e4m3 grid, so the two agree value for value (a
tiny negative that rounds to zero may come out +0).
"""

from __future__ import annotations

import torch

from streamer.model.fp8 import E4M3, E4M3_MAX, MIN_SCALE
from streamer.model.fp8 import quantize_activation as quantize_rows_ref
from streamer_kernels.backend import INTERPRET, tl, triton

__all__ = ["EMULATE_CAST", "e4m3_scale", "e4m3_values", "quantize_rows", "quantize_rows_ref"]

EMULATE_CAST = INTERPRET
_QMAX = tl.constexpr(E4M3_MAX)  # globals a jit function reads must be constexpr
_MINS = tl.constexpr(MIN_SCALE)


@triton.jit
def e4m3_scale(amax):
    """(scale, reciprocal) of a row from its largest magnitude (fp32): the reference's clamp(amax,
    MIN_SCALE) / 448 and 448 / that, both IEEE divisions as torch's (Triton's `/` may approximate)."""
    a = tl.maximum(amax, _MINS)
    return tl.div_rn(a, _QMAX), tl.div_rn(_QMAX + tl.zeros_like(a), a)


@triton.jit
def e4m3_values(x, inv, EMULATE: tl.constexpr):
    """x * (448 / amax) (fp32, |.| <= 448), ready for `.to(float8e4nv)` to give the reference's values."""
    v = x * inv
    if EMULATE:
        # Round v to the e4m3 grid here, so the interpreter's cast is exact: e4m3 has 3 mantissa bits, so in
        # v's binade [2^e, 2^(e+1)) its values are 2^(e-3) apart (2^-9 for e < -6: the subnormals). Adding
        # and subtracting 1.5 * 2^23 rounds v / step to an integer, half to even, as the GPU's cvt.rn does.
        biased = tl.maximum((v.to(tl.int32, bitcast=True) >> 23) & 0xFF, 127 - 6)
        step = ((biased - 3) << 23).to(tl.float32, bitcast=True)
        v = ((v / step + 12582912.0) - 12582912.0) * step  # dividing by a power of two is exact
    return v


@triton.jit
def _quantize_rows_kernel(X, Q, S, M, K, stride_x, stride_q, EMULATE: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_K: tl.constexpr):  # fmt: skip
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    mask = (rows < M)[:, None] & (cols < K)[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    scale, inv = e4m3_scale(tl.max(tl.abs(x), axis=1))
    v = e4m3_values(x, inv[:, None], EMULATE)
    tl.store(Q + rows[:, None] * stride_q + cols[None, :], v.to(Q.dtype.element_ty), mask=mask)
    tl.store(S + rows, scale, mask=rows < M)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (bf16, fp16 or fp32; rows contiguous) -> (e4m3 [M, K] row-major, fp32 scale [M, 1])."""
    if x.dim() != 2:
        raise ValueError(f"x must be [M, K], got {tuple(x.shape)}")
    if x.stride(1) != 1:
        x = x.contiguous()
    m, k = x.shape
    q = torch.empty((m, k), dtype=E4M3, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    block_k = triton.next_power_of_2(k)  # whole rows: K is at most the FFN width (8960 at W1)
    block_m = max(1, min(8192 // block_k, triton.next_power_of_2(m)))  # ~8K elements per program
    warps = 4 if block_m * block_k <= 2048 else 8 if block_m * block_k <= 8192 else 16
    _quantize_rows_kernel[(triton.cdiv(m, block_m),)](
        x, q, scale, m, k, x.stride(0), q.stride(0), EMULATE_CAST,
        BLOCK_M=block_m, BLOCK_K=block_k, num_warps=warps,
    )  # fmt: skip
    return q, scale
