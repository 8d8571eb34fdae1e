"""The one frame type that flows through the whole pipeline, and the mailboxes between threads.

Real-time edges are one-slot mailboxes (newest wins) so a slow consumer drops frames
instead of accumulating lag; see docs/architecture.md.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


def now() -> float:
    """The pipeline's clock: monotonic seconds, shared by capture stamps and sink hand-off."""
    return time.monotonic()


@dataclass(frozen=True, slots=True)
class Frame:
    """A video frame.

    pixels: HxWx3 uint8 RGB on the CPU (a numpy array), or a torch tensor on a GPU inside the engine.
    capture_time: `now()` when the source produced the frame; kept end to end so the sink side
        can measure glass-to-glass latency.
    index: the source's running frame number (gaps mean drops upstream).
    pts: presentation time in seconds relative to the source's start.
    """

    pixels: Any
    capture_time: float
    index: int = 0
    pts: float = 0.0

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def with_pixels(self, pixels: Any) -> Frame:
        """Same timing, new picture: what every transform returns."""
        return replace(self, pixels=pixels)


def blank_frame(width: int, height: int, capture_time: float | None = None) -> Frame:
    """A mid-grey frame (never black: black reads as a dead stream)."""
    pixels = np.full((height, width, 3), 64, dtype=np.uint8)
    return Frame(pixels=pixels, capture_time=now() if capture_time is None else capture_time)


class LatestFrameSlot:
    """One-slot mailbox: `put` replaces whatever is waiting (counting it as dropped),
    `get` waits for the next frame. Never grows, so lag can never accumulate."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, or None on timeout or after close()."""
        deadline = None if timeout is None else now() + timeout
        with self._cond:
            while self._frame is None and not self._closed:
                remaining = None if deadline is None else deadline - now()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class OutputQueue:
    """The engine → output edge. A chunked model hands over several frames at once, so this holds
    a few frames (oldest dropped beyond `capacity`); the output thread takes one per tick."""

    def __init__(self, capacity: int = 8) -> None:
        self._lock = threading.Condition()
        self._frames: collections.deque[Frame] = collections.deque()
        self._capacity = capacity
        self.dropped = 0

    def put_many(self, frames: list[Frame]) -> None:
        """Queue a transform's output. Beyond one batch plus one frame of jitter, older frames are
        dropped: a network source often delivers two frames at once (kept and spaced out), but if
        the sinks fall behind for good, latency stays at about one batch instead of growing."""
        with self._lock:
            self._frames.extend(frames)
            keep = min(self._capacity, len(frames) + 1)
            while len(self._frames) > keep:
                self._frames.popleft()
                self.dropped += 1
            self._lock.notify_all()

    def take(self, timeout: float = 0.0) -> Frame | None:
        """The oldest waiting frame, waiting up to `timeout` seconds for one; None if none came."""
        with self._lock:
            if not self._frames and timeout > 0:
                self._lock.wait_for(lambda: bool(self._frames), timeout)
            return self._frames.popleft() if self._frames else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
