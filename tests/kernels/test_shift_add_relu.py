"""kernels/shift_add_relu.py against its plain-torch references (interpreter on CPU, compiled on a GPU)."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu, small_device

from streamer_kernels.shift_add_relu import add_relu_, add_relu_ref, shift_add_relu, shift_add_relu_ref


def _case(t: int, n: int, h: int, w: int, dtype: torch.dtype, device: str, nhwc: bool):
    g = torch.Generator().manual_seed(t * 1000 + n * 10 + h)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    y = torch.randn(t, 2 * n, h, w, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    mem = torch.randn(1, n, h, w, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=fmt)[0]
    return y, mem


@pytest.mark.parametrize("nhwc", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t,n,h,w", [(1, 3, 5, 7), (2, 16, 9, 13), (4, 8, 4, 6)])
def test_shift_add_relu_small(t, n, h, w, dtype, nhwc):
    y, mem = _case(t, n, h, w, dtype, small_device(), nhwc)
    want, want_mem = shift_add_relu_ref(y, mem)
    got = shift_add_relu(y, mem)
    assert got.is_contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    assert_matches(got, want, dtype)
    assert_matches(mem, want_mem, dtype, name="mem")  # updated in place to the last frame's past half


@pytest.mark.parametrize("nhwc", [False, True])
def test_add_relu_in_place(nhwc):
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    h = torch.randn(2, 6, 5, 7, device=small_device()).contiguous(memory_format=fmt)
    z = torch.randn(2, 6, 5, 7, device=small_device()).contiguous(memory_format=fmt)
    want = add_relu_ref(h, z)
    assert add_relu_(h, z).data_ptr() == h.data_ptr()
    assert_matches(h, want, torch.float32)


def test_rejects_mismatched_layouts():
    y, mem = _case(2, 4, 5, 6, torch.float32, small_device(), nhwc=True)
    with pytest.raises(ValueError, match="layout"):
        shift_add_relu(y, mem.contiguous())  # NCHW memory beside an NHWC y
    with pytest.raises(ValueError, match="strides"):
        add_relu_(y, y.contiguous())


@needs_gpu
@pytest.mark.parametrize("nhwc", [False, True])
@pytest.mark.parametrize("t,n,h,w", [(2, 64, 240, 416), (1, 256, 60, 104), (1, 128, 120, 208)])
def test_shift_add_relu_gpu_taehv_sizes(t, n, h, w, nhwc):
    y, mem = _case(t, n, h, w, torch.bfloat16, "cuda", nhwc)
    want, want_mem = shift_add_relu_ref(y, mem)
    assert_matches(shift_add_relu(y, mem), want, torch.bfloat16)
    assert_matches(mem, want_mem, torch.bfloat16, name="mem")
