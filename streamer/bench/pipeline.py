"""`streamer bench pipeline`: workload W5 — passthrough, 1280x720 at 30 fps, network source -> network sink.

Two phases on loopback, each with a real-time paced sender that burns a frame stamp into every
frame (streamer.sources.pattern.stamp_index) and a receiver that reads it back:
  1. raw:    sender --udp mpegts--> receiver                      (the network path alone)
  2. daemon: sender --udp--> [network source -> pipeline -> network sink] --udp--> receiver
The sender and receiver run in a child process (OBS's role), the daemon in this one. Latency is
receiver decode time minus sender hand-off time of the same stamp (CLOCK_MONOTONIC is system-wide);
the daemon's added latency is the difference of the medians. Drops are stamps sent, never received.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from streamer import config
from streamer.frames import Frame, now
from streamer.metrics import Metrics, percentile
from streamer.pipeline import Pipeline
from streamer.prompts import PromptBus


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PhaseResult:
    name: str
    sent: int
    received: int
    latency_p50_ms: float
    latency_p99_ms: float
    fps_received: float

    @property
    def drop_pct(self) -> float:
        return 100.0 * (1 - self.received / self.sent) if self.sent else 100.0


def _settings(width: int, height: int, fps: float, **sections: dict) -> config.Settings:
    raw = {"video": {"width": width, "height": height, "fps": fps}, "engine": {"transform": "passthrough"}}
    raw.update(sections)
    return config.from_dict(raw, "<bench>")


def _network_sink(url: str, width: int, height: int, fps: float):
    from streamer.sinks import build_sinks

    (sink,) = build_sinks(_settings(width, height, fps, sinks={"enabled": ["network"], "network": {"url": url}}))
    return sink


def _network_source(url: str, width: int, height: int, fps: float):
    from streamer.sources import build_source

    return build_source(_settings(width, height, fps, source={"kind": "network", "url": url, "format": "mpegts"}))


class Sender(threading.Thread):
    """Paced, stamped frames into a network sink; remembers when each stamp was handed off."""

    def __init__(self, url: str, width: int, height: int, fps: float, seconds: float) -> None:
        super().__init__(name="bench-sender", daemon=True)
        self.sink = _network_sink(url, width, height, fps)
        self.size, self.fps, self.seconds = (width, height), fps, seconds
        self.sent_at: dict[int, float] = {}

    def run(self) -> None:
        from streamer.sources.pattern import stamp_index

        w, h = self.size
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 128)], axis=-1).astype(np.uint8)
        self.sink.open(w, h, self.fps)
        start = now()
        i = 0
        while (t := now()) - start < self.seconds:
            pixels = base.copy()
            x = int((i * 8) % (w - 64))
            pixels[h // 2 : h // 2 + 64, x : x + 64] = 255  # a moving block: the encoder sees motion
            stamp_index(pixels, i)
            self.sink.write(Frame(pixels, t, index=i))
            self.sent_at[i] = t
            i += 1
            delay = start + i / self.fps - now()
            if delay > 0:
                time.sleep(delay)
        self.sink.close()


class Receiver(threading.Thread):
    def __init__(self, url: str, width: int, height: int, fps: float) -> None:
        super().__init__(name="bench-receiver", daemon=True)
        self.source = _network_source(url, width, height, fps)
        self.stop = threading.Event()
        self.got: dict[int, float] = {}

    def run(self) -> None:
        from streamer.sources.pattern import read_stamp

        for frame in self.source.frames(self.stop):
            idx = read_stamp(frame.pixels)
            if idx is not None and idx not in self.got:
                self.got[idx] = frame.capture_time
        self.source.close()


def _peer_main(url_send: str, url_recv: str, width: int, height: int, fps: float, seconds: float, results) -> None:
    """The far end (OBS's role): a paced stamped sender and a receiver, in their own process so
    their codec and Python work does not share the daemon's interpreter."""
    receiver = Receiver(url_recv, width, height, fps)
    receiver.start()
    time.sleep(0.5)  # let the receiver bind before the first packet
    sender = Sender(url_send, width, height, fps, seconds)
    sender.start()
    sender.join()
    time.sleep(1.0)  # the tail still in flight
    receiver.stop.set()
    receiver.join(timeout=5)
    results.put((sender.sent_at, receiver.got))


def _phase(
    name: str, url_send: str, url_recv: str, width: int, height: int, fps: float, seconds: float, warmup_s: float
) -> PhaseResult:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    peer = ctx.Process(target=_peer_main, args=(url_send, url_recv, width, height, fps, seconds, results), daemon=True)
    peer.start()
    sent_at, got = results.get(timeout=seconds + 60)
    peer.join(timeout=10)
    counted = [i for i, t in sent_at.items() if t - sent_at[0] >= warmup_s]
    lat = [got[i] - sent_at[i] for i in counted if i in got]
    span = (sent_at[counted[-1]] - sent_at[counted[0]]) if len(counted) > 1 else 1.0
    return PhaseResult(
        name, len(counted), len(lat), percentile(lat, 50) * 1000, percentile(lat, 99) * 1000, len(lat) / span
    )


def run_w5(
    width: int = 1280, height: int = 720, fps: float = 30.0, seconds: float = 20.0, warmup_s: float = 2.0
) -> dict:
    # 1. the raw network path (time.monotonic is system-wide on Linux, so stamps compare across processes)
    port = free_udp_port()
    url = f"udp://127.0.0.1:{port}?pkt_size=1316"
    raw = _phase("raw network path", url, url, width, height, fps, seconds, warmup_s)

    # 2. through the daemon's pipeline (passthrough)
    p_in, p_out = free_udp_port(), free_udp_port()
    url_in, url_out = f"udp://127.0.0.1:{p_in}?pkt_size=1316", f"udp://127.0.0.1:{p_out}?pkt_size=1316"
    settings = _settings(width, height, fps)
    metrics = Metrics()
    pipeline = Pipeline(
        settings,
        _network_source(url_in, width, height, fps),
        [_network_sink(url_out, width, height, fps)],
        PromptBus(""),
        metrics,
    )
    pipeline.start()
    try:
        daemon = _phase("through the daemon", url_in, url_out, width, height, fps, seconds, warmup_s)
        snap = metrics.snapshot()
    finally:
        pipeline.stop()
    return {
        "workload": "W5",
        "resolution": f"{width}x{height}",
        "fps_target": fps,
        "seconds": seconds,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "phases": [
            dataclasses.asdict(raw) | {"drop_pct": raw.drop_pct},
            dataclasses.asdict(daemon) | {"drop_pct": daemon.drop_pct},
        ],
        "added_latency_p50_ms": daemon.latency_p50_ms - raw.latency_p50_ms,
        "pipeline": {k: snap[k] for k in ("latency_p50_ms", "latency_p99_ms", "stages", "counters")},
    }


def format_table(r: dict) -> str:
    lines = [
        f"W5 passthrough {r['resolution']} @ {r['fps_target']:g} fps, {r['seconds']:g} s, {r['cores']} cores, {r['date']}",
        f"{'path':<22}{'sent':>7}{'recv':>7}{'drops %':>9}{'fps':>8}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for p in r["phases"]:
        lines.append(
            f"{p['name']:<22}{p['sent']:>7}{p['received']:>7}{p['drop_pct']:>9.2f}{p['fps_received']:>8.1f}"
            f"{p['latency_p50_ms']:>9.1f}{p['latency_p99_ms']:>9.1f}"
        )
    pl = r["pipeline"]
    lines.append(f"daemon adds {r['added_latency_p50_ms']:.1f} ms (p50) over the raw network path")
    lines.append(
        f"pipeline: capture->sink p50 {pl['latency_p50_ms']} ms p99 {pl['latency_p99_ms']} ms,"
        f" counters {pl['counters']}"
    )
    return "\n".join(lines)


def bench_pipeline_command(args: argparse.Namespace) -> int:
    result = run_w5(args.width, args.height, args.fps, args.seconds)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    daemon = result["phases"][1]
    return 0 if daemon["drop_pct"] < 1.0 else 1
