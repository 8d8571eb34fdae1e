"""One whole DiT block of a chunk in ONE persistent Triton kernel (the `tiny` preset's launch-bound case).

An experiment, measured slower than the fast path and not used: see README.md beside this file.

At W3 (tiny, 512x512, 1024 tokens per chunk) every matmul of a block is a few µs of work, so the 13
kernels the fast path launches per block (streamer/model/fast/ops.py: FusedOps) pay ~1.3 µs of idle GPU each
even inside a CUDA graph. Here a fixed grid of at most one program per SM runs the whole block:

  phase A  per 2-D tile of tokens: modulated LayerNorm -> q, k, v projections -> q/k RMSNorm (full
           width) + 3D RoPE; q to a scratch buffer, k and v straight into the cache's staging slot;
  -- grid barrier (every key of the chunk must exist before any query attends) --
  phase B  per (batch, head, query tile, key split): flash attention over [cached K/V + the chunk's
           own], partial outputs + log-sum-exp to scratch;
  -- grid barrier --
  phase C  per token tile: merge the key splits -> output projection -> gated residual -> norm3
           (affine) -> cross-attention q + RMSNorm -> attention over the prompt's K/V -> output
           projection -> residual -> modulated LayerNorm -> FFN (GELU tanh, hidden never stored) ->
           gated residual -> the new residual stream.

Everything after self-attention is row-local, so two barriers suffice. The barrier is a counter +
generation word (self-resetting, so the kernel can be replayed from a CUDA graph); it needs every
program resident at once, hence grid <= SM count. Under TRITON_INTERPRET (CPU tests) the grid is one
program, which walks all tiles of each phase in turn: the same code path, barriers trivially met.

Precision follows the eager block (streamer/model/dit.py): fp32 residual, LayerNorms, modulation and
softmax; matmuls in the weights' dtype with fp32 accumulation; intermediates rounded to the weights'
dtype where eager rounds them (linear outputs, normalised q/k, attention outputs, GELU).
Only the steady state is covered (cache history full, no attention mask), as in the captured graph.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from streamer.model.ops import EAGER_OPS
from streamer_kernels.backend import tl, triton
from streamer_kernels.bias_gelu import _K

if TYPE_CHECKING:
    from streamer.model.cache import KVCache
    from streamer.model.dit import DiTBlock

GELU_K = tl.constexpr(_K)  # gelu_tanh(u) = u * sigmoid(GELU_K * (u + 0.044715 u^3)), see kernels/bias_gelu.py
_LOG2E = 1.4426950408889634


@triton.jit
def _grid_barrier(COUNT, GEN):
    """All programs of the (resident) grid meet here; COUNT returns to 0, GEN advances by one."""
    tl.debug_barrier()  # every thread's stores happen before this program arrives
    n = tl.num_programs(0)
    gen = tl.atomic_add(GEN, 0, sem="acquire", scope="gpu")
    arrived = tl.atomic_add(COUNT, 1, sem="acq_rel", scope="gpu")
    if arrived == n - 1:
        tl.atomic_xchg(COUNT, 0, sem="relaxed", scope="gpu")
        tl.atomic_add(GEN, 1, sem="release", scope="gpu")
    else:
        cur = tl.atomic_add(GEN, 0, sem="acquire", scope="gpu")
        spins = tl.full([], 0, tl.int32)
        # bounded: a grid that is not fully resident would hang the GPU; this gives wrong output instead,
        # which the tests catch (the launcher keeps the grid <= SM count, one program per SM fits)
        while (cur == gen) & (spins < 50_000_000):
            cur = tl.atomic_add(GEN, 0, sem="acquire", scope="gpu")
            spins += 1
    tl.debug_barrier()


@triton.jit
def _wT(W, row0, col0, ld, ROWS: tl.constexpr, COLS: tl.constexpr):
    """W[row0:row0+ROWS, col0:col0+COLS] of a row-major [*, ld] weight, transposed: [COLS, ROWS]."""
    r = row0 + tl.arange(0, ROWS)
    c = col0 + tl.arange(0, COLS)
    return tl.load(W + r[None, :] * ld + c[:, None])


@triton.jit
def _layernorm(x, D: tl.constexpr, eps):
    """(x - mean) / sqrt(var + eps) over the last dim of an fp32 [M, D] tile."""
    mean = tl.sum(x, axis=1) / D
    xc = x - mean[:, None]
    var = tl.sum(xc * xc, axis=1) / D
    return xc * (1.0 / tl.sqrt(var + eps))[:, None]


@triton.jit
def _mod_rows(MOD, b, frame, which, mod_sb, mod_sf, D: tl.constexpr):
    """Per-row modulation vector `which` (0..5) of each row's frame: [M, D] fp32."""
    cols = tl.arange(0, D)
    return tl.load(MOD + b * mod_sb + frame[:, None] * mod_sf + which * D + cols[None, :])


