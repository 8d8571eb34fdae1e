"""streamer/bench/dtype_quality.py: the same stream through two dtypes, PSNR per chunk; the FP8 path's
picture on the CPU (emulated) against fp32 and bf16, and the W1 quality gate on a GPU (issue 17)."""

from __future__ import annotations

import math

import pytest
import torch

from streamer.bench.dtype_quality import GATE_DB, compare_dtypes, compare_streams, psnr, scene
from streamer.bench.model_workloads import WORKLOADS
from streamer.config import from_dict
from streamer.model.engine import ModelTransform
from streamer.model.loading import load_parts

CPU = torch.device("cpu")


def test_scene_moves_and_psnr_measures() -> None:
    chunks = list(scene(3, 4, 32, 48, CPU))
    assert [tuple(c.shape) for c in chunks] == [(4, 32, 48, 3)] * 3 and chunks[0].dtype == torch.uint8
    assert not torch.equal(chunks[0][0], chunks[2][3])  # the disc moves
    a = chunks[0]
    assert psnr(a, a) == math.inf
    b = a.clone()
    b[..., 0] ^= 1  # every red value off by one: MSE 1/3
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 3))


def test_compare_streams_skips_empty_chunks_and_reports_the_worst() -> None:
    outputs = iter([None, torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(2, 4, 4, 3, dtype=torch.uint8)])
    noisy = iter([None, torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.full((2, 4, 4, 3), 3, dtype=torch.uint8)])
    report = compare_streams(lambda f: next(outputs), lambda f: next(noisy), iter([torch.empty(0)] * 3))
    assert report["chunks_compared"] == 2
    assert report["psnr_min_db"] == pytest.approx(10 * math.log10(255**2 / 9))
    assert report["psnr_db"] == pytest.approx(10 * math.log10(255**2 / 4.5))


@pytest.mark.parametrize("dtype,floor_db", [("float32", 40.0), ("bfloat16", 35.0)])
def test_fp8_emulated_stream_of_the_shipped_tiny_model(tmp_path, dtype: str, floor_db: float) -> None:
    """The shipped tiny model, FP8 linears emulated on the CPU vs the same model without, 12 chunks at
    64x64. Measured 2026-12-06 over 30 chunks: 47.1 dB overall vs fp32 (worst chunk 45.2), 45.4 dB vs
    bf16 (worst 41.8); over these 12 the worst bf16 chunk varied from run to run (40.3 dB, once below 38:
    CPU bf16 kernels are not bit-reproducible across thread schedules, and a stream carries differences
    on). The gate itself (>= 35 dB, W1 shapes, 100 chunks) is the GPU test below."""
    m = from_dict({"model": {"width": 64, "height": 64, "dtype": dtype, "cache_dir": str(tmp_path)}}).model
    engines = []
    for fp8 in (False, True):
        parts = load_parts(m, CPU)
        if fp8:
            parts.dit.to_fp8()
        engine = ModelTransform(m, parts)
        engine._set_cross(engine.text.encode(["film noir, black and white, high contrast"]))
        engines.append(engine)
    report = compare_streams(engines[0].step_tensor, engines[1].step_tensor, scene(12, 1, 64, 64, CPU))
    print(f"fp8 (emulated) vs {dtype}: {report['psnr_db']:.1f} dB, worst chunk {report['psnr_min_db']:.1f} dB")
    assert report["chunks_compared"] >= 10
    assert floor_db <= report["psnr_min_db"] < 80  # close, and not equal (the linears were quantized)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU with FP8 tensor cores (8.9+)")
def test_w1_fp8_quality_gate() -> None:
    """Issue 17: W1's decoded output in fp8 within 35 dB PSNR of bf16 over a 100-chunk stream (fast path,
    seeded random weights unless a real checkpoint is configured in the bench)."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip(f"{torch.cuda.get_device_name()} has no FP8 tensor cores")
    report = compare_dtypes(WORKLOADS["W1"], "bfloat16", "fp8", 100, "cuda")
    print({k: v for k, v in report.items() if k != "per_chunk_db"})
    assert report["chunks_compared"] >= 95
    assert report["passed"], f"{report['psnr_db']:.1f} dB overall, worst {report['psnr_min_db']:.1f} (< {GATE_DB})"
