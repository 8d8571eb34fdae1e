"""Flash-attention forward with a stream-K schedule, so that W1's attention fills all 132 SMs of an H100.

q [B, Sq, H, D], k/v [B, Sk, H, D] -> [B, Sq, H, D]: any strides with a contiguous last dim (the KV
cache's [B, H, S, D] memory seen through a transpose works as is), no mask, scale 1/sqrt(D), bf16 or
fp16 in and out, fp32 softmax and accumulation (the online softmax of FlashAttention-2).

Why stream-K: one program per 128-row q-tile gives W1 (1560 q x 9360 k, 12 heads) 13 x 12 = 156 tiles,
and on 132 SMs the second wave runs 24 of them with 108 SMs idle (cuDNN: ~351 TFLOP/s). Here a fixed
grid of P programs (the SM count) splits the T = tiles x key-blocks iterations evenly: program p runs
iterations [p*T//P, (p+1)*T//P) in tile-major order. A tile that one program covers is written out
directly; only the first and last tile of a program can be shared with a neighbour, so each program
writes at most two partial (acc, m, l) results in fp32 to a workspace (17 MB at W1, mostly in L2) and
`_flash_attn_merge_kernel` combines a shared tile's pieces with the log-sum-exp rule.

Key order: softmax does not care in which order a tile visits its key blocks, so each tile starts its
sweep at the first program boundary inside it. A program's first piece then reads key block j at step
j, like every program that started with it, so the programs of one head sweep its K/V together: at W1
with 64-key blocks they read within a window of about 36 of its 147 blocks at once (133 unrotated, a
host-side simulation of the schedule). Scattered sweeps would need all heads' K/V (57 MB at W1, more
than the 50 MB L2) resident, or read it from DRAM once per q-tile.

`inline_merge`: a shared tile's last program to finish merges it, in place of the merge kernel (counted
arrivals). On by default: 462 TFLOP/s at W1 against 444 with the merge kernel (H100, 2026-12-07).

Tried and removed (docs/benchmarks.md, sixteenth session): FlashAttention-3's intra-warpgroup overlap
(each block's P @ V issued before the next block's softmax). Its sm_90a code did run the P @ V HGMMAs
across the softmax's exponentials, but it keeps a second P live beside the scores: the m128n64 configs
that fit its registers ran at 378-382 TFLOP/s at W1 against 420-425 without it, and m128n128 spills.

`FlashConfig` (kernels/flash_config.py) names the tunables (tile sizes, warps, stages, programs per
SM, TMA loads, the inline merge); `kernels/bench_attention.py` times every config in CONFIGS on
the card, and
`$STREAMER_FLASH_CONFIG` picks the one the fast path uses (`default_config()`). TMA (device tensor
descriptors) only compiles on Hopper+; the interpreter runs both paths at tiny sizes. Every config
compiles for sm_90 under Triton 3.6; the spills ptxas reports are noted beside CONFIGS. Triton 3.6's
automatic warp specialisation (`tl.range(..., warp_specialize=True)`) left the sm_90 PTX unchanged,
so no config asks for it.
"""

from __future__ import annotations

import math
from functools import cache

import torch

from streamer_kernels.attention import attention_ref
from streamer_kernels.backend import INTERPRET, tl, triton
from streamer_kernels.flash_config import CONFIG_ENV, CONFIGS, DEFAULT_CONFIG, FlashConfig, default_config

__all__ = [
    "CONFIG_ENV", "CONFIGS", "DEFAULT_CONFIG", "FlashConfig", "FlashUnsupported", "default_config",
    "flash_attention", "flash_attention_ref",
]  # fmt: skip


class FlashUnsupported(RuntimeError):
    """The kernel cannot take these inputs (dtype, head dim, strides): the picker skips it."""


@triton.jit
def _owner(i, total, n_prog):
    """The program whose iteration range [p*T//P, (p+1)*T//P) holds iteration i."""
    return ((i + 1) * n_prog + total - 1) // total - 1


