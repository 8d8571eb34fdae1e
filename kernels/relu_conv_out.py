"""ReLU then a 3x3 conv to a few channels in one pass: the end of TAEHV's decoder (64 -> 3 at full size).

    out = conv2d(relu(x), w, b, padding=1)    x: [T, C, H, W] channels_last, C a power of two in 16..256;
                                              w: [O, C, 3, 3] with O <= 16; out: [T, O, H, W] NCHW-contiguous

Why: the decoder's last transposed conv writes W1's [4, 64, 480, 832] (204 MB in bf16). cuDNN fuses a
ReLU after forward convolutions only, so it took its own read-and-write pass (0.14 ms of a W1 chunk),
and the 3-channel conv then read the tensor a second time. Here each program takes BLOCK_W pixels of
one row and sums the nine taps as [BLOCK_W, C] x [C, 16] tensor-core products over the ReLU'd input:
the input is read once from memory (the neighbouring rows' re-reads hit L2) and the ReLU'd tensor is
never written. fp32 accumulation, output rounded once to the input's dtype; NCHW output, the layout
the frame conversion reads (kernels/frame_convert.py), so no layout copy follows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamer_kernels.backend import INTERPRET, tl, triton

_CO_PAD = 16  # a tensor-core product's smallest N
_BLOCK_W = 128


@triton.jit
def _relu_conv3x3_kernel(X, Wt, Bias, Out, H, W, sxt, sxh, sxw, sot, soc, soh,
                         CIN: tl.constexpr, COUT: tl.constexpr, CO_PAD: tl.constexpr, BLOCK_W: tl.constexpr,
                         F32: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    t = (row // H).to(tl.int64)
    y = row % H
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    ci = tl.arange(0, CIN)
    co = tl.arange(0, CO_PAD)
    acc = tl.zeros([BLOCK_W, CO_PAD], tl.float32)
    for dy in tl.static_range(3):
        yy = y + dy - 1
        yv = yy + 0 * cols  # a vector: the interpreter turns (bool vector) & (bool scalar) into integers
        row_ok = (yv >= 0) & (yv < H)
        for dx in tl.static_range(3):
            xx = cols + dx - 1
            ok = (xx >= 0) & (xx < W) & row_ok  # zero padding: masked pixels load 0, and relu(0) = 0
            a = tl.load(X + t * sxt + yy * sxh + xx[:, None] * sxw + ci[None, :], mask=ok[:, None], other=0.0)
            # ReLU in fp32 (exact for any input dtype; the interpreter compares bf16 as raw integers)
            a = tl.maximum(a.to(tl.float32), 0.0)
            w = tl.load(Wt + ((dy * 3 + dx) * CIN + ci[:, None]) * CO_PAD + co[None, :])  # [CIN, CO_PAD]
            if F32:  # fp32 in, or the interpreter (it multiplies bf16 as raw integers): an IEEE fp32 product
                acc = tl.dot(a, w.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a.to(w.dtype), w, acc)
    acc += tl.load(Bias + co).to(tl.float32)[None, :]
    o_ptrs = Out + t * sot + co[None, :] * soc + y * soh + cols[:, None]
    mask = (cols < W)[:, None] & (co < COUT)[None, :]
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)


def fits(in_channels: int, out_channels: int) -> bool:
    """Whether the kernel takes a conv of these widths: C a power of two in 16..256, O at most 16."""
    c = in_channels
    return 16 <= c <= 256 and not c & (c - 1) and 0 < out_channels <= _CO_PAD


def pack_weight(w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """[O, C, 3, 3] (+ bias [O]) -> the kernel's taps [9, C, 16] in `dtype` and bias [16] in fp32, zero-padded."""
    o, c = w.shape[:2]
    if w.shape[2:] != (3, 3) or o > _CO_PAD:
        raise ValueError(f"need a 3x3 conv to at most {_CO_PAD} channels, got weight {tuple(w.shape)}")
    taps = torch.zeros(9, c, _CO_PAD, dtype=dtype, device=w.device)
    taps[:, :, :o] = w.permute(2, 3, 1, 0).reshape(9, c, o).to(dtype)
    bias = torch.zeros(_CO_PAD, dtype=torch.float32, device=w.device)
    if b is not None:
        bias[:o] = b.float()
    return taps, bias


def relu_conv3x3(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, out_channels: int) -> torch.Tensor:
    """conv2d(relu(x), w, b, padding=1) with (taps, bias) = pack_weight(w, b, x.dtype); NCHW output."""
    if x.dim() != 4 or x.stride(1) != 1 or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"x must be a channels_last [T, C, H, W] tensor, got strides {x.stride()}")
    T, C, H, W = x.shape
    if not fits(C, out_channels) or taps.shape != (9, C, _CO_PAD) or taps.dtype != x.dtype:
        raise ValueError(f"x has {C} channels ({x.dtype}); taps {tuple(taps.shape)} ({taps.dtype}) do not fit")
    out = torch.empty(T, out_channels, H, W, dtype=x.dtype, device=x.device)
    grid = (T * H, triton.cdiv(W, _BLOCK_W))
    _relu_conv3x3_kernel[grid](
        x, taps, bias, out, H, W, x.stride(0), x.stride(2), x.stride(3), out.stride(0), out.stride(1), out.stride(2),
        CIN=C, COUT=out_channels, CO_PAD=_CO_PAD, BLOCK_W=_BLOCK_W, F32=INTERPRET or x.dtype == torch.float32,
        num_warps=4,
    )  # fmt: skip
    return out


def relu_conv3x3_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Plain torch reference: fp32 conv of the ReLU'd input."""
    return F.conv2d(x.float().relu(), w.float(), None if b is None else b.float(), padding=1)
