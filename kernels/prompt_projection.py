"""The cross-attention's o projection with a short prompt's values folded in: P @ U instead of O @ W^T.

A head's attention output is a weighted sum of its values, O_h = sum_j p_hj v_hj, and the o projection
is linear, so

    O W^T + b = sum_h O_h W_h^T + b = sum_(h, j) p_hj (v_hj W_h^T) + b = P @ U + b

with W_h the projection's columns of head h and U_hj = v_hj W_h^T, one row of the output width per
head and key. U depends on the prompt only: `DiT.cross_kv` makes it with the K/V
(`CrossAttnKV.u` for the first F keys, `fold_values` in streamer/model/cache.py). For a prompt whose
last distinct key is n < F (kernels/prompt_attention.py) the product's inner size is H x (n + 1),
rounded up to steps of KEY_STEP keys per head, instead of the model width: 12 x 32 = 384 against 1536
for W1's default prompt (n = 6), 12 x 64 for one of 40 tokens. The W1 profile had
the cross-attention's o projection at about 1 ms of a bf16 chunk (60 matmuls of 1560 x 1536 x 1536).

Per batch row, the device decides (no host sync, so a captured graph serves prompts of any length):
starts[b] < F, P [B, S, H, F] (from `prompt_attention(..., probs=P)`) times U [B, H, F, N], the
(head, key step) pairs in one pipelined loop; otherwise the plain projection, O [B, S, K] times W [N, K]^T.
Bias added, fp32 accumulation, output in O's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamer_kernels.backend import INTERPRET, tl, triton
from streamer_kernels.flash_attention import _dot

__all__ = ["KEY_STEP", "prompt_projection", "prompt_projection_ref"]

# Keys per step of the folded product. A head's steps past its prompt's key n are not read: the product's
# inner size is H x (n // KEY_STEP + 1) x KEY_STEP, whatever the fold's F.
KEY_STEP = 32


@triton.jit
def _prompt_proj_kernel(P, U, Attn, W, Bias, Out, Starts,
                        spb, sps, sub, suj, sob, sos, swn, sxb, sxs,
                        Sq, N, K,
                        HEADS: tl.constexpr, FOLD_KEYS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        KEY_STEP: tl.constexpr, BLOCK_K: tl.constexpr, F32: tl.constexpr):  # fmt: skip
    mt = tl.program_id(0)
    nt = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n = tl.load(Starts + b)  # keys 0..n of each head are the distinct ones
    rows = mt * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = nt * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < Sq
    col_ok = cols < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if n < FOLD_KEYS:  # P @ U over each head's key steps that hold keys 0..n
        # One flat loop over (head, step) pairs, each step KEY_STEP contiguous keys loaded unmasked along
        # them: the pipeliner copies both tiles in 16-byte pieces under the previous product. (Nested
        # loops per head left each head's loads waiting in turn, and keys masked one by one made every
        # P load a 2-byte one: 24 and 16.6 us a call at W1, H100, against cuBLAS's 12.8.)
        steps = n // KEY_STEP + 1
        for t in range(0, HEADS * steps):
            h = t // steps
            js = h * FOLD_KEYS + (t - h * steps) * KEY_STEP + tl.arange(0, KEY_STEP)  # flat (head, key) index
            p = tl.load(P + b * spb + rows[:, None] * sps + js[None, :], mask=row_ok[:, None], other=0.0)
            u = tl.load(U + b * sub + js[:, None] * suj + cols[None, :], mask=col_ok[None, :], other=0.0)
            acc = _dot(p, u, acc, F32)
    else:  # the plain projection: O @ W^T
        for kb in range(0, tl.cdiv(K, BLOCK_K)):
            ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            a = tl.load(Attn + b * sob + rows[:, None] * sos + ks[None, :], mask=row_ok[:, None] & (ks < K)[None, :],
                        other=0.0)  # fmt: skip
            w = tl.load(W + cols[:, None] * swn + ks[None, :], mask=col_ok[:, None] & (ks < K)[None, :], other=0.0)
            acc = _dot(a, tl.trans(w), acc, F32)
    acc += tl.load(Bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out_ptrs = Out + b * sxb + rows[:, None] * sxs + cols[None, :]
    tl.store(out_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def prompt_projection(
    probs: torch.Tensor,
    u: torch.Tensor,
    o: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    starts: torch.Tensor,
    block_m: int = 128,
    block_n: int = 128,
) -> torch.Tensor:
    """[B, S, N]: per batch row b, probs[b] @ u[b] + bias where starts[b] < F, else o[b] @ weight^T + bias.

    probs [B, S, H, F] and o [B, S, H*D] from `prompt_attention(..., probs=probs)` (each batch row's
    unused one is never read; of a folded row's weights, keys 0..starts[b] and zeros to the end of that
    key's step of KEY_STEP, as that kernel writes them, times finite values of u); u [B, H, F, N]
    (`CrossAttnKV.u`); weight [N, H*D], bias [N] (the Linear). probs and u contiguous past their batch
    dim; F a multiple of KEY_STEP."""
    B, Sq, H, fold = probs.shape
    N, K = weight.shape
    if u.shape != (B, H, fold, N) or o.shape != (B, Sq, K) or bias.shape != (N,) or starts.shape != (B,):
        raise ValueError(
            f"probs {tuple(probs.shape)}, u {tuple(u.shape)}, o {tuple(o.shape)}, weight {tuple(weight.shape)}, "
            f"bias {tuple(bias.shape)}, starts {tuple(starts.shape)}"
        )
    if any(t.stride(-1) != 1 for t in (probs, u, o, weight)) or probs.stride(2) != fold or (
        u.stride(1) != fold * N or u.stride(2) != N
    ):
        raise ValueError("probs and u need contiguous [S, H, F] and [H, F, N], o and weight contiguous last dims")
    if fold % KEY_STEP:
        raise ValueError(f"F = {fold} must be a multiple of {KEY_STEP}")
    out = torch.empty(B, Sq, N, device=o.device, dtype=o.dtype)
    bm = min(block_m, max(16, triton.next_power_of_2(Sq)))
    grid = (triton.cdiv(Sq, bm), triton.cdiv(N, block_n), B)
    _prompt_proj_kernel[grid](
        probs, u, o, weight, bias, out, starts.to(torch.int32),
        probs.stride(0), probs.stride(1), u.stride(0), u.stride(2),
        o.stride(0), o.stride(1), weight.stride(0), out.stride(0), out.stride(1),
        Sq, N, K,
        HEADS=H, FOLD_KEYS=fold, BLOCK_M=bm, BLOCK_N=block_n, KEY_STEP=KEY_STEP, BLOCK_K=64,
        F32=INTERPRET or o.dtype == torch.float32, num_warps=8 if bm >= 128 else 4, num_stages=3,
    )  # fmt: skip
    return out


def prompt_projection_ref(
    probs: torch.Tensor, u: torch.Tensor, o: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
    starts: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """The reference in fp32: what `prompt_projection` computes, row by row."""
    fold = probs.shape[-1]
    keep = torch.arange(fold, device=starts.device).view(1, -1) <= starts.view(-1, 1)  # [B, F]: keys 0..n
    probs = torch.where(keep[:, None, None, :], probs.float(), 0.0)
    folded = torch.einsum("bshj,bhjn->bsn", probs, u.float()) + bias.float()
    plain = F.linear(o.float(), weight.float(), bias.float())
    return torch.where((starts < fold).view(-1, 1, 1), folded, plain)
