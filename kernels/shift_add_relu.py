"""TAEHV's MemBlock elementwise work in single passes: the shifted add + ReLU, and the residual add + ReLU.

streamer/model/fast/vae_fused.py computes a MemBlock's first conv as ONE conv over x to 2n channels,
y = [A | B] (A = the x half with the bias, B = the past half), and needs
    h[t] = relu(A[t] + B[t-1]),  B[-1] = mem (the previous chunk's last B),  then mem <- B[T-1].
In torch that is an add into a fresh tensor, an in-place ReLU and a copy: h is written twice and read
once more. `shift_add_relu` reads A, B and mem once and writes h and mem once; each program walks
the frames for its elements, so reading mem and then overwriting it is the same program's load and
store (no race between programs). `add_relu_` is the block's end, relu(h + skip) in place, one pass
instead of add_ then relu_. Both take NCHW-contiguous or channels_last tensors (frames on dim 0).
"""

from __future__ import annotations

import torch

from streamer_kernels.backend import tl, triton

_BLOCK = 1024


@triton.jit
def _shift_add_relu_kernel(Y, MEM, OUT, T, N, n, frame_y, frame_o, half, NHWC: tl.constexpr, BLOCK: tl.constexpr):
    # j indexes one frame of the output [n, H, W] in its memory order (NCHW: c*HW + p; NHWC: p*n + c)
    j = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = j < N
    if NHWC:
        ya = (j // n) * (2 * n) + j % n  # y holds 2n channels per pixel: A's n, then B's n
    else:
        ya = j  # y holds A's n channel planes, then B's
    prev = tl.load(MEM + j, mask=mask, other=0.0).to(tl.float32)
    for t in range(T):
        a = tl.load(Y + t * frame_y + ya, mask=mask, other=0.0).to(tl.float32)
        tl.store(
            OUT + t * frame_o + j,
            tl.maximum(a + prev, 0.0).to(OUT.dtype.element_ty, fp_downcast_rounding="rtne"),
            mask=mask,
        )
        prev = tl.load(Y + t * frame_y + ya + half, mask=mask, other=0.0).to(tl.float32)
    tl.store(MEM + j, prev.to(MEM.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)


@triton.jit
def _add_relu_kernel(H, Z, N, BLOCK: tl.constexpr):
    i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = i < N
    h = tl.load(H + i, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(Z + i, mask=mask, other=0.0).to(tl.float32)
    tl.store(H + i, tl.maximum(h + z, 0.0).to(H.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)


def _layout(x: torch.Tensor) -> bool:
    """True for channels_last, False for NCHW-contiguous; anything else is refused."""
    if x.is_contiguous():
        return False
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return True
    raise ValueError(f"needs an NCHW-contiguous or channels_last tensor, got strides {x.stride()}")


def shift_add_relu(y: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
    """y: [T, 2n, H, W] -> relu(y[:, :n] + [mem, y[:-1, n:]]) as a new [T, n, H, W] tensor in y's layout;
    mem ([n, H, W], y's layout, written in place) becomes y[-1, n:]."""
    t, n2, hh, ww = y.shape
    n = n2 // 2
    if n2 % 2 or mem.shape != (n, hh, ww) or mem.dtype != y.dtype:
        raise ValueError(f"mem must be [{n}, {hh}, {ww}] {y.dtype} for y {tuple(y.shape)}, got {tuple(mem.shape)}")
    nhwc = _layout(y)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    if mem.stride() != torch.empty(1, n, hh, ww, device="meta").contiguous(memory_format=fmt).stride()[1:]:
        raise ValueError(f"mem must be in y's layout ({'NHWC' if nhwc else 'NCHW'}), got strides {mem.stride()}")
    out = torch.empty((t, n, hh, ww), dtype=y.dtype, device=y.device, memory_format=fmt)
    frame = n * hh * ww
    half = n if nhwc else frame
    grid = (triton.cdiv(frame, _BLOCK),)
    _shift_add_relu_kernel[grid](y, mem, out, t, frame, n, 2 * frame, frame, half, NHWC=nhwc, BLOCK=_BLOCK)
    return out


def add_relu_(h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """h <- relu(h + z) in place; h and z of one shape and one layout (NCHW-contiguous or channels_last)."""
    if h.shape != z.shape or h.dtype != z.dtype or h.stride() != z.stride():
        raise ValueError(f"h and z must match in shape, dtype and strides: {tuple(h.shape)} {tuple(z.shape)}")
    _layout(h)
    n = h.numel()
    _add_relu_kernel[(triton.cdiv(n, _BLOCK),)](h, z, n, BLOCK=_BLOCK)
    return h


def shift_add_relu_ref(y: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch reference: (the output, the new mem), computed in fp32 and cast back; mem untouched."""
    n = y.shape[1] // 2
    a, b = y[:, :n].float(), y[:, n:].float()
    past = torch.cat([mem[None].float(), b[:-1]])
    return torch.relu(a + past).to(y.dtype), b[-1].to(y.dtype)


def add_relu_ref(h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.relu(h.float() + z.float()).to(h.dtype)
