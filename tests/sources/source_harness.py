"""Shared set-up of the source tests: drive a failing source on a thread, encode test media with PyAV,
send stamped frames over loopback UDP through the real network sink."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer import config
from streamer.frames import Frame, now
from streamer.sinks.network import NetworkSink
from streamer.sources.pattern import stamp_index

W, H, FPS = 320, 180, 30.0


@dataclass(frozen=True)
class StoppedReader:
    still_running: bool  # the reader thread had not ended 2 s after stop was set
    stop_s: float  # from setting stop to the end of the join


def read_until_error(source: Any, wait_s: float = 2.0) -> StoppedReader:
    """Read `source.frames()` on a thread until the source reports `last_error` (or wait_s passes),
    then set stop and join; says whether the reader ended and how long stopping took."""
    stop = threading.Event()
    reader = threading.Thread(target=lambda: list(source.frames(stop)))
    reader.start()
    deadline = time.monotonic() + wait_s
    while not source.last_error and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    stop.set()
    reader.join(2)
    return StoppedReader(still_running=reader.is_alive(), stop_s=time.monotonic() - t0)


def encode_all(container: Any, stream: Any, frames: Iterable[Any]) -> None:
    """Encode `frames` on `stream`, then flush the encoder, muxing every packet into `container`."""
    for frame in frames:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):  # the encoder holds frames back until it is flushed
        container.mux(packet)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def network_settings(port: int, *, sink_port: int | None = None, **source: Any) -> config.Settings:
    """A network source on udp `port` (fast timeouts) and a network sink to `sink_port` (default: the same)."""
    url = f"udp://127.0.0.1:{port}"
    return config.from_dict({
        "video": {"width": W, "height": H, "fps": FPS},
        "source": {"kind": "network", "url": url, "timeout_s": 0.5, "reconnect_initial_s": 0.1,
                   "reconnect_max_s": 0.4, **source},
        "sinks": {"enabled": ["network"],
                  "network": {"url": f"udp://127.0.0.1:{sink_port or port}?pkt_size=1316"}},
    }, "test")


class Sender:
    """Writes stamped frames through the real NetworkSink at FPS on a thread; can pause.
    `first`: the first stamp (a second sender counts from elsewhere, so its frames are told apart)."""

    def __init__(self, s: config.Settings, first: int = 0) -> None:
        self.sink = NetworkSink(s)
        self.sink.open(W, H, FPS)
        self.first = first
        self.sent: dict[int, float] = {}
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        base = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
        i, t0 = 0, now()
        while not self.stop.is_set():
            if not self.paused.is_set():
                px = base.copy()
                stamp_index(px, self.first + i)
                self.sent[self.first + i] = now()
                self.sink.write(Frame(px, now(), i))
            i += 1
            self.stop.wait(max(0.0, t0 + i / FPS - now()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sink.close()
