"""kernels/frame_convert.py against its plain-torch reference (resize + normalise, and back to RGB/I420/NV12)."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu, small_device

from streamer_kernels.frame_convert import frame_to_model, frame_to_model_ref, model_to_frame, model_to_frame_ref


def _frames(B: int, H: int, W: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    return torch.randint(0, 256, (B, H, W, 3), generator=g, dtype=torch.uint8).to(device)


def _images(B: int, h: int, w: int, dtype: torch.dtype, device: str, lo: float, hi: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    # a little outside [lo, hi] so the clamp is exercised
    return (lo + (hi - lo) * (torch.rand(B, 3, h, w, generator=g) * 1.2 - 0.1)).to(dtype).to(device)


SIZES = [((9, 13), (8, 16)), ((10, 6), (10, 6)), ((7, 5), (16, 12)), ((30, 22), (6, 8))]


@pytest.mark.parametrize("src,dst", SIZES)
@pytest.mark.parametrize("dtype,lo,hi", [(torch.float32, 0.0, 1.0), (torch.bfloat16, -1.0, 1.0)])
def test_frame_to_model_small(src, dst, dtype, lo, hi):
    frames = _frames(2, *src, small_device())
    got = frame_to_model(frames, *dst, dtype=dtype, lo=lo, hi=hi)
    assert_matches(got, frame_to_model_ref(frames, *dst, dtype=dtype, lo=lo, hi=hi), dtype)


def test_frame_to_model_single_frame_into_static_buffer():
    frames = _frames(1, 12, 20, small_device())[0]
    out = torch.full((1, 3, 8, 8), float("nan"), device=frames.device)
    frame_to_model(frames, 8, 8, out=out)
    assert_matches(out, frame_to_model_ref(frames, 8, 8), torch.float32)


@pytest.mark.parametrize("fmt", ["rgb", "i420", "nv12"])
@pytest.mark.parametrize("src,dst", SIZES)
@pytest.mark.parametrize("dtype,lo,hi", [(torch.float32, 0.0, 1.0), (torch.bfloat16, -1.0, 1.0)])
def test_model_to_frame_small(fmt, src, dst, dtype, lo, hi):
    images = _images(2, *src, dtype, small_device(), lo, hi)
    got = model_to_frame(images, *dst, fmt=fmt, lo=lo, hi=hi)
    want = model_to_frame_ref(images, *dst, fmt=fmt, lo=lo, hi=hi)
    assert got.dtype == torch.uint8
    # one code value of rounding slack where the two orders of float ops straddle a .5
    assert_matches(got, want, torch.float32, fmt, rtol=0.0, atol=1.0)


def test_yuv_values_of_known_colours():
    """Pure white/black/red through I420: the BT.601 limited-range code values."""
    img = torch.zeros(3, 3, 2, 2)
    img[0] = 1.0  # white
    img[2, 0] = 1.0  # red
    out = model_to_frame(img.to(small_device()), 2, 2, fmt="i420").cpu()
    assert out[0, :4].tolist() == [235] * 4 and out[0, 4:].tolist() == [128, 128]
    assert out[1, :4].tolist() == [16] * 4 and out[1, 4:].tolist() == [128, 128]
    assert out[2, :4].tolist() == [81] * 4 and out[2, 4:].tolist() == [90, 240]


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        frame_to_model(torch.zeros(4, 4, 3), 4, 4)
    with pytest.raises(ValueError, match="even"):
        model_to_frame(torch.zeros(1, 3, 4, 4), 5, 4, fmt="nv12")
    with pytest.raises(ValueError, match="pixel format"):
        model_to_frame(torch.zeros(1, 3, 4, 4), 4, 4, fmt="yuyv")  # type: ignore[arg-type]


@needs_gpu
@pytest.mark.parametrize("fmt", ["rgb", "i420", "nv12"])
@pytest.mark.parametrize("cam,model", [((720, 1280), (480, 832)), ((1080, 1920), (512, 512)), ((480, 640), (256, 256))])
def test_frame_convert_gpu_real_sizes(fmt, cam, model):
    frames = _frames(4, *cam, "cuda")
    x = frame_to_model(frames, *model, dtype=torch.bfloat16)
    assert_matches(x, frame_to_model_ref(frames, *model, dtype=torch.bfloat16), torch.bfloat16)
    got = model_to_frame(x, *cam, fmt=fmt)
    assert_matches(got, model_to_frame_ref(x, *cam, fmt=fmt), torch.float32, fmt, rtol=0.0, atol=1.0)
