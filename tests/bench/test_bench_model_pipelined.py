"""`streamer bench model --gpus N` on the CPU: the pipelined engine's report has what the scaling table needs."""

from __future__ import annotations

import dataclasses

from streamer.bench.model_pipelined import bench_pipelined, format_pipelined
from streamer.bench.model_workloads import WORKLOADS


def test_pipelined_bench_reports_fps_latency_and_per_stage_bubble_and_memory() -> None:
    wl = dataclasses.replace(WORKLOADS["W4"], width=64, height=64, dtype="float32")
    r = bench_pipelined(wl, 2, "stream-batch", 4, "cpu", 30.0, checkpoint="random", vae="random")
    assert r["gpus"] == 2 and r["fps"] > 0 and r["latency_p99_ms"] >= r["latency_p50_ms"] > 0
    first, second = (s["layers"].split("-") for s in r["stages"])  # tiny's 4 layers, placed from measured times
    assert first[0] == "0" and int(second[0]) == int(first[1]) + 1 and second[1] == "3"
    assert all(0 <= s["bubble"] <= 1 and s["busy_s"] > 0 for s in r["stages"])
    assert len(r["measured_costs"]["layers"]) == 4
    table = format_pipelined(r)
    assert "stream-batch" in table and "bubble" in table and "g2g p50" in table
