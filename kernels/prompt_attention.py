"""Cross-attention to a prompt whose last keys are copies of one key: each run of copies counted once.

Wan's DiT pads the text encoder's states with zeros to `text_len` (512) tokens before its text
embedding, as upstream does, and its cross-attention attends to all 512. Every padding token then
has the same key and value. A run of c identical keys scores the same c times, so in the softmax it
equals that key once with its weight multiplied by c: log2(c) added to its score in log2 units. The
result is the attention over all the keys, computed over the distinct ones only (a prompt of 20
tokens: 21 keys instead of 512). The W1 profile had cuDNN's cross-attention at 1.07-1.11 ms per chunk
(60 calls over 512 keys, H100, 2026-12-07).

`tail_start` (streamer/model/cache.py) finds where the trailing run of identical (key, value) rows
starts, on the device and exactly (bitwise equal rows only), when a prompt's K/V are made.
`prompt_attention` reads it from the device, so a new prompt of another length needs no recapture of
a CUDA graph. The run is found, not assumed: any keys the model makes work, and without a repeated
tail (a run of one) nothing is skipped.

q [B, Sq, H, D], k/v [B, L, H, D] (any strides, contiguous last dim), starts [B] int32 ->
[B, Sq, H, D] in q's dtype; fp32 softmax and accumulation. One program per q-tile and head. 64-row
tiles by default: at W1 (H100, 2026-12-07) 39.8 against 44.1 us with 128 rows for a 77-token prompt,
52.7 against 57.1 for 512 tokens, 14.7 against 14.1 for 7 (docs/benchmarks.md). The fast path calls
it through `AttentionPicker.prompt` or `prompt_projected`, which check it first.
"""

from __future__ import annotations

import math

import torch

from streamer_kernels.attention import attention_ref
from streamer_kernels.backend import INTERPRET, tl, triton
from streamer_kernels.flash_attention import _dot, _load_kv, _softmax
from streamer_kernels.prompt_projection import KEY_STEP

__all__ = ["prompt_attention", "prompt_attention_ref"]


@triton.jit
def _scores(q, k, keys, n, bonus, F32: tl.constexpr):
    """q k^T for keys `keys` of 0..n, key n counted for its copies (bonus), keys past n at -inf."""
    s = _dot(q, tl.trans(k), None, F32)
    s = tl.where((keys == n)[None, :], s + bonus, s)
    return tl.where((keys <= n)[None, :], s, float("-inf"))


@triton.jit
def _prompt_attn_kernel(Q, K, V, Out, Probs, Starts,
                        sqb, sqs, sqh, skb, sks, skh, svb, svs, svh, sob, sos, soh, spb, sps, sph,
                        Sq, L, qk_scale,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                        FOLD_KEYS: tl.constexpr, FOLD_BLOCK: tl.constexpr, KEY_STEP: tl.constexpr,
                        F32: tl.constexpr):  # fmt: skip
    mt = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    n = tl.load(Starts + b)  # keys [n, L) are copies of key n: keys 0..n are the distinct ones
    rows = mt * BLOCK_M + tl.arange(0, BLOCK_M)
    cols_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqs + cols_d[None, :], mask=(rows < Sq)[:, None], other=0.0)
    # key n stands for its L - n copies: its weight times L - n, i.e. log2(L - n) more in log2 units;
    # _softmax scales the raw scores by qk_scale, so the bonus goes in before that scale
    bonus = tl.log2((L - n).to(tl.float32)) / qk_scale
    kbase = K + b * skb + h * skh
    vbase = V + b * svb + h * svh
    if n < FOLD_KEYS:  # (FOLD_KEYS 0: never) the weights alone, for the folded o projection (prompt_projection)
        keys = tl.arange(0, FOLD_BLOCK)  # keys 0..n, all in one block of FOLD_BLOCK >= FOLD_KEYS
        k = tl.load(kbase + keys[:, None] * sks + cols_d[None, :], mask=(keys <= n)[:, None], other=0.0)
        s = _scores(q, k, keys, n, bonus, F32)
        p, _, _, l_i = _softmax(tl.full([BLOCK_M], float("-inf"), tl.float32), tl.zeros([BLOCK_M], tl.float32), s,
                                qk_scale)  # fmt: skip
        # the key steps that prompt_projection reads: keys 0..n, then zeros to the end of n's step
        written = (n // KEY_STEP + 1) * KEY_STEP
        p_ptrs = Probs + b * spb + h * sph + rows[:, None] * sps + keys[None, :]
        tl.store(p_ptrs, (p / l_i[:, None]).to(Probs.dtype.element_ty),
                 mask=(rows < Sq)[:, None] & (keys < written)[None, :])  # fmt: skip
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for kb in range(0, n // BLOCK_N + 1):  # keys 0..n: the rows past n load as zeros
            k, v = _load_kv(kbase, vbase, kbase, vbase, kb, n + 1, sks, svs, BLOCK_N, HEAD_DIM, False, True)
            keys = kb * BLOCK_N + tl.arange(0, BLOCK_N)
            s = _scores(q, k, keys, n, bonus, F32)
            p, alpha, m_i, l_i = _softmax(m_i, l_i, s, qk_scale)
            acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], F32)
        o_ptrs = Out + b * sob + h * soh + rows[:, None] * sos + cols_d[None, :]
        tl.store(o_ptrs, (acc / l_i[:, None]).to(Out.dtype.element_ty), mask=(rows < Sq)[:, None])