@triton.jit
def _rotation(t0, n_kb, total, n_prog):
    """Offset of the first program start inside the tile whose first iteration is t0 (0 if none)."""
    p = _owner(t0, total, n_prog)
    first = tl.where((p * total) // n_prog == t0, t0, ((p + 1) * total) // n_prog)
    return tl.where(first < t0 + n_kb, first - t0, 0)


@triton.jit
def _load_rows(base, desc, kb, stride, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr):
    """Key block kb of K or V, unmasked (TMA: rows past Sk come back as zeros; plain loads: none may be)."""
    if USE_TMA:
        x = desc.load([kb * BLOCK_N, 0])
    else:
        rows = kb * BLOCK_N + tl.arange(0, BLOCK_N)
        x = tl.load(base + rows[:, None] * stride + tl.arange(0, HEAD_DIM)[None, :])
    return x


@triton.jit
def _softmax(m_i, l_i, s, qk_scale):
    """The online-softmax update for one key block's scores s: (P, the rescale alpha of what came before,
    m, l); m is kept in log2 units of the scaled scores."""
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.math.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    return p, alpha, m_new, l_i


@triton.jit
def _load_kv(kbase, vbase, kd, vd, kb, Sk, sks, svs, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
             USE_TMA: tl.constexpr, MASK: tl.constexpr):  # fmt: skip
    if USE_TMA or not MASK:  # TMA: rows past Sk come back as zeros
        k = _load_rows(kbase, kd, kb, sks, BLOCK_N, HEAD_DIM, USE_TMA)
        v = _load_rows(vbase, vd, kb, svs, BLOCK_N, HEAD_DIM, USE_TMA)
    else:  # zeros, not garbage, past Sk: 0 * NaN would poison the p @ v product
        rows = kb * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.arange(0, HEAD_DIM)
        k = tl.load(kbase + rows[:, None] * sks + cols[None, :], mask=(rows < Sk)[:, None], other=0.0)
        v = tl.load(vbase + rows[:, None] * svs + cols[None, :], mask=(rows < Sk)[:, None], other=0.0)
    return k, v


@triton.jit
def _dot(a, b, acc, F32: tl.constexpr):
    if F32:  # the interpreter multiplies bf16 operands as their raw 16-bit integers: compute in fp32
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def _step(acc, m_i, l_i, q, k, v, kb, Sk, qk_scale, BLOCK_N: tl.constexpr, MASK: tl.constexpr, F32: tl.constexpr):
    """One key block of the online softmax and its P @ V."""
    s = _dot(q, tl.trans(k), None, F32)
    if MASK:
        cols = kb * BLOCK_N + tl.arange(0, BLOCK_N)
        s = tl.where((cols < Sk)[None, :], s, float("-inf"))
    p, alpha, m_i, l_i = _softmax(m_i, l_i, s, qk_scale)
    acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], F32)  # P rounded to bf16 either way
    return acc, m_i, l_i


@triton.jit
def _flash_attn_fwd_kernel(Q, K, V, Out, PO, PML, Arrivals,
                sqb, sqs, sqh, skb, sks, skh, svb, svs, svh, sob, sos, soh,
                H, Sq, Sk, n_mt, n_kb, total, n_prog, qk_scale,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                USE_TMA: tl.constexpr, INLINE_MERGE: tl.constexpr,
                F32: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    start = (pid * total) // n_prog
    end = ((pid + 1) * total) // n_prog
    n_full = Sk // BLOCK_N  # key blocks with no row past Sk
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    it = start
    while it < end:
        tile = it // n_kb
        t0 = tile * n_kb
        kk0 = it - t0
        kk1 = tl.minimum(end - t0, n_kb)
        # this piece [kk0, kk1) never straddles the rotation point (a program boundary), so it is one
        # contiguous range of key blocks after rotating
        rot = _rotation(t0, n_kb, total, n_prog)
        lo = kk0 - rot + tl.where(kk0 < rot, n_kb, 0)
        hi = lo + (kk1 - kk0)
        bh = tile // n_mt
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        rows = (tile % n_mt) * BLOCK_M + offs_m
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqs + offs_d[None, :], mask=(rows < Sq)[:, None], other=0.0)
        kbase = K + b * skb + h * skh
        vbase = V + b * svb + h * svh
        kd = kbase
        vd = vbase
        if USE_TMA:
            kd = tl.make_tensor_descriptor(kbase, [Sk, HEAD_DIM], [sks, 1], [BLOCK_N, HEAD_DIM])
            vd = tl.make_tensor_descriptor(vbase, [Sk, HEAD_DIM], [svs, 1], [BLOCK_N, HEAD_DIM])
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        full_hi = tl.minimum(hi, n_full)
        for kb in range(lo, full_hi):
            k, v = _load_kv(kbase, vbase, kd, vd, kb, Sk, sks, svs, BLOCK_N, HEAD_DIM, USE_TMA, False)
            acc, m_i, l_i = _step(acc, m_i, l_i, q, k, v, kb, Sk, qk_scale, BLOCK_N, False, F32)
        if full_hi < hi:  # the last key block, partly past Sk
            k, v = _load_kv(kbase, vbase, kd, vd, full_hi, Sk, sks, svs, BLOCK_N, HEAD_DIM, USE_TMA, True)
            acc, m_i, l_i = _step(acc, m_i, l_i, q, k, v, full_hi, Sk, qk_scale, BLOCK_N, True, F32)
        if (kk0 == 0) & (kk1 == n_kb):  # the whole tile is ours
            _write_tile(Out, acc, l_i, tile, sob, sos, soh, H, Sq, n_mt, BLOCK_M, HEAD_DIM)
        else:  # slot 0: the program's first piece, 1: its last
            slot = pid * 2 + tl.where(it == start, 0, 1)
            tl.store(PO + slot * BLOCK_M * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc)
            tl.store(PML + slot * 2 * BLOCK_M + offs_m, m_i)
            tl.store(PML + slot * 2 * BLOCK_M + BLOCK_M + offs_m, l_i)
            if INLINE_MERGE:  # the tile's last program to finish merges it: no merge kernel
                p0 = _owner(t0, total, n_prog)
                p1 = _owner(t0 + n_kb - 1, total, n_prog)
                tl.debug_barrier()  # all of this program's stores above, before the release below
                arrived = tl.atomic_add(Arrivals + tile, 1, sem="acq_rel")
                if arrived == p1 - p0:  # the others have all arrived
                    _merge_tile(Out, PO, PML, tile, t0, p0, p1, sob, sos, soh, H, Sq, n_mt, total, n_prog,
                                BLOCK_M, HEAD_DIM, ".cg")  # fmt: skip
        it = t0 + kk1


