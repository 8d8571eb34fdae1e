"""`streamer bench model` at a tiny custom size on the CPU: runs end to end, reports what it claims."""

from __future__ import annotations

import json

import pytest

from streamer.bench.model import _latency_run, bench_model_command
from streamer.cli import build_parser


def test_bench_model_cpu_tiny_custom_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["bench", "model", "custom", "--preset", "tiny", "--width", "32", "--height", "32", "--iters", "3",
         "--variants", "eager,fast", "--device", "cpu", "--dtype", "bfloat16", "--json"]
    )  # fmt: skip
    assert bench_model_command(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["workload"] == "custom" and report["preset"] == "tiny" and report["resolution"] == "32x32"
    assert report["dtype"] == "bfloat16"  # the dtype the engine ran, as asked
    assert report["device"].startswith("cpu") and report["tflop_per_chunk"] > 0
    eager, fast = report["variants"]
    assert eager["variant"] == "eager" and eager["ms_p50"] > 0 and eager["ms_p99"] >= eager["ms_p50"]
    assert eager["fps"] > 0 and eager["latency_p99_ms"] >= eager["latency_p50_ms"] > 0
    assert "CUDA" in fast["skipped"]  # no silent pass: the fast path says why it did not run


def test_bench_model_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    assert bench_model_command(parse(["bench", "model", "W9"])) == 2
    assert bench_model_command(parse(["bench", "model", "W4", "--variants", "eager,turbo"])) == 2
    assert "unknown" in capsys.readouterr().out


def test_latency_simulation_paces_input_and_drops_when_late() -> None:
    import time

    import torch

    fast = _latency_run(lambda f: None, [None], torch.device("cpu"), 6, 100.0, 2)
    assert fast["latency_chunks_dropped"] == 0
    assert 8 <= fast["latency_p99_ms"] <= 40  # the chunk's first frame waited one 10 ms frame period
    slow = _latency_run(lambda f: time.sleep(0.05), [None], torch.device("cpu"), 6, 100.0, 1)
    assert slow["latency_chunks_dropped"] > 0  # newest-chunk-wins instead of a growing backlog
    assert slow["latency_p50_ms"] < 100
