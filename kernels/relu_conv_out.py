"""ReLU then a 3x3 conv to a few channels in one pass: the end of TAEHV's decoder (64 -> 3 at full size).

    out = conv2d(relu(x), w, b, padding=1)    x: [T, C, H, W] channels_last, C a power of two in 16..256;
                                              w: [O, C, 3, 3] with O <= 16; out: [T, O, H, W] NCHW-contiguous

Why: the decoder's last transposed conv writes W1's [4, 64, 480, 832] (204 MB in bf16). cuDNN fuses a
ReLU after forward convolutions only, so it took its own read-and-write pass (0.14 ms of a W1 chunk),
and the 3-channel conv then read the tensor a second time. Here each program makes ROWS output rows of
BLOCK_W pixels, walking its ROWS + 2 input rows once, and sums the nine taps as [BLOCK_W, C] x [C, 16]
tensor-core products over the ReLU'd input. The input comes from memory once (a pixel is loaded
3 (ROWS + 2) / ROWS times, mostly from L2; the first version, one row per program, loaded it 9 times
and took 0.31 ms at W1 on an H100), and the ReLU'd tensor is
never written. fp32 accumulation, output rounded once to the input's dtype; NCHW output, the layout
the frame conversion reads (kernels/frame_convert.py), so no layout copy follows.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from streamer_kernels.backend import tl, triton

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # read after streamer_kernels.backend chose
_CO_PAD = 16  # a tensor-core product's smallest N
_BLOCK_W = 128
ROWS = 8  # output rows per program (relu_conv3x3)
STAGES = 2  # pipelined row loads through shared memory: 2 stages leave room for 2 programs per SM


@triton.jit
def _row_taps(acc, x_row, Wt, dy: tl.constexpr, ci, co, CIN: tl.constexpr, CO_PAD: tl.constexpr, F32: tl.constexpr,
              dx: tl.constexpr):  # fmt: skip
    """acc += relu(x_row) @ W[dy, dx]: one tap of one input row into one output row's accumulator."""
    w = tl.load(Wt + ((dy * 3 + dx) * CIN + ci[:, None]) * CO_PAD + co[None, :])  # [CIN, CO_PAD]
    if F32:  # fp32 in, or the interpreter (it multiplies bf16 as raw integers): an IEEE fp32 product
        return tl.dot(x_row, w.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(x_row.to(w.dtype), w, acc)


@triton.jit
def _relu_conv3x3_kernel(X, Wt, Bias, Out, H, W, sxt, sxh, sxw, sot, soc, soh,
                         CIN: tl.constexpr, COUT: tl.constexpr, CO_PAD: tl.constexpr, BLOCK_W: tl.constexpr,
                         ROWS: tl.constexpr, F32: tl.constexpr):  # fmt: skip
    # A program makes ROWS output rows of BLOCK_W pixels. It walks the ROWS + 2 input rows once: each
    # input row is loaded (three column shifts) and ReLU'd once, and feeds the three output rows it
    # touches (tap rows 2, 1, 0 of rows y - 1, y, y + 1), so a pixel is read 3 (ROWS + 2) / ROWS times,
    # not 9. Output row y is done once input row y + 1 has been added: it is stored then.
    n_blocks = tl.cdiv(H, ROWS)
    t = (tl.program_id(0) // n_blocks).to(tl.int64)
    y0 = (tl.program_id(0) % n_blocks) * ROWS
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    ci = tl.arange(0, CIN)
    co = tl.arange(0, CO_PAD)
    bias = tl.load(Bias + co).to(tl.float32)[None, :]
    out_mask = (cols < W)[:, None] & (co < COUT)[None, :]
    acc_up = tl.zeros([BLOCK_W, CO_PAD], tl.float32)  # output row yy - 1
    acc_mid = tl.zeros([BLOCK_W, CO_PAD], tl.float32)  # output row yy
    acc_down = tl.zeros([BLOCK_W, CO_PAD], tl.float32)  # output row yy + 1
    for r in range(ROWS + 2):
        yy = y0 - 1 + r
        yv = yy + 0 * cols  # a vector: the interpreter turns (bool vector) & (bool scalar) into integers
        row_ok = (yv >= 0) & (yv < H)
        for dx in tl.static_range(3):
            xx = cols + dx - 1
            ok = (xx >= 0) & (xx < W) & row_ok  # zero padding: masked pixels load 0, and relu(0) = 0
            a = tl.load(X + t * sxt + yy * sxh + xx[:, None] * sxw + ci[None, :], mask=ok[:, None], other=0.0)
            # ReLU in fp32 (exact for any input dtype; the interpreter compares bf16 as raw integers)
            a = tl.maximum(a.to(tl.float32), 0.0)
            acc_up = _row_taps(acc_up, a, Wt, 2, ci, co, CIN, CO_PAD, F32, dx)
            acc_mid = _row_taps(acc_mid, a, Wt, 1, ci, co, CIN, CO_PAD, F32, dx)
            acc_down = _row_taps(acc_down, a, Wt, 0, ci, co, CIN, CO_PAD, F32, dx)
        y_done = yy - 1  # its three input rows are in
        if (y_done >= y0) & (y_done < H):
            o_ptrs = Out + t * sot + co[None, :] * soc + y_done * soh + cols[:, None]
            tl.store(o_ptrs, (acc_up + bias).to(Out.dtype.element_ty, fp_downcast_rounding="rtne"), mask=out_mask)
        acc_up = acc_mid
        acc_mid = acc_down
        acc_down = tl.zeros([BLOCK_W, CO_PAD], tl.float32)


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


def relu_conv3x3(
    x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, out_channels: int, rows: int = ROWS,
    stages: int = STAGES,
) -> torch.Tensor:  # fmt: skip
    """conv2d(relu(x), w, b, padding=1) with (taps, bias) = pack_weight(w, b, x.dtype); NCHW output.
    rows: output rows per program (each input row is read once per program: 3 (rows + 2) / rows loads
    per pixel); stages: Triton's software pipelining of the row loop (1: plain loads, no shared memory)."""
    T, C, H, W = x.shape
    if x.dim() != 4 or x.stride(1) != 1 or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"x must be a channels_last [T, C, H, W] tensor, got strides {x.stride()}")
    if C & (C - 1) or not 16 <= C <= 256 or taps.shape != (9, C, _CO_PAD) or taps.dtype != x.dtype:
        raise ValueError(f"x has {C} channels ({x.dtype}); taps {tuple(taps.shape)} ({taps.dtype}) do not fit")
    out = torch.empty(T, out_channels, H, W, dtype=x.dtype, device=x.device)
    grid = (T * triton.cdiv(H, rows), triton.cdiv(W, _BLOCK_W))
    _relu_conv3x3_kernel[grid](
        x, taps, bias, out, H, W, x.stride(0), x.stride(2), x.stride(3), out.stride(0), out.stride(1), out.stride(2),
        CIN=C, COUT=out_channels, CO_PAD=_CO_PAD, BLOCK_W=_BLOCK_W, ROWS=rows, F32=_INTERPRET or x.dtype == torch.float32,
        num_warps=4, num_stages=stages,
    )  # fmt: skip
    return out


def relu_conv3x3_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Plain torch reference: fp32 conv of the ReLU'd input."""
    return F.conv2d(x.float().relu(), w.float(), None if b is None else b.float(), padding=1)
