"""Camera frame <-> model tensor conversion on the GPU, resize included, in one pass each way.

In: uint8 HWC RGB frames ([B,] H, W, 3) -> bilinear resize (PyTorch's align_corners=False rule, no
antialias) -> lo + (hi - lo) * v / 255 as [B, 3, h, w] (TAEHV wants [0, 1]; the Wan VAE [-1, 1]).
Out: model frames [B, 3, h, w] in [lo, hi] -> bilinear resize to the sink's size -> uint8 in the
sink's pixel format: "rgb" ([B, H, W, 3]), "i420" (Y plane, U plane, V plane) or "nv12" (Y plane,
interleaved UV), the planar ones flat [B, H*W*3/2]. YUV is BT.601 limited range, the same matrix
pyvirtualcam and libswscale use by default, chroma averaged over each 2x2 block.

Unfused, the out path is interpolate + clamp + matmul + round + two subsampling passes + a cat:
six launches and as many round trips of a full frame.
"""

from __future__ import annotations

from typing import Literal

import torch

from streamer_kernels.backend import tl, triton

PixelFormat = Literal["rgb", "i420", "nv12"]
_FORMATS = ("rgb", "i420", "nv12")
# BT.601 limited range, RGB in [0, 1] -> Y/Cb/Cr in [0, 255]
_Y = (65.481, 128.553, 24.966)
_U = (-37.797, -74.203, 112.0)
_V = (112.0, -93.786, -18.214)