@triton.jit
def _write_tile(Out, acc, l_i, tile, sob, sos, soh, H, Sq, n_mt, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """A finished tile's rows, acc / l, into Out (rows past Sq left out)."""
    bh = tile // n_mt
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    rows = (tile % n_mt) * BLOCK_M + tl.arange(0, BLOCK_M)
    o_ptrs = Out + b * sob + h * soh + rows[:, None] * sos + tl.arange(0, HEAD_DIM)[None, :]
    tl.store(o_ptrs, (acc / l_i[:, None]).to(Out.dtype.element_ty), mask=(rows < Sq)[:, None])


@triton.jit
def _merge_tile(Out, PO, PML, tile, t0, p0, p1, sob, sos, soh, H, Sq, n_mt, total, n_prog,
                BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, CACHE: tl.constexpr):  # fmt: skip
    """Combine the (acc, m, l) pieces that programs p0..p1 left of a shared tile (log-sum-exp) and write it.

    CACHE: the loads' cache modifier; ".cg" (L2, not the SM's own L1) when the pieces were written
    by other programs of the running kernel."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for p in range(p0, p1 + 1):
        slot = p * 2 + tl.where((p * total) // n_prog >= t0, 0, 1)  # the tile is p's first piece, or its last
        m_p = tl.load(PML + slot * 2 * BLOCK_M + offs_m, cache_modifier=CACHE)
        l_p = tl.load(PML + slot * 2 * BLOCK_M + BLOCK_M + offs_m, cache_modifier=CACHE)
        a_p = tl.load(PO + slot * BLOCK_M * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :], cache_modifier=CACHE)
        m_new = tl.maximum(m, m_p)
        alpha = tl.math.exp2(m - m_new)
        beta = tl.math.exp2(m_p - m_new)
        acc = acc * alpha[:, None] + a_p * beta[:, None]
        l_i = l_i * alpha + l_p * beta
        m = m_new
    _write_tile(Out, acc, l_i, tile, sob, sos, soh, H, Sq, n_mt, BLOCK_M, HEAD_DIM)


@triton.jit
def _flash_attn_merge_kernel(Out, PO, PML, sob, sos, soh, H, Sq, n_mt, n_kb, total, n_prog,
                  BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):  # fmt: skip
    tile = tl.program_id(0)
    t0 = tile * n_kb
    p0 = _owner(t0, total, n_prog)
    p1 = _owner(t0 + n_kb - 1, total, n_prog)
    if p0 != p1:  # shared by programs p0..p1 (ranges are never empty: the launcher keeps P <= T)
        _merge_tile(Out, PO, PML, tile, t0, p0, p1, sob, sos, soh, H, Sq, n_mt, total, n_prog, BLOCK_M, HEAD_DIM, "")


@cache
def _sm_count(device: torch.device) -> int:
    # the interpreter runs programs one after another: a few programs still exercise the split tiles
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


@cache
def _has_split(total: int, n_prog: int, n_kb: int) -> bool:
    """Whether a program boundary falls inside a tile, i.e. the merge kernel has work."""
    return any((p * total // n_prog) % n_kb for p in range(1, n_prog))


def _tma_scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    # device-side tensor descriptors need a little global scratch per launch; from PyTorch's caching
    # allocator it is cheap and, inside CUDA graph capture, comes from the graph's pool
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: FlashConfig) -> None:
    B, _, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[2:] != (H, D):
        raise FlashUnsupported(f"q {tuple(q.shape)} vs k {tuple(k.shape)} / v {tuple(v.shape)}: need [B, S, H, D]")
    if q.shape[1] == 0 or k.shape[1] == 0:
        raise FlashUnsupported("empty query or key sequence")
    if q.dtype not in (torch.bfloat16, torch.float16) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise FlashUnsupported(f"dtypes {q.dtype}/{k.dtype}/{v.dtype}: need one of bf16, fp16")
    if D not in (16, 32, 64, 128, 256):
        raise FlashUnsupported(f"head dim {D}: need a power of two in 16..256")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise FlashUnsupported("the head dim must be contiguous")
    if config.tma and (k.stride(1) % 8 or v.stride(1) % 8 or k.data_ptr() % 16 or v.data_ptr() % 16):
        raise FlashUnsupported("TMA needs 16-byte aligned K/V rows")


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    config: FlashConfig | None = None,
    programs: int | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v per head; [B, S, H, D] layout; `programs` overrides the grid (tests);
    `config` defaults to `default_config()`.

    No host syncs and nothing cached across calls: the output and the split tiles' workspace come from
    PyTorch's caching allocator per call, so the launch can be captured in a CUDA graph.
    """
    config = config or default_config()
    _check(q, k, v, config)
    B, Sq, H, D = q.shape
    Sk = k.shape[1]
    bm, bn = config.block_m, config.block_n
    n_mt, n_kb = triton.cdiv(Sq, bm), triton.cdiv(Sk, bn)
    tiles = B * H * n_mt
    total = tiles * n_kb
    if programs is None:
        programs = tiles if config.per_sm == 0 else config.per_sm * _sm_count(q.device)
    n_prog = max(1, min(programs, total))  # P <= T: no program gets an empty range
    o = torch.empty(B, Sq, H, D, device=q.device, dtype=q.dtype)
    split = _has_split(total, n_prog, n_kb)
    slots = n_prog if split else 1
    po = torch.empty(slots, 2, bm, D, device=q.device, dtype=torch.float32)
    pml = torch.empty(slots, 2, 2, bm, device=q.device, dtype=torch.float32)
    inline = split and config.inline_merge
    # zeroed per call (a memset node in a graph), not kept between calls: nothing for two streams to share.
    # Without the inline merge the kernel never reads it: any tensor will do, and no memset runs.
    arrivals = torch.zeros(tiles, device=q.device, dtype=torch.int32) if inline else pml
    if config.tma:
        triton.set_allocator(_tma_scratch)  # per call: the allocator is per thread (a context variable)
    qk_scale = 1.0 / math.sqrt(D) * 1.4426950408889634  # scores in log2 units: exp2 is the fast path
    _flash_attn_fwd_kernel[(n_prog,)](
        q, k, v, o, po, pml, arrivals,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        H, Sq, Sk, n_mt, n_kb, total, n_prog, qk_scale,
        BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=D, USE_TMA=config.tma, INLINE_MERGE=inline, F32=INTERPRET,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    if split and not inline:
        _flash_attn_merge_kernel[(tiles,)](
            o, po, pml, o.stride(0), o.stride(1), o.stride(2), H, Sq, n_mt, n_kb, total, n_prog,
            BLOCK_M=bm, HEAD_DIM=D, num_warps=config.num_warps,
        )  # fmt: skip
    return o


def flash_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The reference: softmax attention in fp32 (the picker's `attention_ref`), left in fp32."""
    return attention_ref(q, k, v, out_dtype=torch.float32)
