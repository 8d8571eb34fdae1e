"""`streamer bench model` at a tiny custom size on the CPU: runs end to end, reports what it claims."""

from __future__ import annotations

import json

import pytest

from streamer.bench.model import _latency_run, bench_model_command, format_table
from streamer.cli import build_parser


def tiny_cpu_report(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    """`streamer bench model` on a 32x32 tiny custom workload on the CPU (eager and fast), its JSON report."""
    args = build_parser().parse_args(
        ["bench", "model", "custom", "--preset", "tiny", "--width", "32", "--height", "32", "--iters", "3",
         "--variants", "eager,fast", "--device", "cpu", "--json", *extra]
    )  # fmt: skip
    assert bench_model_command(args) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_model_cpu_tiny_custom_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = tiny_cpu_report(capsys, "--dtype", "bfloat16")
    assert report["workload"] == "custom" and report["preset"] == "tiny" and report["resolution"] == "32x32"
    assert report["dtype"] == "bfloat16"  # the dtype the engine ran, as asked
    assert report["device"].startswith("cpu") and report["tflop_per_chunk"] > 0
    eager, fast = report["variants"]
    assert eager["variant"] == "eager" and eager["ms_p50"] > 0 and eager["ms_p99"] >= eager["ms_p50"]
    assert eager["fps"] > 0 and eager["latency_p99_ms"] >= eager["latency_p50_ms"] > 0
    assert "CUDA" in fast["skipped"]  # no silent pass: the fast path says why it did not run
    keys = report["prompt_keys"]  # the default prompt is short: most of the 64 positions are padding
    assert 1 < keys["distinct"] < keys["of"] == 64, keys
    assert f"prompt: {keys['distinct']} of 64 text positions distinct" in format_table(report)


def test_bench_model_stream_batch_beside_sequential(capsys: pytest.CaptureFixture[str]) -> None:
    """On the CPU the eager engine in both modes (the fast path needs CUDA); on a GPU the same command
    runs the captured stream batch."""
    report = tiny_cpu_report(capsys, "--mode", "stream-batch")
    assert report["modes"] == ["sequential", "stream-batch"] and report["steps"] == 2
    rows = {(r["variant"], r["mode"]): r for r in report["variants"]}
    assert list(rows) == [("eager", "sequential"), ("fast", "sequential"), ("eager", "stream-batch"),
                          ("fast", "stream-batch")]  # fmt: skip
    batched = rows["eager", "stream-batch"]
    assert batched["ms_p50"] > 0 and batched["fps"] > 0 and batched["latency_p99_ms"] >= batched["latency_p50_ms"] > 0
    assert "CUDA" in rows["fast", "stream-batch"]["skipped"]
    table = format_table(report)
    assert "stream-batch" in table and "g2g p50" in table


def test_bench_model_stream_batch_at_one_step_says_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["bench", "model", "custom", "--preset", "tiny", "--width", "32", "--height", "32", "--iters", "1",
         "--steps", "1", "--variants", "eager", "--device", "cpu", "--mode", "stream-batch", "--json"]
    )  # fmt: skip
    assert bench_model_command(args) == 0
    sequential, batched = json.loads(capsys.readouterr().out)["variants"]
    assert sequential["mode"] == "sequential" and sequential["ms_p50"] > 0
    assert batched["mode"] == "stream-batch" and "steps >= 2" in batched["skipped"]


def test_bench_model_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    assert bench_model_command(parse(["bench", "model", "W9"])) == 2
    assert bench_model_command(parse(["bench", "model", "W4", "--variants", "eager,turbo"])) == 2
    assert "unknown" in capsys.readouterr().out


def test_latency_simulation_paces_input_and_drops_when_late() -> None:
    import time

    import torch

    def slow_step(f: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return f

    fast = _latency_run(lambda f: f, [torch.zeros(2, 1, 1, 3)], torch.device("cpu"), 6, 100.0, 2)
    assert fast["latency_chunks_dropped"] == 0
    assert 8 <= fast["latency_p99_ms"] <= 40  # the chunk's first frame waited one 10 ms frame period
    slow = _latency_run(slow_step, [torch.zeros(1, 1, 1, 3)], torch.device("cpu"), 6, 100.0, 1)
    assert slow["latency_chunks_dropped"] > 0  # newest-chunk-wins instead of a growing backlog
    assert slow["latency_p50_ms"] < 100


def test_latency_of_a_lagging_step_counts_from_the_chunk_that_came_out() -> None:
    """A stream batch of 2 steps: each output is the chunk pushed one call earlier. Chunk c's last frame
    arrives at (2c + 1) periods, and it comes out once chunk c + 1 (ready at 2c + 3) is pushed: at least
    2 periods (20 ms) for every frame. Counting from the chunk just pushed would give ~0-10 ms."""
    import torch

    chunk = torch.zeros(2, 1, 1, 3)
    pushed: list[int] = []

    def filling(f: torch.Tensor) -> torch.Tensor | None:  # a fresh stream batch: nothing out at first
        pushed.append(1)
        return None if len(pushed) == 1 else f

    lagged = _latency_run(filling, [chunk], torch.device("cpu"), 6, 100.0, 2)
    assert lagged["latency_p50_ms"] >= 20
    # a full batch at the start: the first output belongs to a chunk pushed before the run (not timed)
    full = _latency_run(lambda f: f, [chunk], torch.device("cpu"), 6, 100.0, 2, in_flight=1)
    assert full["latency_p50_ms"] >= 20