def prompt_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    starts: torch.Tensor,
    block_m: int = 64,
    block_n: int = 64,
    probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v per head, [B, S, H, D] layout, where keys/values [starts[b], L) of
    batch row b are copies of row starts[b] (streamer.model.cache.tail_start); those are not read.

    probs [B, S, H, F] (F a multiple of KEY_STEP): for a batch row whose distinct keys fit in F
    (starts[b] = n < F), the softmax weights go there instead, for keys 0..n (key n weighted for its
    copies) and as zeros from n + 1 to the end of n's step of KEY_STEP keys; that row of the returned
    tensor is left unwritten: `prompt_projection` folds the weights into the o projection. The other
    rows get the attention output as without `probs`."""
    B, Sq, H, D = q.shape
    L = k.shape[1]
    if k.shape != v.shape or k.shape[0] != B or k.shape[2:] != (H, D) or starts.shape != (B,):
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, starts {tuple(starts.shape)}")
    if D not in (16, 32, 64, 128, 256) or q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError(f"head dim {D} must be a power of two in 16..256 and contiguous")
    if q.dtype not in (torch.bfloat16, torch.float16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"dtypes {q.dtype}/{k.dtype}/{v.dtype}: need one of bf16, fp16, fp32")
    fold = 0 if probs is None else probs.shape[-1]
    if probs is not None and (probs.shape[:3] != (B, Sq, H) or fold % KEY_STEP or probs.stride(-1) != 1):
        raise ValueError(f"probs {tuple(probs.shape)}: need [{B}, {Sq}, {H}, a multiple of {KEY_STEP}], contiguous last dim")
    o = torch.empty(B, Sq, H, D, device=q.device, dtype=q.dtype)
    p = o if probs is None else probs  # (unread without probs: FOLD_KEYS 0)
    bm = min(block_m, max(16, triton.next_power_of_2(Sq)))
    grid = (triton.cdiv(Sq, bm), H, B)
    _prompt_attn_kernel[grid](
        q, k, v, o, p, starts.to(torch.int32),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        p.stride(0), p.stride(1), p.stride(2),
        Sq, L, 1.0 / math.sqrt(D) * 1.4426950408889634,
        BLOCK_M=bm, BLOCK_N=block_n, HEAD_DIM=D, FOLD_KEYS=fold, FOLD_BLOCK=max(16, triton.next_power_of_2(fold)),
        KEY_STEP=KEY_STEP, F32=INTERPRET or q.dtype == torch.float32,
        num_warps=8 if bm >= 128 else 4, num_stages=2,
    )  # fmt: skip
    return o


def prompt_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The reference: plain softmax attention over every key, repeated ones included, in fp32."""
    return attention_ref(q, k, v, out_dtype=torch.float32)