@triton.jit
def _src_index(o, scale, n_in):
    """PyTorch's bilinear source index (align_corners=False): low index, high index, weight of high."""
    s = tl.maximum((o.to(tl.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = s.to(tl.int32)  # s >= 0, so truncation is floor
    i1 = tl.minimum(i0 + 1, n_in - 1)
    return i0, i1, s - i0.to(tl.float32)


@triton.jit
def _bilinear(base, y0, y1, x0, x1, ly, lx, sy, sx, mask):
    a = tl.load(base + y0 * sy + x0 * sx, mask=mask, other=0).to(tl.float32)
    b = tl.load(base + y0 * sy + x1 * sx, mask=mask, other=0).to(tl.float32)
    c = tl.load(base + y1 * sy + x0 * sx, mask=mask, other=0).to(tl.float32)
    d = tl.load(base + y1 * sy + x1 * sx, mask=mask, other=0).to(tl.float32)
    top = a + (b - a) * lx
    bot = c + (d - c) * lx
    return top + (bot - top) * ly


@triton.jit
def _to_model_kernel(SRC, DST, H, W, OH, OW, scale_h, scale_w, mul, add, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < OH * OW
    oy = idx // OW
    ox = idx % OW
    y0, y1, ly = _src_index(oy, scale_h, H)
    x0, x1, lx = _src_index(ox, scale_w, W)
    src = SRC + b * H * W * 3
    dst = DST + b * 3 * OH * OW + idx
    for c in tl.static_range(3):
        v = _bilinear(src + c, y0, y1, x0, x1, ly, lx, W * 3, 3, mask)
        tl.store(dst + c * OH * OW, (v * mul + add).to(DST.dtype.element_ty), mask=mask)


@triton.jit
def _unit_rgb(SRC, plane, y, x, H, W, scale_h, scale_w, inv, lo, mask):
    """Resampled pixel at output (y, x) of the 3 planes at SRC, mapped to [0, 1] and clamped."""
    y0, y1, ly = _src_index(y, scale_h, H)
    x0, x1, lx = _src_index(x, scale_w, W)
    r = _bilinear(SRC, y0, y1, x0, x1, ly, lx, W, 1, mask)
    g = _bilinear(SRC + plane, y0, y1, x0, x1, ly, lx, W, 1, mask)
    bl = _bilinear(SRC + 2 * plane, y0, y1, x0, x1, ly, lx, W, 1, mask)
    r = tl.minimum(tl.maximum((r - lo) * inv, 0.0), 1.0)
    g = tl.minimum(tl.maximum((g - lo) * inv, 0.0), 1.0)
    bl = tl.minimum(tl.maximum((bl - lo) * inv, 0.0), 1.0)
    return r, g, bl


@triton.jit
def _to_u8(v):
    return tl.minimum(tl.maximum(tl.floor(v + 0.5), 0.0), 255.0).to(tl.uint8)


@triton.jit
def _to_rgb_kernel(SRC, DST, H, W, OH, OW, scale_h, scale_w, inv, lo, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < OH * OW
    r, g, bl = _unit_rgb(SRC + b * 3 * H * W, H * W, idx // OW, idx % OW, H, W, scale_h, scale_w, inv, lo, mask)
    dst = DST + b * OH * OW * 3 + idx * 3
    tl.store(dst, _to_u8(r * 255.0), mask=mask)
    tl.store(dst + 1, _to_u8(g * 255.0), mask=mask)
    tl.store(dst + 2, _to_u8(bl * 255.0), mask=mask)


@triton.jit
def _to_yuv420_kernel(SRC, DST, H, W, OH, OW, scale_h, scale_w, inv, lo, NV12: tl.constexpr, BLOCK: tl.constexpr):
    """One lane per 2x2 block: four Y samples and one (U, V) pair from their mean RGB."""
    b = tl.program_id(0).to(tl.int64)
    cw = OW // 2
    ch = OH // 2
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < ch * cw
    cy = idx // cw
    cx = idx % cw
    src = SRC + b * 3 * H * W
    dst = DST + b * (OH * OW * 3 // 2)
    r_sum = tl.zeros((BLOCK,), tl.float32)
    g_sum = tl.zeros((BLOCK,), tl.float32)
    b_sum = tl.zeros((BLOCK,), tl.float32)
    for dy in tl.static_range(2):
        for dx in tl.static_range(2):
            y = 2 * cy + dy
            x = 2 * cx + dx
            r, g, bl = _unit_rgb(src, H * W, y, x, H, W, scale_h, scale_w, inv, lo, mask)
            luma = 16.0 + 65.481 * r + 128.553 * g + 24.966 * bl
            tl.store(dst + y * OW + x, _to_u8(luma), mask=mask)
            r_sum += r
            g_sum += g
            b_sum += bl
    r = r_sum * 0.25
    g = g_sum * 0.25
    bl = b_sum * 0.25
    u = _to_u8(128.0 - 37.797 * r - 74.203 * g + 112.0 * bl)
    v = _to_u8(128.0 + 112.0 * r - 93.786 * g - 18.214 * bl)
    chroma = dst + OH * OW
    if NV12:
        tl.store(chroma + 2 * idx, u, mask=mask)
        tl.store(chroma + 2 * idx + 1, v, mask=mask)
    else:
        tl.store(chroma + idx, u, mask=mask)
        tl.store(chroma + ch * cw + idx, v, mask=mask)


_BLOCK = 256


def frame_to_model(
    frames: torch.Tensor,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    lo: float = 0.0,
    hi: float = 1.0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 [B,] H, W, 3 RGB -> [B, 3, height, width] in [lo, hi] (into `out` if given)."""
    if frames.dtype != torch.uint8 or frames.shape[-1] != 3 or frames.dim() not in (3, 4):
        raise ValueError(f"frames must be uint8 [B,] H, W, 3; got {frames.dtype} {tuple(frames.shape)}")
    x = (frames[None] if frames.dim() == 3 else frames).contiguous()
    B, H, W, _ = x.shape
    if out is None:
        out = torch.empty(B, 3, height, width, device=x.device, dtype=dtype)
    elif out.shape != (B, 3, height, width) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{B}, 3, {height}, {width}] tensor")
    grid = (B, triton.cdiv(height * width, _BLOCK))
    _to_model_kernel[grid](x, out, H, W, height, width, H / height, W / width, (hi - lo) / 255.0, lo, BLOCK=_BLOCK)
    return out


def model_to_frame(
    images: torch.Tensor,
    height: int,
    width: int,
    fmt: PixelFormat = "rgb",
    lo: float = 0.0,
    hi: float = 1.0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, 3, h, w] in [lo, hi] -> uint8 in `fmt` at height x width (rgb [B,H,W,3]; i420/nv12 [B, H*W*3/2])."""
    if fmt not in _FORMATS:
        raise ValueError(f"unknown pixel format {fmt!r}; expected one of {_FORMATS}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, h, w], got {tuple(images.shape)}")
    if fmt != "rgb" and (height % 2 or width % 2):
        raise ValueError(f"{fmt} needs an even frame size, got {width}x{height}")
    x = images.contiguous()
    B, _, h, w = x.shape
    shape = (B, height, width, 3) if fmt == "rgb" else (B, height * width * 3 // 2)
    if out is None:
        out = torch.empty(shape, device=x.device, dtype=torch.uint8)
    elif out.shape != shape or out.dtype != torch.uint8 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous uint8 tensor of shape {shape}")
    args = (x, out, h, w, height, width, h / height, w / width, 1.0 / (hi - lo), lo)
    if fmt == "rgb":
        _to_rgb_kernel[(B, triton.cdiv(height * width, _BLOCK))](*args, BLOCK=_BLOCK)
    else:
        n = (height // 2) * (width // 2)
        _to_yuv420_kernel[(B, triton.cdiv(n, _BLOCK))](*args, NV12=fmt == "nv12", BLOCK=_BLOCK)
    return out


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if x.shape[-2:] == (height, width):
        return x
    return torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def frame_to_model_ref(
    frames: torch.Tensor,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    lo: float = 0.0,
    hi: float = 1.0,
) -> torch.Tensor:
    """Plain torch reference of `frame_to_model`."""
    x = (frames[None] if frames.dim() == 3 else frames).permute(0, 3, 1, 2).float()
    return (_resize(x, height, width) * ((hi - lo) / 255.0) + lo).to(dtype)


def model_to_frame_ref(
    images: torch.Tensor,
    height: int,
    width: int,
    fmt: PixelFormat = "rgb",
    lo: float = 0.0,
    hi: float = 1.0,
) -> torch.Tensor:
    """Plain torch reference of `model_to_frame`."""
    rgb = ((_resize(images.float(), height, width) - lo) / (hi - lo)).clamp(0, 1)

    def u8(v: torch.Tensor) -> torch.Tensor:
        return torch.floor(v + 0.5).clamp(0, 255).to(torch.uint8)

    if fmt == "rgb":
        return u8(rgb * 255).permute(0, 2, 3, 1).contiguous()
    m = torch.tensor([_Y, _U, _V], dtype=torch.float32, device=rgb.device)
    off = torch.tensor([16.0, 128.0, 128.0], device=rgb.device)
    y = torch.einsum("kc,bchw->bkhw", m[:1], rgb)[:, 0] + off[0]
    mean = torch.nn.functional.avg_pool2d(rgb, 2)
    uv = torch.einsum("kc,bchw->bkhw", m[1:], mean) + off[1:, None, None]
    B = images.shape[0]
    if fmt == "i420":
        chroma = uv.reshape(B, -1)
    else:
        chroma = uv.permute(0, 2, 3, 1).reshape(B, -1)
    return torch.cat([u8(y).reshape(B, -1), u8(chroma)], dim=1)
