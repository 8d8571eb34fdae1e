"""Shared set-up of the source tests: drive a failing source on a thread, encode test media with PyAV."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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
