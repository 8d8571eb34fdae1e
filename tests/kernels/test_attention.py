"""kernels/attention.py: every backend and the picker against the fp32 reference."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu

from streamer_kernels.attention import (
    AttentionPicker,
    attention,
    attention_ref,
    available_backends,
    split_at_waves,
    whole_wave_rows,
)


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


def test_whole_wave_rows() -> None:
    assert whole_wave_rows(12, 1560, 132) == 1408  # W1: 11 of 13 q-tiles per head fill the 132 SMs once
    assert whole_wave_rows(12, 1024, 132) == 0  # W2: 8 tiles x 12 heads, one partial wave already
    assert whole_wave_rows(12, 1408, 132) == 0  # exactly one wave: nothing to split
    assert whole_wave_rows(12, 3000, 132) == 2816  # 23 full tiles: two whole waves of 11
    assert whole_wave_rows(200, 1560, 132) == 0  # more heads than SMs
    assert whole_wave_rows(12, 1560, 132, tile=64) == 1408  # 24 full 64-row tiles: two waves of 11


def test_split_at_waves_routes_rows_and_matches_the_reference() -> None:
    """The leading whole waves go to `head`, the rest to `tail` (here SDPA and the Triton kernel under
    the interpreter), and the joined output is attention over every row."""
    from streamer_kernels.flash_attention import FlashConfig, flash_attention

    q, k, v = _qkv(1, 45, 30, 2, 16, torch.float32, "cpu")
    seen: dict[str, int] = {}

    def head(q, k, v):  # type: ignore[no-untyped-def]
        seen["head"] = q.shape[1]
        return attention(q, k, v)

    def tail(q, k, v):  # type: ignore[no-untyped-def]
        seen["tail"] = q.shape[1]
        return flash_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), FlashConfig(16, 16, 4, 1)).float()

    out = split_at_waves(head, tail, sms=5, tile=8)(q, k, v)  # 2 heads: 2 tiles a wave; 5 full tiles -> 32 rows
    assert seen == {"head": 32, "tail": 13}
    want = attention_ref(q, k, v)
    torch.testing.assert_close(out[:, :32], want[:, :32], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 32:], want[:, 32:], rtol=2e-2, atol=2e-2)  # the bf16 tail
    seen.clear()
    split_at_waves(head, tail, sms=64, tile=8)(q, k, v)  # everything in one wave: head alone
    assert seen == {"head": 45}


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