@triton.jit
def _rope(y, COS, SIN, rows, rmask, M: tl.constexpr, HD: tl.constexpr):
    """Rotate pairs (y[2i], y[2i+1]) of one head's [M, HD] tile by the per-token angle tables."""
    ye, yo = tl.split(tl.reshape(y, (M, HD // 2, 2)))
    j = tl.arange(0, HD // 2)
    tab = rows[:, None] * (HD // 2) + j[None, :]
    c = tl.load(COS + tab, mask=rmask[:, None], other=1.0)
    s = tl.load(SIN + tab, mask=rmask[:, None], other=0.0)
    return tl.reshape(tl.join(ye * c - yo * s, ye * s + yo * c), (M, HD))


@triton.jit
def _project_heads_rms(h, W, BIAS, RAW, raw_row, rmask, D: tl.constexpr, H: tl.constexpr, HD: tl.constexpr,
                       PREC: tl.constexpr):  # fmt: skip
    """raw = h @ W.T + bias, one head-wide column chunk at a time, rounded to W's dtype and stored to
    RAW rows ([M, D] at raw_row offsets); returns each row's sum of squares over the full width (fp32)."""
    nn = tl.arange(0, HD)
    ss = tl.zeros([h.shape[0]], dtype=tl.float32)
    for hh in tl.static_range(H):
        acc = tl.dot(h, _wT(W, hh * HD, 0, D, HD, D), input_precision=PREC)
        raw = (acc + tl.load(BIAS + hh * HD + nn)[None, :].to(tl.float32)).to(W.dtype.element_ty)
        rf = raw.to(tl.float32)
        ss += tl.sum(rf * rf, axis=1)
        tl.store(RAW + raw_row[:, None] + hh * HD + nn[None, :], raw, mask=rmask[:, None])
    tl.debug_barrier()  # RAW is read back below by other threads of this program
    return ss


@triton.jit
def _phase_a(
    u, X, MOD, COS, SIN, WQ, BQ, WK, BK, WV, BV, NQW, NKW, QS, RAW, CK, CV,
    S, T, off, mod_sb, mod_sf, ck_sb, ck_sh, ck_ss, cv_sb, cv_sh, cv_ss, eps,
    D: tl.constexpr, H: tl.constexpr, HD: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    tiles = tl.cdiv(S, BM)
    b = u // tiles
    rows = (u % tiles) * BM + tl.arange(0, BM)
    rmask = rows < S
    cols = tl.arange(0, D)
    nn = tl.arange(0, HD)
    dt = WQ.dtype.element_ty
    x = tl.load(X + (b * S + rows)[:, None] * D + cols[None, :], mask=rmask[:, None], other=0.0)
    frame = tl.where(rmask, rows // T, 0)
    shift = _mod_rows(MOD, b, frame, 0, mod_sb, mod_sf, D)
    scale = _mod_rows(MOD, b, frame, 1, mod_sb, mod_sf, D)
    h = (_layernorm(x, D, eps) * (1.0 + scale) + shift).to(dt)
    raw = RAW + b * S * D  # [B, S, D] scratch: pre-norm projections, reused for q then k
    raw_row = rows * D
    # v: straight into the cache's staging slot (no norm, no rotation)
    for hh in tl.static_range(H):
        acc = tl.dot(h, _wT(WV, hh * HD, 0, D, HD, D), input_precision=PREC)
        v = (acc + tl.load(BV + hh * HD + nn)[None, :].to(tl.float32)).to(dt)
        tl.store(CV + b * cv_sb + hh * cv_sh + (off + rows)[:, None] * cv_ss + nn[None, :], v, mask=rmask[:, None])
    # q and k: RMSNorm over the full width needs every head's raw projection first
    ss_q = _project_heads_rms(h, WQ, BQ, raw, raw_row, rmask, D, H, HD, PREC)
    rq = 1.0 / tl.sqrt(ss_q / D + eps)
    for hh in tl.static_range(H):
        r = tl.load(raw + raw_row[:, None] + hh * HD + nn[None, :], mask=rmask[:, None], other=0.0)
        y = (r.to(tl.float32) * rq[:, None]).to(dt) * tl.load(NQW + hh * HD + nn)[None, :]
        y = _rope(y.to(tl.float32), COS, SIN, rows, rmask, BM, HD).to(dt)
        tl.store(QS + ((b * H + hh) * S + rows)[:, None] * HD + nn[None, :], y, mask=rmask[:, None])
    tl.debug_barrier()  # the q raw rows are reused for k
    ss_k = _project_heads_rms(h, WK, BK, raw, raw_row, rmask, D, H, HD, PREC)
    rk = 1.0 / tl.sqrt(ss_k / D + eps)
    for hh in tl.static_range(H):
        r = tl.load(raw + raw_row[:, None] + hh * HD + nn[None, :], mask=rmask[:, None], other=0.0)
        y = (r.to(tl.float32) * rk[:, None]).to(dt) * tl.load(NKW + hh * HD + nn)[None, :]
        y = _rope(y.to(tl.float32), COS, SIN, rows, rmask, BM, HD).to(dt)
        tl.store(CK + b * ck_sb + hh * ck_sh + (off + rows)[:, None] * ck_ss + nn[None, :], y, mask=rmask[:, None])
    tl.debug_barrier()  # the raw rows are reused by the next tile's q


@triton.jit
def _attn_blocks(q, m_i, l_i, acc, K, V, kb0, kb1, nk, k_ss, v_ss, qk_scale,
                 BN: tl.constexpr, HD: tl.constexpr, MASKED: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """Online-softmax (log2 domain) over key blocks kb0..kb1 of one head; K, V point at its key 0."""
    nn = tl.arange(0, HD)
    for kb in range(kb0, kb1):
        keys = kb * BN + tl.arange(0, BN)
        if MASKED:
            kmask = keys < nk
            k = tl.load(K + keys[:, None] * k_ss + nn[None, :], mask=kmask[:, None], other=0.0, cache_modifier=".cg")
            v = tl.load(V + keys[:, None] * v_ss + nn[None, :], mask=kmask[:, None], other=0.0, cache_modifier=".cg")
        else:
            k = tl.load(K + keys[:, None] * k_ss + nn[None, :], cache_modifier=".cg")
            v = tl.load(V + keys[:, None] * v_ss + nn[None, :], cache_modifier=".cg")
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        if MASKED:
            s = tl.where(kmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _phase_b(
    u, QS, CK, CV, OP, LSE, B, S, nk, per_split, nsplit, ck_sb, ck_sh, ck_ss, cv_sb, cv_sh, cv_ss, qk_scale,
    H: tl.constexpr, HD: tl.constexpr, BMA: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Self-attention of one (batch, head, query tile, key split): normalised partial output + LSE."""
    tiles = tl.cdiv(S, BMA)
    sp = u % nsplit
    t = u // nsplit
    qt = t % tiles
    bh = t // tiles  # = b * H + head
    b = bh // H
    hh = bh % H
    rows = qt * BMA + tl.arange(0, BMA)
    rmask = rows < S
    nn = tl.arange(0, HD)
    q = tl.load(QS + (bh * S + rows)[:, None] * HD + nn[None, :], mask=rmask[:, None], other=0.0, cache_modifier=".cg")
    K = CK + b * ck_sb + hh * ck_sh
    V = CV + b * cv_sb + hh * cv_sh
    kb0 = sp * per_split
    kb1 = tl.minimum(kb0 + per_split, tl.cdiv(nk, BN))
    full = tl.minimum(kb1, nk // BN)  # blocks with no key past the end: no masking
    m_i = tl.full([BMA], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BMA], dtype=tl.float32)
    acc = tl.zeros([BMA, HD], dtype=tl.float32)
    m_i, l_i, acc = _attn_blocks(q, m_i, l_i, acc, K, V, kb0, full, nk, ck_ss, cv_ss, qk_scale, BN, HD, False, PREC)
    m_i, l_i, acc = _attn_blocks(
        q, m_i, l_i, acc, K, V, tl.maximum(kb0, full), kb1, nk, ck_ss, cv_ss, qk_scale, BN, HD, True, PREC
    )
    out = acc / l_i[:, None]
    # OP: [nsplit, B, S, H*HD] fp32; LSE: [nsplit, B, H, S] (log2 units, scaled scores)
    tl.store(OP + ((sp * B + b) * S + rows)[:, None] * (H * HD) + hh * HD + nn[None, :], out, mask=rmask[:, None])
    tl.store(LSE + ((sp * B + b) * H + hh) * S + rows, m_i + tl.log2(l_i), mask=rmask)


@triton.jit
def _phase_c(
    u, X, XOUT, MOD, OP, LSE, WO, BO, N3W, N3B, WCQ, BCQ, NCQW, TK, TV, WCO, BCO, W1, B1, W2, B2, RAW,
    B, S, T, L, nsplit, mod_sb, mod_sf, tk_sb, tk_sh, tk_ss, tv_sb, tv_sh, tv_ss, eps, qk_scale,
    D: tl.constexpr, H: tl.constexpr, HD: tl.constexpr, FF: tl.constexpr,
    BMC: tl.constexpr, BL: tl.constexpr, BF: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Everything after self-attention for one token tile (all of it row-local)."""
    tiles = tl.cdiv(S, BMC)
    b = u // tiles
    rows = (u % tiles) * BMC + tl.arange(0, BMC)
    rmask = rows < S
    cols = tl.arange(0, D)
    nn = tl.arange(0, HD)
    dt = WO.dtype.element_ty
    frame = tl.where(rmask, rows // T, 0)
    xrow = (b * S + rows)[:, None] * D + cols[None, :]
    # 1. merge the key splits of each head, output projection (K-chunked by head)
    acc = tl.zeros([BMC, D], dtype=tl.float32)
    for hh in tl.static_range(H):
        m_run = tl.full([BMC], -1e30, dtype=tl.float32)
        w_run = tl.zeros([BMC], dtype=tl.float32)
        y = tl.zeros([BMC, HD], dtype=tl.float32)
        for sp in range(nsplit):
            lse = tl.load(LSE + ((sp * B + b) * H + hh) * S + rows, mask=rmask, other=0.0, cache_modifier=".cg")
            o = tl.load(
                OP + ((sp * B + b) * S + rows)[:, None] * D + hh * HD + nn[None, :],
                mask=rmask[:, None], other=0.0, cache_modifier=".cg",
            )  # fmt: skip
            m_new = tl.maximum(m_run, lse)
            a = tl.exp2(m_run - m_new)
            w = tl.exp2(lse - m_new)
            y = y * a[:, None] + o * w[:, None]
            w_run = w_run * a + w
            m_run = m_new
        y = (y / w_run[:, None]).to(dt)
        acc += tl.dot(y, _wT(WO, 0, hh * HD, D, D, HD), input_precision=PREC)
    sa = (acc + tl.load(BO + cols)[None, :].to(tl.float32)).to(dt).to(tl.float32)
    x = tl.load(X + xrow, mask=rmask[:, None], other=0.0)
    x = x + _mod_rows(MOD, b, frame, 2, mod_sb, mod_sf, D) * sa
    tl.store(XOUT + xrow, x, mask=rmask[:, None])
    # 2. norm3 (affine) -> cross-attention q, RMSNorm over the full width
    h3 = _layernorm(x, D, eps) * tl.load(N3W + cols)[None, :].to(tl.float32) + tl.load(N3B + cols)[None, :].to(
        tl.float32
    )
    raw = RAW + b * S * D
    ss = _project_heads_rms(h3.to(dt), WCQ, BCQ, raw, rows * D, rmask, D, H, HD, PREC)
    rq = 1.0 / tl.sqrt(ss / D + eps)
    # 3. cross-attention per head over the prompt's L keys, output projection K-chunked by head
    acc = tl.zeros([BMC, D], dtype=tl.float32)
    for hh in tl.static_range(H):
        r = tl.load(raw + (rows * D)[:, None] + hh * HD + nn[None, :], mask=rmask[:, None], other=0.0)
        q = (r.to(tl.float32) * rq[:, None]).to(dt) * tl.load(NCQW + hh * HD + nn)[None, :]
        q = q.to(dt)
        m_i = tl.full([BMC], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BMC], dtype=tl.float32)
        o = tl.zeros([BMC, HD], dtype=tl.float32)
        m_i, l_i, o = _attn_blocks(
            q, m_i, l_i, o, TK + b * tk_sb + hh * tk_sh, TV + b * tv_sb + hh * tv_sh, 0, tl.cdiv(L, BL), L,
            tk_ss, tv_ss, qk_scale, BL, HD, True, PREC,
        )  # fmt: skip
        o = (o / l_i[:, None]).to(dt)
        acc += tl.dot(o, _wT(WCO, 0, hh * HD, D, D, HD), input_precision=PREC)
    tl.debug_barrier()  # x below is re-read in another layout; RAW rows are free again
    x = tl.load(XOUT + xrow, mask=rmask[:, None], other=0.0)
    x = x + (acc + tl.load(BCO + cols)[None, :].to(tl.float32)).to(dt).to(tl.float32)
    tl.store(XOUT + xrow, x, mask=rmask[:, None])
    # 4. modulated LayerNorm -> FFN, one hidden chunk at a time (the [M, FF] hidden is never stored)
    shift = _mod_rows(MOD, b, frame, 3, mod_sb, mod_sf, D)
    scale = _mod_rows(MOD, b, frame, 4, mod_sb, mod_sf, D)
    h2 = (_layernorm(x, D, eps) * (1.0 + scale) + shift).to(dt)
    acc = tl.zeros([BMC, D], dtype=tl.float32)
    fj = tl.arange(0, BF)
    for f0 in range(0, FF, BF):
        hid = tl.dot(h2, _wT(W1, f0, 0, D, BF, D), input_precision=PREC)
        hid = (hid + tl.load(B1 + f0 + fj)[None, :].to(tl.float32)).to(dt).to(tl.float32)
        z = tl.minimum(tl.maximum(GELU_K * (hid + 0.044715 * hid * hid * hid), -40.0), 40.0)
        g = (hid * tl.sigmoid(z)).to(dt)
        acc += tl.dot(g, _wT(W2, 0, f0, FF, D, BF), input_precision=PREC)
    y = (acc + tl.load(B2 + cols)[None, :].to(tl.float32)).to(dt).to(tl.float32)
    tl.debug_barrier()
    x = tl.load(XOUT + xrow, mask=rmask[:, None], other=0.0)
    x = x + _mod_rows(MOD, b, frame, 5, mod_sb, mod_sf, D) * y
    tl.store(XOUT + xrow, x, mask=rmask[:, None])
    tl.debug_barrier()  # RAW rows are reused by this program's next tile


@triton.jit
def _block_kernel(
    X, XOUT, MOD, COS, SIN, WQ, BQ, WK, BK, WV, BV, NQW, NKW, QS, RAW, CK, CV, OP, LSE,
    WO, BO, N3W, N3B, WCQ, BCQ, NCQW, TK, TV, WCO, BCO, W1, B1, W2, B2, COUNT, GEN,
    B, S, T, off, L, per_split, nsplit,
    mod_sb, mod_sf, ck_sb, ck_sh, ck_ss, cv_sb, cv_sh, cv_ss, tk_sb, tk_sh, tk_ss, tv_sb, tv_sh, tv_ss,
    eps, qk_scale,
    D: tl.constexpr, H: tl.constexpr, HD: tl.constexpr, FF: tl.constexpr, BM: tl.constexpr, BMA: tl.constexpr,
    BN: tl.constexpr, BMC: tl.constexpr, BL: tl.constexpr, BF: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    for u in range(pid, B * tl.cdiv(S, BM), nprog):
        _phase_a(
            u, X, MOD, COS, SIN, WQ, BQ, WK, BK, WV, BV, NQW, NKW, QS, RAW, CK, CV,
            S, T, off, mod_sb, mod_sf, ck_sb, ck_sh, ck_ss, cv_sb, cv_sh, cv_ss, eps, D, H, HD, BM, PREC,
        )  # fmt: skip
    _grid_barrier(COUNT, GEN)
    nk = off + S
    for u in range(pid, B * H * tl.cdiv(S, BMA) * nsplit, nprog):
        _phase_b(
            u, QS, CK, CV, OP, LSE, B, S, nk, per_split, nsplit, ck_sb, ck_sh, ck_ss, cv_sb, cv_sh, cv_ss,
            qk_scale, H, HD, BMA, BN, PREC,
        )  # fmt: skip
    _grid_barrier(COUNT, GEN)
    for u in range(pid, B * tl.cdiv(S, BMC), nprog):
        _phase_c(
            u, X, XOUT, MOD, OP, LSE, WO, BO, N3W, N3B, WCQ, BCQ, NCQW, TK, TV, WCO, BCO, W1, B1, W2, B2, RAW,
            B, S, T, L, nsplit, mod_sb, mod_sf, tk_sb, tk_sh, tk_ss, tv_sb, tv_sh, tv_ss, eps, qk_scale,
            D, H, HD, FF, BMC, BL, BF, PREC,
        )  # fmt: skip


@dataclass(frozen=True)
class BlockWeights:
    """A DiTBlock's parameters as the kernel reads them (views of the module's tensors, no copies)."""

    wq: Tensor
    bq: Tensor
    wk: Tensor
    bk: Tensor
    wv: Tensor
    bv: Tensor
    norm_q: Tensor
    norm_k: Tensor
    wo: Tensor
    bo: Tensor
    norm3_w: Tensor
    norm3_b: Tensor
    wcq: Tensor
    bcq: Tensor
    norm_cq: Tensor
    wco: Tensor
    bco: Tensor
    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor
    num_heads: int
    eps: float

    @classmethod
    def from_block(cls, block: DiTBlock) -> BlockWeights:
        sa, ca, ffn = block.self_attn, block.cross_attn, block.ffn
        if sa.num_heads * sa.head_dim != block.dim:
            raise ValueError("the megakernel needs num_heads * head_dim == dim (no head-pruned models)")
        p: list[Tensor] = [  # nn.Sequential items type as Module: the FFN's Linears are read as such
            sa.q.weight, sa.q.bias, sa.k.weight, sa.k.bias, sa.v.weight, sa.v.bias, sa.norm_q.weight,
            sa.norm_k.weight, sa.o.weight, sa.o.bias, block.norm3.weight, block.norm3.bias, ca.q.weight,
            ca.q.bias, ca.norm_q.weight, ca.o.weight, ca.o.bias, *_linear(ffn[0]), *_linear(ffn[2]),
        ]  # fmt: skip
        if any(not t.is_contiguous() for t in p):
            raise ValueError("block weights must be contiguous")
        # the 21 tensors fill the tensor fields in order (mypy cannot count a list)
        return cls(*[t.detach() for t in p], num_heads=sa.num_heads, eps=block.eps)  # type: ignore[misc, arg-type]


def _linear(m: torch.nn.Module) -> tuple[Tensor, Tensor]:
    if not isinstance(m, torch.nn.Linear):
        raise TypeError(f"the block's FFN must be Linear layers, got {type(m).__name__}")
    return m.weight, m.bias


@dataclass(frozen=True)
class MegakernelConfig:
    """Tile sizes: bm (phase A rows), bma x bn (attention query x key tiles), bmc (phase C rows),
    bf (FFN hidden chunk), nsplit (key ranges per query tile, merged in phase C)."""

    bm: int = 64
    bma: int = 64
    bn: int = 64
    bmc: int = 32
    bf: int = 64
    nsplit: int = 2
    num_warps: int = 4
    num_stages: int = 2
    programs: int = 0  # 0: one per SM (at most the number of work units)


# the interpreter (CPU tests) needs tl.dot tiles of >= 16 and is fastest with few, small tiles
INTERPRETER_CONFIG = MegakernelConfig(bm=16, bma=16, bn=16, bmc=16, bf=64, nsplit=2, num_warps=1, num_stages=1)


class MegakernelWorkspace:
    """Scratch the kernel needs between phases, allocated once (static buffers for CUDA graphs).

    The barrier words start at zero and return to a valid state after every complete launch.
    """

    def __init__(
        self, batch: int, tokens: int, dim: int, num_heads: int, nsplit: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        hd = dim // num_heads
        self.q = torch.empty(batch, num_heads, tokens, hd, dtype=dtype, device=device)
        # the allocated tensor's device: "cuda" and "cuda:0" must compare equal to x.device
        self.shape = (batch, tokens, dim, num_heads, nsplit, dtype, self.q.device)
        self.raw = torch.empty(batch, tokens, dim, dtype=dtype, device=device)
        self.partial = torch.empty(nsplit, batch, tokens, dim, dtype=torch.float32, device=device)
        self.lse = torch.empty(nsplit, batch, num_heads, tokens, dtype=torch.float32, device=device)
        self.sync = torch.zeros(2, dtype=torch.int32, device=device)  # arrival count, generation


def _interpreted(device: torch.device) -> bool:
    return device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def default_config(device: torch.device | str) -> MegakernelConfig:
    """The tile sizes used when none are given: interpreter-sized on CPU, MegakernelConfig() on a GPU."""
    return INTERPRETER_CONFIG if _interpreted(torch.device(device)) else MegakernelConfig()


def block_modulation(block: DiTBlock, e0: Tensor) -> Tensor:
    """The block's per-frame modulation (modulation + e0): [B, F, 6, dim] fp32, as the kernel takes it."""
    return (block.modulation.to(e0.dtype).unsqueeze(0) + e0).contiguous()


def _check(name: str, t: Tensor, shape: tuple[int, ...], device: torch.device) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must be {shape}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, x on {device}")
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")


def block_megakernel(
    w: BlockWeights,
    x: Tensor,
    mod: Tensor,
    cos: Tensor,
    sin: Tensor,
    cache_k: Tensor,
    cache_v: Tensor,
    stage_offset: int,
    text_k: Tensor,
    text_v: Tensor,
    *,
    out: Tensor | None = None,
    workspace: MegakernelWorkspace | None = None,
    config: MegakernelConfig | None = None,
) -> Tensor:
    """One DiT block over a chunk; returns the new residual [B, S, dim] fp32 (written to `out` if given).

    x: [B, S, dim] fp32 residual; mod: [B, F, 6, dim] fp32 from `block_modulation` (S = F frames of T
    tokens); cos, sin: [S, head_dim/2] fp32 RoPE tables of the chunk; cache_k/v: this layer's cache
    [B, H, slots*T, head_dim] (its first stage_offset keys valid history: steady state only, no mask);
    the chunk's k/v are written at [stage_offset, stage_offset + S), as `KVCache.update` does.
    text_k/v: [B, H, L, head_dim] the prompt's cross-attention K/V. `out` may be x itself.
    """
    dev = x.device
    if x.dim() != 3 or x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(f"x must be a contiguous float32 [B, S, dim] residual, got {tuple(x.shape)} {x.dtype}")
    B, S, D = x.shape
    H = w.num_heads
    hd, ff, L = D // H, w.w1.shape[0], text_k.shape[2]
    dt = w.wq.dtype
    if D & (D - 1) or hd & (hd - 1) or hd < 16 or D % H:
        raise ValueError(f"dim {D} / head_dim {hd} must be powers of two (head_dim >= 16)")
    if tuple(w.wq.shape) != (D, D):
        raise ValueError(f"weights are for dim {w.wq.shape[1]}, x has {D}")
    interp = _interpreted(dev)
    cfg = config or default_config(dev)
    if ff % cfg.bf:
        raise ValueError(f"ffn width {ff} is not a multiple of the hidden chunk {cfg.bf}")
    if mod.dim() != 4 or mod.shape[0] != B or mod.shape[2:] != (6, D) or S % mod.shape[1]:
        raise ValueError(f"mod must be [B, F, 6, {D}] with S % F == 0, got {tuple(mod.shape)}")
    if mod.dtype != torch.float32 or mod.stride(3) != 1 or mod.stride(2) != D:
        raise ValueError("mod must be float32 with contiguous [6, dim] rows (use block_modulation)")
    T = S // mod.shape[1]
    _check("cos", cos, (S, hd // 2), dev)
    _check("sin", sin, (S, hd // 2), dev)
    if cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise ValueError("cos/sin must be float32")
    cos, sin = cos.contiguous(), sin.contiguous()
    for name, t in (("cache_k", cache_k), ("cache_v", cache_v)):
        _check(name, t, (B, H, t.shape[2], hd), dev)
        if t.dtype != dt:
            raise ValueError(f"{name} is {t.dtype}, the weights {dt}")
        if stage_offset + S > t.shape[2]:
            raise ValueError(f"{name} has {t.shape[2]} slots, the chunk needs {stage_offset + S}")
    for name, t in (("text_k", text_k), ("text_v", text_v)):
        _check(name, t, (B, H, L, hd), dev)
        if t.dtype != dt:
            raise ValueError(f"{name} is {t.dtype}, the weights {dt}")
    nk = stage_offset + S
    per_split = triton.cdiv(triton.cdiv(nk, cfg.bn), cfg.nsplit)
    nsplit = triton.cdiv(triton.cdiv(nk, cfg.bn), per_split)  # no empty key range
    ws = workspace
    if ws is None:
        ws = MegakernelWorkspace(B, S, D, H, cfg.nsplit, dt, dev)
    elif ws.shape != (B, S, D, H, cfg.nsplit, dt, dev):
        raise ValueError(f"workspace was built for {ws.shape}, this call needs {(B, S, D, H, cfg.nsplit, dt, dev)}")
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous tensor like x")
    units = max(B * triton.cdiv(S, cfg.bm), B * H * triton.cdiv(S, cfg.bma) * nsplit, B * triton.cdiv(S, cfg.bmc))
    if interp:
        programs = 1  # the interpreter runs programs one after another: a grid barrier needs one
    else:
        sms = torch.cuda.get_device_properties(dev).multi_processor_count
        programs = min(cfg.programs or sms, sms, units)  # all resident at once, or the barrier deadlocks
    bl = max(16, min(64, triton.next_power_of_2(L)))
    prec = "ieee" if dt == torch.float32 else "tf32"
    _block_kernel[(programs,)](
        x, out, mod, cos, sin, w.wq, w.bq, w.wk, w.bk, w.wv, w.bv, w.norm_q, w.norm_k, ws.q, ws.raw,
        cache_k, cache_v, ws.partial, ws.lse, w.wo, w.bo, w.norm3_w, w.norm3_b, w.wcq, w.bcq, w.norm_cq,
        text_k, text_v, w.wco, w.bco, w.w1, w.b1, w.w2, w.b2, ws.sync[0:1], ws.sync[1:2],
        B, S, T, stage_offset, L, per_split, nsplit,
        mod.stride(0), mod.stride(1), *cache_k.stride()[:3], *cache_v.stride()[:3],
        *text_k.stride()[:3], *text_v.stride()[:3],
        w.eps, _LOG2E / math.sqrt(hd),
        D=D, H=H, HD=hd, FF=ff, BM=cfg.bm, BMA=cfg.bma, BN=cfg.bn, BMC=cfg.bmc, BL=bl, BF=cfg.bf, PREC=prec,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return out


def block_megakernel_ref(
    block: DiTBlock,
    x: Tensor,
    e0: Tensor,
    cos: Tensor,
    sin: Tensor,
    cache: KVCache,
    layer: int,
    text_k: Tensor,
    text_v: Tensor,
) -> Tensor:
    """Plain-torch reference: the DiT's own block forward (streamer/model/dit.py) on the same weights.

    e0: [B, F, 6, dim] time projection (the block adds its own modulation); cache: a KVCache whose
    history is full (the kernel's case); writes the chunk's K/V into the cache's staging slot, as the
    kernel does. Returns the new residual [B, S, dim].
    """
    if not cache.history_full:
        raise ValueError("the megakernel covers the steady state only: the cache history must be full")
    mod = block_modulation(block, e0)
    dtype = block.self_attn.q.weight.dtype
    h = EAGER_OPS.modulated_norm(x, mod[:, :, 0], mod[:, :, 1], block.eps, dtype)  # what the previous block hands on
    # the block also normalises its output for whatever follows: given its own shift/scale, unused here
    new_x, _ = block(x, h, mod, (mod[:, :, 0], mod[:, :, 1], dtype), (cos, sin), (text_k, text_v), cache=cache,
                     layer=layer)  # fmt: skip
    return new_x  # type: ignore[no-any-return]
