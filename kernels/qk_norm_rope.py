"""Fused self-attention input prep: q/k RMSNorm over the full width, 3D RoPE, and the KV-cache write.

Math (model.md §1): q and k get an RMSNorm over the whole `dim` (before splitting into heads, weight
only, eps 1e-6); then each 128-wide head is rotated as 64 complex pairs (x[2i], x[2i+1]) by the
per-token angle table; the rotated k and the raw v go straight into the rolling cache's slot. One
program per (token, q|k|v) reads its row once and writes it once: the unfused path makes ~8 passes.

Angle tables: `cos`, `sin` are [S, head_dim/2] float32 for the S tokens of the chunk, the same table
for every head; `streamer.model.rope.rope_tables()` builds them from 3D grid positions the way Wan splits the pairs
(time:height:width = 22:21:21 for head_dim 128).
"""

from __future__ import annotations

import torch

from streamer_kernels.backend import tl, triton


@triton.jit
def _norm_rope_one(
    SRC,
    DST,
    W,
    COS,
    SIN,
    s_idx,
    D,
    hd,
    src_sh,
    dst_sh,
    eps,
    NORM: tl.constexpr,
    APPLY_ROPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One token's row: optional RMSNorm * weight, optional pair rotation, store (head-strided)."""
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    src_off = (cols // hd) * src_sh + cols % hd
    dst_off = (cols // hd) * dst_sh + cols % hd
    x = tl.load(SRC + src_off, mask=mask, other=0.0).to(tl.float32)
    if NORM:
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
        x = x * rstd * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if APPLY_ROPE:
        # pairs (x[2i], x[2i+1]) never straddle heads (hd is even): rotate in registers
        xe, xo = tl.split(tl.reshape(x, (BLOCK // 2, 2)))
        pair = tl.arange(0, BLOCK // 2)
        pmask = pair < D // 2
        tab = s_idx * (hd // 2) + pair % (hd // 2)
        c = tl.load(COS + tab, mask=pmask, other=1.0)
        sn = tl.load(SIN + tab, mask=pmask, other=0.0)
        x = tl.reshape(tl.join(xe * c - xo * sn, xe * sn + xo * c), (BLOCK,))
    tl.store(DST + dst_off, x.to(DST.dtype.element_ty), mask=mask)


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
    hd,
    q_sb,
    q_ss,
    q_sh,
    k_sb,
    k_ss,
    k_sh,
    v_sb,
    v_ss,
    v_sh,
    qo_sb,
    qo_ss,
    qo_sh,
    ko_sb,
    ko_ss,
    ko_sh,
    vo_sb,
    vo_ss,
    vo_sh,
    eps,
    APPLY_ROPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Grid (B*S, 1 or 3): axis 1 picks q (norm+rope), k (norm+rope) or v (copy) of one token."""
    row = tl.program_id(0).to(tl.int64)
    which = tl.program_id(1)
    b = row // S
    s_idx = row % S
    if which == 0:
        _norm_rope_one(
            Q + b * q_sb + s_idx * q_ss,
            QO + b * qo_sb + s_idx * qo_ss,
            WQ,
            COS,
            SIN,
            s_idx,
            D,
            hd,
            q_sh,
            qo_sh,
            eps,
            True,
            APPLY_ROPE,
            BLOCK,
        )
    elif which == 1:
        _norm_rope_one(
            K + b * k_sb + s_idx * k_ss,
            KO + b * ko_sb + s_idx * ko_ss,
            WK,
            COS,
            SIN,
            s_idx,
            D,
            hd,
            k_sh,
            ko_sh,
            eps,
            True,
            APPLY_ROPE,
            BLOCK,
        )
    else:
        _norm_rope_one(
            V + b * v_sb + s_idx * v_ss,
            VO + b * vo_sb + s_idx * vo_ss,
            WK,
            COS,
            SIN,
            s_idx,
            D,
            hd,
            v_sh,
            vo_sh,
            eps,
            False,
            False,
            BLOCK,
        )


def _strides(name: str, t: torch.Tensor, B: int, S: int, H: int, hd: int) -> tuple[int, int, int]:
    """(batch, token, head) strides of a [B, S, D] or [B, S, H, hd] tensor; each head's hd values contiguous."""
    if t.dim() == 3 and tuple(t.shape) == (B, S, H * hd) and t.stride(2) == 1:
        return t.stride(0), t.stride(1), hd
    if t.dim() == 4 and tuple(t.shape) == (B, S, H, hd) and t.stride(3) == 1:
        return t.stride(0), t.stride(1), t.stride(2)
    raise ValueError(
        f"{name} must be [B={B}, S={S}, {H * hd}] or [B, S, {H}, {hd}] with contiguous heads, "
        f"got {tuple(t.shape)} strides {t.stride()}"
    )


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
    heads_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """RMSNorm(q)·wq and RMSNorm(k)·wk over the full width, RoPE on both, v copied.

    q, k, v: [B, S, D] projections (row-contiguous; strided views of a fused qkv output are fine).
    cos, sin: [S, head_dim/2] float32, or None for no rotation (cross-attention's q/k norm).
    k_out, v_out: where to write k and v as [B, S, H, hd] views (any strides with contiguous heads),
    e.g. the cache slot `cache_k[layer, :, :, a:b].transpose(1, 2)`; allocated when not given.
    heads_first: store q as [B, H, S, hd] memory (what SDPA wants); the returned view is still
    [B, S, H, hd]. Returns (q, k_out, v_out); k and v may be None together (q alone).
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
    if heads_first:
        q_out = torch.empty(B, num_heads, S, hd, device=q.device, dtype=q.dtype).transpose(1, 2)
    else:
        q_out = torch.empty(B, S, num_heads, hd, device=q.device, dtype=q.dtype)
    if has_kv:
        assert k is not None and v is not None
        k_out = k_out if k_out is not None else torch.empty(B, S, num_heads, hd, device=q.device, dtype=k.dtype)
        v_out = v_out if v_out is not None else torch.empty(B, S, num_heads, hd, device=q.device, dtype=v.dtype)
        kk, vv, ko, vo = k, v, k_out, v_out
    else:
        kk = vv = ko = vo = q_out
    named = (("q", q), ("k", kk), ("v", vv), ("q_out", q_out), ("k_out", ko), ("v_out", vo))
    strides = [x for n, t in named for x in _strides(n, t, B, S, num_heads, hd)]
    block = triton.next_power_of_2(D)
    _qk_norm_rope_kernel[(B * S, 3 if has_kv else 1)](
        q,
        kk,
        vv,
        wq,
        wk if wk is not None else wq,
        cos if rope else wq,
        sin if rope else wq,
        q_out,
        ko,
        vo,
        S,
        D,
        hd,
        *strides,
        eps,
        APPLY_ROPE=rope,
        BLOCK=block,
        num_warps=8 if block >= 4096 else (4 if block >= 1024 else 2),
    )
    return q_out, (k_out if has_kv else None), (v_out if has_kv else None)


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
