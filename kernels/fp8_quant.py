"""Per-token FP8 quantization of a matmul's input, in one pass: x [M, K] -> e4m3 [M, K], fp32 scale [M, 1].

The FP8 linear layers (streamer/model/fp8.py) quantize every matmul input per row at run time. In plain
torch that is seven kernels with an fp32 copy of x (abs, amax, cast, clamp, divide, divide, cast:
about 17 bytes of traffic per element); here one program reads a row once (2 bytes per element in
bf16), finds its largest magnitude, and writes the e4m3 row (1 byte) and its scale. At W1 the
inputs of the 6 matmuls per block are 1560 x 16,640 elements, x 30 layers x 2 passes per chunk.

The reference is the eager path's own quantizer (`quantize_rows_ref` = streamer.model.fp8's
`quantize_activation`), so the kernel and the CPU path are held to the same function: the same IEEE
division and round-to-nearest-even onto the e4m3 grid, so the two agree value for value (a tiny
negative that rounds to zero may come out +0).
"""

from __future__ import annotations

import torch

from streamer.model.fp8 import E4M3, E4M3_MAX, MIN_SCALE
from streamer.model.fp8 import quantize_activation as quantize_rows_ref
from streamer_kernels.backend import tl, triton

__all__ = ["quantize_rows", "quantize_rows_ref"]


@triton.jit
def _quantize_rows_kernel(X, Q, S, K, stride_x, stride_q, QMAX: tl.constexpr, MINS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < K
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), axis=0), MINS) / QMAX
    v = tl.div_rn(x, scale)  # IEEE division, as torch's reference divides
    # Round v to the e4m3 grid here, in fp32, so the cast below is exact: e4m3 has 3 mantissa bits, so in
    # v's binade [2^e, 2^(e+1)) its values are 2^(e-3) apart (2^-9 for e < -6: the subnormals). Adding and
    # subtracting 1.5 * 2^23 rounds v / step to an integer, half to even, as the GPU's cvt.rn does; the
    # interpreter's own fp8 cast does not carry a round-up into the exponent (124 -> 64, not 128).
    biased = tl.maximum((v.to(tl.int32, bitcast=True) >> 23) & 0xFF, 127 - 6)
    step = ((biased - 3) << 23).to(tl.float32, bitcast=True)
    v = ((v / step + 12582912.0) - 12582912.0) * step  # dividing by a power of two is exact
    tl.store(Q + row * stride_q + cols, v.to(Q.dtype.element_ty), mask=mask)
    tl.store(S + row, scale)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (bf16, fp16 or fp32; rows contiguous) -> (e4m3 [M, K] row-major, fp32 scale [M, 1])."""
    if x.dim() != 2:
        raise ValueError(f"x must be [M, K], got {tuple(x.shape)}")
    if x.stride(1) != 1:
        x = x.contiguous()
    m, k = x.shape
    q = torch.empty((m, k), dtype=E4M3, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(k)  # a whole row per program: K is at most the FFN width (8960 at W1)
    warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
    _quantize_rows_kernel[(m,)](
        x, q, scale, k, x.stride(0), q.stride(0), E4M3_MAX, MIN_SCALE, BLOCK=block, num_warps=warps
    )
    return q, scale
