"""`streamer bench model W1 --gpus N`: a workload through the pipelined engine (streamer/model/pipeline/).

It drives `PipelinedTransform.step` exactly as the daemon's engine thread does (frames in, frames out,
N chunks in flight), so the numbers include the stage processes' send/recv and the frames' trips
through the driver. Reported, per the scaling table of issue 16 (docs/multi-gpu.md): sustained output
fps with input as fast as the pipeline takes it; glass-to-glass latency p50/p99 at a paced input
(`--fps`, the newest frame wins when the pipeline is behind, as the daemon's one-slot mailbox does);
per stage its layers, peak GPU memory, and its bubble fraction (1 - busy / wall over the timed run).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from streamer.bench.model_workloads import Workload, percentile
from streamer.config import Settings, VideoSettings, effective_window
from streamer.frames import Frame
from streamer.model.pipeline.engine import PipelinedTransform, build_pipelined
from streamer.model.pipeline.group import stage_devices
from streamer.prompts import PromptState

PROMPT = PromptState(text="a watercolour painting")


def _frames(wl: Workload, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (wl.height, wl.width, 3), dtype=np.uint8) for _ in range(n)]


def _feed(engine: PipelinedTransform, pixels: list[np.ndarray], n_frames: int) -> int:
    """Frames in as fast as the pipeline takes them; returns the frames out (in-flight ones included)."""
    out = 0
    for i in range(n_frames):
        out += len(engine.step(Frame(pixels[i % len(pixels)], capture_time=time.perf_counter(), index=i), PROMPT))
    return out + len(engine.drain())


def _paced(engine: PipelinedTransform, pixels: list[np.ndarray], n_frames: int, fps: float) -> dict[str, float]:
    """Input at `fps`; a frame that arrived while the engine was busy is dropped for the newest one."""
    lat: list[float] = []
    start, k, dropped = time.perf_counter() + 0.05, 0, 0
    while k < n_frames:
        arrival = start + k / fps
        now = time.perf_counter()
        if now < arrival:
            time.sleep(arrival - now)
        else:
            newest = int((now - start) * fps)
            dropped, k = dropped + max(0, newest - k), max(k, newest)
            arrival = start + k / fps
        frame = Frame(pixels[k % len(pixels)], capture_time=arrival, index=k)
        for f in engine.step(frame, PROMPT):
            lat.append(time.perf_counter() - f.capture_time)
        k += 1
    for f in engine.drain():
        lat.append(time.perf_counter() - f.capture_time)
    return {
        "latency_p50_ms": 1e3 * percentile(lat, 50),
        "latency_p99_ms": 1e3 * percentile(lat, 99),
        "latency_input_fps": fps,
        "latency_frames_dropped": dropped,
    }


def bench_pipelined(
    wl: Workload, gpus: int | str, mode: str, iters: int, device: str, fps: float, *, checkpoint: str = "", vae: str = ""
) -> dict[str, Any]:
    from streamer.bench.model import workload_settings  # the one place a workload becomes [model] settings

    m = dataclasses.replace(workload_settings(wl, device, checkpoint, vae), gpus=gpus, mode=mode)  # type: ignore[arg-type]
    devices = stage_devices(m)
    settings = Settings(model=m, video=VideoSettings(width=wl.width, height=wl.height))
    t0 = time.perf_counter()
    engine = build_pipelined(settings, devices)
    try:
        start_s = time.perf_counter() - t0
        fpl, pixels = engine.frames_per_latent, _frames(wl, 8)
        window, _ = effective_window(m)
        _feed(engine, pixels, fpl * (window + 2 * len(devices) + 2))  # warm-up: KV history full, graphs captured
        engine.group.stage_stats(60.0)  # starts the stages' busy clocks from here
        t1 = time.perf_counter()
        frames_out = _feed(engine, pixels, fpl * iters)
        wall = time.perf_counter() - t1
        stats = engine.group.stage_stats(60.0)
        engine.reset()
        latency = _paced(engine, pixels, fpl * max(16, min(iters, 60)), fps)
    finally:
        engine.close()
    stages = [
        {"stage": r, "device": devices[r], "layers": f"{a}-{b - 1}", "bubble": max(0.0, 1 - busy / wall_s),
         "busy_s": busy, "peak_mem_gb": peak}
        for (r, busy, wall_s, peak), (a, b) in zip(stats, engine.group.layers, strict=True)
    ]  # fmt: skip
    return {
        "workload": wl.name, "preset": wl.preset, "resolution": f"{wl.width}x{wl.height}", "steps": wl.steps,
        "mode": mode, "gpus": len(devices), "devices": devices, "dtype": m.dtype, "frames_per_chunk": fpl,
        "weights": engine.group.sources, "start_s": start_s, "fps": frames_out / wall, "chunks": iters,
        **latency, "stages": stages, "measured_costs": dataclasses.asdict(engine.group.costs) if engine.group.costs else None,
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip


def format_pipelined(r: dict[str, Any]) -> str:
    rows = [
        f"{r['workload']}: {r['preset']} {r['resolution']} {r['steps']} steps {r['mode']} {r['dtype']}, "
        f"{r['gpus']} stages ({', '.join(r['devices'])}), DiT: {r['weights'].get('DiT', '?')}",
        f"fps {r['fps']:.1f} | g2g p50 {r['latency_p50_ms']:.1f} ms, p99 {r['latency_p99_ms']:.1f} ms at "
        f"{r['latency_input_fps']:g} fps input ({r['latency_frames_dropped']} dropped) | start {r['start_s']:.1f} s",
        "stage | device  | layers | bubble | busy s | peak GB",
    ]
    for s in r["stages"]:
        rows.append(
            f"{s['stage']:5d} | {s['device']:7s} | {s['layers']:6s} | {100 * s['bubble']:5.1f}% | "
            f"{s['busy_s']:6.2f} | {s['peak_mem_gb']:.2f}"
        )
    return "\n".join(rows)
