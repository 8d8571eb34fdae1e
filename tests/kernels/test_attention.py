"""kernels/attention.py: every backend and the picker against the fp32 reference."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu

from streamer_kernels.attention import AttentionPicker, attention, attention_ref, available_backends


def _qkv(B: int, sq: int, sk: int, H: int, D: int, dtype: torch.dtype, device: str):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    return [torch.randn(B, s, H, D, generator=g).to(dtype).to(device) for s in (sq, sk, sk)]


@pytest.mark.parametrize("shape", [(1, 5, 5, 2, 16), (2, 7, 19, 3, 32), (1, 12, 40, 2, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_attention_matches_reference(shape, dtype):
    q, k, v = _qkv(*shape, dtype, "cpu")
    want = attention_ref(q, k, v)
    assert_matches(
        attention(q, k, v),
        want,
        dtype,
        rtol=1e-4 if dtype == torch.float32 else None,
        atol=1e-4 if dtype == torch.float32 else None,
    )
    picker = AttentionPicker()
    assert_matches(
        picker(q, k, v),
        want,
        dtype,
        rtol=1e-4 if dtype == torch.float32 else None,
        atol=1e-4 if dtype == torch.float32 else None,
    )
    assert picker.pick(q, k, v) == "sdpa"


def test_unknown_backend_is_an_error():
    q, k, v = _qkv(1, 2, 2, 1, 8, torch.float32, "cpu")
    with pytest.raises(ValueError, match="not available"):
        attention(q, k, v, backend="cudnn")
    with pytest.raises(ValueError, match="not available"):
        AttentionPicker(only="fa3")(q, k, v)


@needs_gpu
@pytest.mark.parametrize(
    "shape",
    [(1, 1560, 7 * 1560, 12, 128), (1, 1024, 7 * 1024, 12, 128), (1, 1024, 1024, 2, 128), (2, 333, 999, 3, 128)],
)
def test_gpu_backends_match_reference(shape):
    q, k, v = _qkv(*shape, torch.bfloat16, "cuda")
    want = attention_ref(q, k, v)
    ran = []
    for name, fn in available_backends(q.device).items():
        try:
            got = fn(q, k, v)
        except RuntimeError as e:  # a backend may refuse a shape; the picker skips it the same way
            print(f"{name}: refused {shape}: {e}")
            continue
        assert_matches(got, want, torch.bfloat16, name, max_bad_fraction=1e-4)
        ran.append(name)
    assert "sdpa" in ran
    picker = AttentionPicker()
    assert_matches(picker(q, k, v), want, torch.bfloat16, "picked", max_bad_fraction=1e-4)
    print(shape, "picked", picker.pick(q, k, v), picker.timings)
