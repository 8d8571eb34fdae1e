"""The fast path's KV-cache commit: each layer's staged frame copied into the slot its `dest` names, the
keys' time band rotated on the way, K and V in one pass.

Why a kernel: `k[layer, :, :, dest] = k[:, :, :, src]` indexes two dimensions with tensors, so torch runs
it as `index_put`, about three times a plain copy of the same bytes; with the rotated band written again
for adaptive sinks, W1's commit took 0.97 ms per chunk (three `index_put`, H100 profile, 2026-12-06)
for 288 MB of K and V. Here a program copies BLOCK_T tokens x D of one (K|V, layer, batch x head),
reading dest[layer] on the device (no host read, so a captured graph replays it), and rotates each
key pair (x[2i], x[2i+1]) by that layer's (cos, sin) in registers. Cos 1 and sin 0 make the rotation a
copy: exact for finite values (x * 1 - y * 0 = x), which is what values and the pairs past the time
band get.
"""

from __future__ import annotations

import torch

from streamer_kernels.backend import tl, triton

_BLOCK_T = 32


@triton.jit
def _commit_kernel(
    KV, DEST, COS, SIN, src, n_layers, groups, tokens, slot_elems, D: tl.constexpr, BLOCK_T: tl.constexpr
):
    lk = tl.program_id(2)  # 0 .. 2L-1: the keys' layers, then the values'
    layer = lk % n_layers
    base = (lk * groups + tl.program_id(1)).to(tl.int64) * slot_elems
    dest = tl.load(DEST + layer).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs = rows[:, None] * D + tl.arange(0, D)[None, :]
    mask = rows[:, None] < tokens
    x = tl.load(KV + base + src * tokens * D + offs, mask=mask, other=0.0).to(tl.float32)
    xe, xo = tl.split(tl.reshape(x, (BLOCK_T, D // 2, 2)))
    # values are copied: cos 1 and sin 0 for them, without a branch (exact for finite tables)
    is_k = (lk < n_layers).to(tl.float32)
    pair = layer * (D // 2) + tl.arange(0, D // 2)
    c = (tl.load(COS + pair) * is_k + (1.0 - is_k))[None, :]
    s = (tl.load(SIN + pair) * is_k)[None, :]
    y = tl.reshape(tl.join(xe * c - xo * s, xe * s + xo * c), (BLOCK_T, D))
    tl.store(KV + base + dest * tokens * D + offs, y.to(KV.dtype.element_ty), mask=mask)


def _check(storage: torch.Tensor, dest: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_tokens: int) -> None:
    if storage.dim() != 6 or storage.shape[0] != 2 or not storage.is_contiguous():
        raise ValueError(f"storage must be a contiguous [2, L, B, H, slots*T, D] tensor, got {tuple(storage.shape)}")
    n_layers, d = storage.shape[1], storage.shape[-1]
    if storage.shape[4] % slot_tokens or d % 2:
        raise ValueError(f"{storage.shape[4]} tokens are not whole slots of {slot_tokens}, or D={d} is odd")
    if dest.shape != (n_layers,) or cos.shape != (n_layers, d // 2) or sin.shape != cos.shape:
        raise ValueError(f"dest [{n_layers}] and cos/sin [{n_layers}, {d // 2}] expected")


def commit_frame(
    storage: torch.Tensor, src: int, dest: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_tokens: int
) -> None:
    """storage [2, L, B, H, slots*T, D] (keys, values) in place: for each layer l, slot dest[l] <- slot
    src, the keys' pairs rotated by cos[l], sin[l] ([L, D/2] float32; ones and zeros copy)."""
    _check(storage, dest, cos, sin, slot_tokens)
    _, n_layers, b, h, st, d = storage.shape
    if d & (d - 1):
        raise ValueError(f"head dim {d} is not a power of two")
    cs, sn = cos.float().contiguous(), sin.float().contiguous()  # no copies for float32 tables
    grid = (triton.cdiv(slot_tokens, _BLOCK_T), b * h, 2 * n_layers)
    _commit_kernel[grid](storage, dest, cs, sn, src, n_layers, b * h, slot_tokens, st * d, D=d, BLOCK_T=_BLOCK_T)


def commit_frame_ref(
    storage: torch.Tensor, src: int, dest: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_tokens: int
) -> None:
    """The same in plain torch (advanced indexing), the kernels' reference."""
    _check(storage, dest, cos, sin, slot_tokens)
    frames = storage.unflatten(4, (-1, slot_tokens))  # [2, L, B, H, slots, T, D]
    layers = torch.arange(storage.shape[1], device=storage.device)
    staged = frames[:, :, :, :, src].float()  # [2, L, B, H, T, D]
    pairs = staged.unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos.float()[:, None, None, None, :], sin.float()[:, None, None, None, :]
    k = torch.stack((a[0] * c - b[0] * s, a[0] * s + b[0] * c), dim=-1).flatten(-2)
    frames[0, layers, :, :, dest] = k.to(storage.dtype)
    frames[1, layers, :, :, dest] = staged[1].to(storage.dtype)
