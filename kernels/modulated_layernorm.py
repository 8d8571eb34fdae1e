"""Fused gated residual + LayerNorm (no affine) + per-frame modulation, the Wan block's glue.

Math (model.md §1): `x = x + gate * y` then `out = LN(x) * (1 + scale) + shift`, where gate, shift
and scale have one row per latent frame ([B, F, D]) broadcast over that frame's tokens. Fusing saves
two full passes over the residual stream per use (read x, y once; write x and out once), and the
modulation math runs in fp32 like upstream whatever the storage dtype.

Modulation tensors may be strided views (e.g. slices of e0 laid out [B, F, 6, D]): only the last
dimension must be contiguous, so no copies are needed to feed them in.

The `_fp8` variants also write the output's per-token e4m3 quantization (what the next FP8 matmul takes,
kernels/fp8_quant.py) from the same registers: the output rounded to its dtype, then quantized, so the
values equal `quantize_rows(out)` while the separate pass over `out` (a read of 2 bytes per element and
a launch, 12 us at W1) is saved.
"""

from __future__ import annotations

import torch

from streamer.model.fp8 import E4M3
from streamer_kernels.backend import tl, triton
from streamer_kernels.fp8_quant import EMULATE_CAST, e4m3_scale, e4m3_values


@triton.jit
def _gated_mod_ln_kernel(
    X,
    Y,
    GATE,
    SHIFT,
    SCALE,
    XOUT,
    OUT,
    Q,
    S,
    tokens,
    tokens_per_frame,
    D,
    stride_x,
    stride_y,
    stride_xo,
    stride_o,
    gate_sb,
    gate_sf,
    shift_sb,
    shift_sf,
    scale_sb,
    scale_sf,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    QUANT: tl.constexpr,
    EMULATE: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // tokens
    f = (row % tokens) // tokens_per_frame
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        y = tl.load(Y + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GATE + b * gate_sb + f * gate_sf + cols, mask=mask, other=0.0).to(tl.float32)
        x = x + g * y
        tl.store(XOUT + row * stride_xo + cols, x.to(XOUT.dtype.element_ty), mask=mask)
    mean = tl.sum(x, axis=0) / D
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    shift = tl.load(SHIFT + b * shift_sb + f * shift_sf + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(SCALE + b * scale_sb + f * scale_sf + cols, mask=mask, other=0.0).to(tl.float32)
    out = (xc * rstd * (1.0 + scale) + shift).to(OUT.dtype.element_ty)
    tl.store(OUT + row * stride_o + cols, out, mask=mask)
    if QUANT:  # masked columns hold 0: they do not move the row's largest magnitude
        o = out.to(tl.float32)
        q_scale, inv = e4m3_scale(tl.max(tl.abs(o), axis=0))
        tl.store(Q + row * D + cols, e4m3_values(o, inv, EMULATE).to(Q.dtype.element_ty), mask=mask)
        tl.store(S + row, q_scale)


def _check_mod(name: str, t: torch.Tensor, x: torch.Tensor) -> None:
    B, N, D = x.shape
    if t.dim() != 3 or t.shape[0] != B or t.shape[2] != D or N % t.shape[1] != 0:
        raise ValueError(f"{name} must be [B, F, D] with N % F == 0 for x {tuple(x.shape)}, got {tuple(t.shape)}")
    if t.stride(2) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device}, x on {x.device}")


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[B, N, D] -> a [B*N, D] view when possible (row stride constant), else a contiguous copy."""
    flat = t.reshape(-1, t.shape[-1])
    return flat if flat.stride(1) == 1 else flat.contiguous()


def _launch(
    x: torch.Tensor,
    y: torch.Tensor | None,
    gate: torch.Tensor | None,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None,
    quant: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_new, out, and with `quant` out's e4m3 rows [B*N, D] and scales [B*N, 1]; else out twice)."""
    if x.dim() != 3:
        raise ValueError(f"x must be [B, N, D], got {tuple(x.shape)}")
    B, N, D = x.shape
    for name, t in (("shift", shift), ("scale", scale)) + ((("gate", gate),) if gate is not None else ()):
        _check_mod(name, t, x)  # type: ignore[arg-type]
    if shift.shape[1] != scale.shape[1] or (gate is not None and gate.shape[1] != shift.shape[1]):
        raise ValueError("gate, shift and scale must have the same number of frames")
    frames = shift.shape[1]
    x2 = _rows(x)
    out = torch.empty((B * N, D), device=x.device, dtype=out_dtype or x.dtype)
    if y is not None:
        if y.shape != x.shape:
            raise ValueError(f"y {tuple(y.shape)} must match x {tuple(x.shape)}")
        y2 = _rows(y)
        x_new = torch.empty_like(x2)
        gate_t = gate
    else:
        y2, x_new, gate_t = x2, x2, shift  # unused pointers when HAS_RESIDUAL is off
    assert gate_t is not None
    if quant:
        q = torch.empty((B * N, D), device=x.device, dtype=E4M3)
        q_scale = torch.empty((B * N, 1), device=x.device, dtype=torch.float32)
    else:
        q, q_scale = out, out  # unused pointers when QUANT is off (no allocation on the bf16 path)
    block = triton.next_power_of_2(D)
    _gated_mod_ln_kernel[(B * N,)](
        x2,
        y2,
        gate_t,
        shift,
        scale,
        x_new,
        out,
        q,
        q_scale,
        N,
        N // frames,
        D,
        x2.stride(0),
        y2.stride(0),
        x_new.stride(0),
        out.stride(0),
        gate_t.stride(0),
        gate_t.stride(1),
        shift.stride(0),
        shift.stride(1),
        scale.stride(0),
        scale.stride(1),
        eps,
        HAS_RESIDUAL=y is not None,
        QUANT=quant,
        EMULATE=EMULATE_CAST,
        BLOCK_D=block,
        num_warps=8 if block >= 4096 else (4 if block >= 1024 else 2),
    )
    return x_new.view(B, N, D), out.view(B, N, D), q, q_scale


def modulated_layernorm(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float = 1e-6,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift. x: [B, N, D]; shift, scale: [B, F, D] (F frames of N/F tokens)."""
    return _launch(x, None, None, shift, scale, eps, out_dtype)[1]


def modulated_layernorm_fp8(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`modulated_layernorm`, plus its output quantized per token: (out, e4m3 [B*N, D], scale [B*N, 1])."""
    _, out, q, q_scale = _launch(x, None, None, shift, scale, eps, out_dtype, quant=True)
    return out, q, q_scale


def gated_modulated_layernorm(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float = 1e-6,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_new = x + gate * y; returns (x_new, LN(x_new) * (1 + scale) + shift). Shapes as above."""
    return _launch(x, y, gate, shift, scale, eps, out_dtype)[:2]


def gated_modulated_layernorm_fp8(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`gated_modulated_layernorm`, plus its output quantized per token: (x_new, out, e4m3, scale)."""
    return _launch(x, y, gate, shift, scale, eps, out_dtype, quant=True)


def _per_token(t: torch.Tensor, tokens: int) -> torch.Tensor:
    return t.float().repeat_interleave(tokens // t.shape[1], dim=1)


def modulated_layernorm_ref(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float = 1e-6,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Plain torch reference of `modulated_layernorm` (fp32 math)."""
    n = x.shape[1]
    ln = torch.nn.functional.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return (ln * (1 + _per_token(scale, n)) + _per_token(shift, n)).to(out_dtype or x.dtype)


def gated_modulated_layernorm_ref(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float = 1e-6,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch reference of `gated_modulated_layernorm` (fp32 math)."""
    x_new = x.float() + _per_token(gate, x.shape[1]) * y.float()
    out = modulated_layernorm_ref(x_new, shift, scale, eps, out_dtype or x.dtype)
    return x_new.to(x.dtype), out
