"""Shared checks for kernel tests: per-dtype tolerances, a mismatch report, device choice."""

from __future__ import annotations

import pytest
import torch

# rtol/atol per dtype of the kernel's inputs; fp32 kernels compute in fp32 like their reference.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (1e-3, 1e-3),
}

HAS_CUDA = torch.cuda.is_available()
# real-size checks: compiled Triton on the card, skipped with a reason on CPU machines (CI)
_skip_no_gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (real sizes, compiled Triton)")


def needs_gpu(fn):  # type: ignore[no-untyped-def]
    """Mark a real-size test `gpu` and skip it with a reason where there is no CUDA device."""
    return pytest.mark.gpu(_skip_no_gpu(fn))


def small_device() -> str:
    """Tiny-size tests: Triton's interpreter on CPU tensors in CI, compiled on the GPU where there is one."""
    return "cuda" if HAS_CUDA else "cpu"


def assert_matches(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    name: str = "output",
    rtol: float | None = None,
    atol: float | None = None,
    max_bad_fraction: float = 0.0,
) -> None:
    """Fail with a report counting bad elements; NaN/Inf in the kernel output always fails."""
    r, a = TOLERANCES[dtype]
    rtol, atol = (rtol if rtol is not None else r), (atol if atol is not None else a)
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    act, exp = actual.detach().double().cpu(), expected.detach().double().cpu()
    finite = torch.isfinite(act)
    assert bool(finite.all()), f"{name}: {int((~finite).sum())} NaN/Inf elements of {act.numel()}"
    diff = (act - exp).abs()
    bad = diff > atol + rtol * exp.abs()
    n_bad = int(bad.sum())
    if n_bad > max_bad_fraction * act.numel():
        idx = int(diff.argmax())
        raise AssertionError(
            f"{name}: {n_bad}/{act.numel()} elements outside rtol={rtol} atol={atol}; "
            f"max abs diff {float(diff.max()):.3g} at flat index {idx} "
            f"(got {float(act.flatten()[idx]):.6g}, want {float(exp.flatten()[idx]):.6g})"
        )


def assert_quantized_rows(q: torch.Tensor, scale: torch.Tensor, x: torch.Tensor, name: str = "rows") -> None:
    """(q, scale) is x [M, K] quantized per row exactly as the eager FP8 path's quantizer does it: the same
    scales, and every e4m3 value equal (a tiny negative that rounds to zero may come out +0)."""
    from streamer.model.fp8 import E4M3, dequantize, quantize_activation

    q_ref, scale_ref = quantize_activation(x)
    assert q.dtype == E4M3 and q.shape == x.shape and scale.shape == (x.shape[0], 1), f"{name}: shapes or dtype"
    assert torch.allclose(scale, scale_ref, rtol=1e-6, atol=0), f"{name}: scales differ"
    got, want = dequantize(q, scale).cpu(), dequantize(q_ref, scale_ref).cpu()
    assert torch.isfinite(got).all(), f"{name}: NaN/Inf in the quantized rows"
    one_step = 2.0**-3  # one e4m3 step, relative (3 mantissa bits); 2^-9 x scale below the normal range
    bound = torch.maximum(one_step * want.abs(), 2.0**-9 * scale_ref.cpu()) * (1 + 1e-6)
    bad = (got - want).abs() > bound
    assert not bad.any(), f"{name}: {int(bad.sum())} elements more than one e4m3 step from the reference"
    off = int((q.float() != q_ref.float()).sum())
    assert off == 0, f"{name}: {off} of {q.numel()} elements differ from the reference"
