"""The fast path's bf16 FFN on CUDA: bias + GELU(tanh) in cuBLASLt's matmul epilogue
(`FusedOps.GELU_EPILOGUE`) against the bias-free matmul + the Triton bias + GELU kernel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamer.model.fast.ops import FusedOps


class _Dit:  # what FusedOps reads of a DiT: layers, acc_dtype, cfg.dim, patch_embedding
    def __init__(self, dim: int, device: str) -> None:
        self.layers: list[nn.Module] = []
        self.acc_dtype = torch.float32
        self.cfg = type("Cfg", (), {"dim": dim})()
        self.patch_embedding = nn.Linear(1, 1).to(device)


def _ffn(dim: int, hidden: int, device: str, dtype: torch.dtype) -> nn.Sequential:
    torch.manual_seed(0)
    ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
    return ffn.to(device=device, dtype=dtype)


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="CPU tensors reach the Triton kernels only through the interpreter, on a machine without CUDA",
)
def test_the_epilogue_is_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU `_addmm_activation` would apply the exact GELU: FusedOps must not take it there."""
    ffn, h = _ffn(32, 80, "cpu", torch.float32), torch.randn(1, 7, 32)
    called = []
    monkeypatch.setattr(torch, "_addmm_activation", lambda *a, **k: called.append(1))
    out = FusedOps(_Dit(32, "cpu")).ffn(ffn, h)  # type: ignore[arg-type]
    assert not called
    torch.testing.assert_close(out, ffn(h), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (cuBLASLt's epilogue)")
def test_gelu_epilogue_matches_the_bias_gelu_kernel_at_w1_size(monkeypatch: pytest.MonkeyPatch) -> None:
    ffn, h = _ffn(1536, 8960, "cuda", torch.bfloat16), torch.randn(1, 1560, 1536, device="cuda", dtype=torch.bfloat16)
    ops = FusedOps(_Dit(1536, "cuda"))  # type: ignore[arg-type]
    with_epilogue = ops.ffn(ffn, h)
    monkeypatch.setattr(FusedOps, "GELU_EPILOGUE", False)
    kernel = ops.ffn(ffn, h)
    with torch.no_grad():
        ref = ffn.float()(h.float())
    scale = ref.abs().max()
    assert float((with_epilogue.float() - ref).abs().max() / scale) < 2e-2
    assert float((with_epilogue.float() - kernel.float()).abs().max() / scale) < 2e-2
