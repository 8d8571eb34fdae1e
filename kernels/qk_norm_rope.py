"""Fused self-attention input prep: q/k RMSNorm over the full width, 3D RoPE, and the KV-cache write.

Math (model.md §1): q and k get an RMSNorm over the whole `dim` (before splitting into heads, weight
only, eps 1e-6); then each 128-wide head is rotated as 64 complex pairs (x[2i], x[2i+1]) by the
per-token angle table; the rotated k and the raw v go straight into the rolling cache's slot. One
program per token reads q, k, v once and writes q, k, v once: the unfused path makes ~8 passes.

Angle tables: `cos`, `sin` are [S, head_dim/2] float32 for the S tokens of the chunk, the same table
for every head; `rope_tables()` builds them from 3D grid positions the way Wan splits the pairs
(time:height:width = 22:21:21 for head_dim 128).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_rope_row(
    SRC,
    DST,
    W,
    COS,
    SIN,
    s_idx,
    D,
    half_head,
    eps,
    cols_half,
    mask,
    APPLY_ROPE: tl.constexpr,
):
    """RMSNorm the row at SRC (length D), rotate its pairs, store at DST (contiguous D)."""
    xe = tl.load(SRC + 2 * cols_half, mask=mask, other=0.0).to(tl.float32)
    xo = tl.load(SRC + 2 * cols_half + 1, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt((tl.sum(xe * xe, axis=0) + tl.sum(xo * xo, axis=0)) / D + eps)
    we = tl.load(W + 2 * cols_half, mask=mask, other=0.0).to(tl.float32)
    wo = tl.load(W + 2 * cols_half + 1, mask=mask, other=0.0).to(tl.float32)
    xe = xe * rstd * we
    xo = xo * rstd * wo
    if APPLY_ROPE:
        pair = cols_half % half_head
        c = tl.load(COS + s_idx * half_head + pair, mask=mask, other=1.0)
        s = tl.load(SIN + s_idx * half_head + pair, mask=mask, other=0.0)
        ye = xe * c - xo * s
        yo = xe * s + xo * c
    else:
        ye = xe
        yo = xo
    tl.store(DST + 2 * cols_half, ye.to(DST.dtype.element_ty), mask=mask)
    tl.store(DST + 2 * cols_half + 1, yo.to(DST.dtype.element_ty), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(
    Q,
    K,
    V,
    WQ,
    WK,
    COS,
    SIN,
    QO,
    KO,
    VO,
    S,
    D,
    half_head,
    q_sb,
    q_ss,
    k_sb,
    k_ss,
    v_sb,
    v_ss,
    qo_sb,
    qo_ss,
    ko_sb,
    ko_ss,
    vo_sb,
    vo_ss,
    eps,
    HAS_KV: tl.constexpr,
    APPLY_ROPE: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // S
    s_idx = row % S
    cols_half = tl.arange(0, BLOCK_HALF)
    mask = cols_half < D // 2
    _rms_rope_row(
        Q + b * q_sb + s_idx * q_ss,
        QO + b * qo_sb + s_idx * qo_ss,
        WQ,
        COS,
        SIN,
        s_idx,
        D,
        half_head,
        eps,
        cols_half,
        mask,
        APPLY_ROPE,
    )
    if HAS_KV:
        _rms_rope_row(
            K + b * k_sb + s_idx * k_ss,
            KO + b * ko_sb + s_idx * ko_ss,
            WK,
            COS,
            SIN,
            s_idx,
            D,
            half_head,
            eps,
            cols_half,
            mask,
            APPLY_ROPE,
        )
        cols = tl.arange(0, 2 * BLOCK_HALF)
        vmask = cols < D
        v = tl.load(V + b * v_sb + s_idx * v_ss + cols, mask=vmask, other=0.0)
        tl.store(VO + b * vo_sb + s_idx * vo_ss + cols, v.to(VO.dtype.element_ty), mask=vmask)


def _bsd(name: str, t: torch.Tensor, B: int, S: int, D: int) -> tuple[int, int]:
    """(batch stride, token stride) of a [B, S, D] or [B, S, H, hd] tensor whose rows are contiguous."""
    if t.shape[0] != B or t.shape[1] != S or t[0, 0].numel() != D:
        raise ValueError(f"{name} must be [B={B}, S={S}, D={D}] (or heads split), got {tuple(t.shape)}")
    if t.dim() == 4 and t.stride(3) == 1 and t.stride(2) == t.shape[3] or t.dim() == 3 and t.stride(2) == 1:
        return t.stride(0), t.stride(1)
    raise ValueError(f"{name}: each token's {D} values must be contiguous")


def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor | None,
    wq: torch.Tensor,
    wk: torch.Tensor | None,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    num_heads: int,
    k_out: torch.Tensor | None = None,
    v_out: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """RMSNorm(q)·wq and RMSNorm(k)·wk over the full width, RoPE on both, v copied.

    q, k, v: [B, S, D] projections (row-contiguous; strided views of a fused qkv output are fine).
    cos, sin: [S, head_dim/2] float32, or None for no rotation (cross-attention's q/k norm).
    k_out, v_out: where to write k and v, e.g. the cache slot `cache_k[layer, :, start:start+S]`
    ([B, S, H, hd] views); allocated when not given. Returns (q [B,S,H,hd], k_out, v_out).
    k and v may be None together (norm + RoPE of q alone).
    """
    if q.dim() != 3:
        raise ValueError(f"q must be [B, S, D], got {tuple(q.shape)}")
    B, S, D = q.shape
    if D % num_heads or (D // num_heads) % 2:
        raise ValueError(f"width {D} does not split into {num_heads} heads of even size")
    hd = D // num_heads
    rope = cos is not None
    if rope:
        assert cos is not None and sin is not None
        if cos.shape != (S, hd // 2) or sin.shape != cos.shape or cos.dtype != torch.float32:
            raise ValueError(f"cos/sin must be float32 [S={S}, {hd // 2}], got {tuple(cos.shape)} {cos.dtype}")
        cos, sin = cos.contiguous(), sin.contiguous()
    has_kv = k is not None
    if has_kv != (v is not None) or has_kv != (wk is not None):
        raise ValueError("k, v and wk go together")
    q_out = torch.empty(B, S, num_heads, hd, device=q.device, dtype=q.dtype)
    if has_kv:
        assert k is not None and v is not None
        k_out = k_out if k_out is not None else torch.empty(B, S, num_heads, hd, device=q.device, dtype=k.dtype)
        v_out = v_out if v_out is not None else torch.empty(B, S, num_heads, hd, device=q.device, dtype=v.dtype)
        kk, vv, ko, vo = k, v, k_out, v_out
    else:
        kk = vv = ko = vo = q_out
    strides = [
        _bsd(n, t, B, S, D) for n, t in (("q", q), ("k", kk), ("v", vv), ("q_out", q_out), ("k_out", ko), ("v_out", vo))
    ]
    dummy = cos if rope else wq
    _qk_norm_rope_kernel[(B * S,)](
        q,
        kk,
        vv,
        wq,
        wk if wk is not None else wq,
        dummy,
        sin if rope else wq,
        q_out,
        ko,
        vo,
        S,
        D,
        hd // 2,
        *[x for st in strides for x in st],
        eps,
        HAS_KV=has_kv,
        APPLY_ROPE=rope,
        BLOCK_HALF=triton.next_power_of_2(D // 2),
        num_warps=8 if D >= 4096 else 4,
    )
    return q_out, (k_out if has_kv else None), (v_out if has_kv else None)


def rope_tables(
    frames: torch.Tensor,
    height: int,
    width: int,
    head_dim: int = 128,
    theta: float = 10000.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [F*height*width, head_dim/2] (float32) for tokens flattened (f, h, w), where `frames`
    holds each frame's absolute time index (a device tensor, so positions never need a host sync).

    Wan's split: the time axis gets head_dim - 4*(head_dim//6) real dims, height and width
    2*(head_dim//6) each; each axis uses frequencies theta^(-2i/axis_dims).
    """
    d_hw = 2 * (head_dim // 6)
    d_t = head_dim - 2 * d_hw
    dev = frames.device

    def freqs(dims: int) -> torch.Tensor:
        return 1.0 / theta ** (torch.arange(0, dims, 2, device=dev, dtype=torch.float64) / dims)

    ang_t = frames.to(torch.float64)[:, None] * freqs(d_t)  # [F, d_t/2]
    ang_h = torch.arange(height, device=dev, dtype=torch.float64)[:, None] * freqs(d_hw)
    ang_w = torch.arange(width, device=dev, dtype=torch.float64)[:, None] * freqs(d_hw)
    F = frames.shape[0]
    ang = torch.cat(
        [
            ang_t[:, None, None, :].expand(F, height, width, -1),
            ang_h[None, :, None, :].expand(F, height, width, -1),
            ang_w[None, None, :, :].expand(F, height, width, -1),
        ],
        dim=-1,
    ).reshape(F * height * width, head_dim // 2)
    return torch.cos(ang).float(), torch.sin(ang).float()


def qk_norm_rope_ref(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor | None,
    wq: torch.Tensor,
    wk: torch.Tensor | None,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    num_heads: int,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Plain torch reference (fp32 math, complex multiply) of `qk_norm_rope`."""
    B, S, D = q.shape
    hd = D // num_heads

    def norm_rope(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()
        y = y.view(B, S, num_heads, hd)
        if cos is not None:
            assert sin is not None
            rot = torch.complex(cos, sin)[None, :, None, :]  # [1, S, 1, hd/2]
            y = torch.view_as_real(torch.view_as_complex(y.reshape(B, S, num_heads, hd // 2, 2)) * rot)
        return y.reshape(B, S, num_heads, hd).to(x.dtype)

    q_out = norm_rope(q, wq)
    if k is None:
        return q_out, None, None
    assert v is not None and wk is not None
    return q_out, norm_rope(k, wk), v.reshape(B, S, num_heads, hd).clone()
