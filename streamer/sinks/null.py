"""Null sink: discards frames and counts them (benchmarks, headless tests, a pipeline with no output)."""

from __future__ import annotations

from typing import Any

from streamer.frames import Frame
from streamer.sinks import Sink


class NullSink(Sink):
    """Counts frames and remembers the last one; writes nothing anywhere."""

    name = "null"

    def __init__(self, settings: Any = None) -> None:
        super().__init__()
        self.last: Frame | None = None
        self.size: tuple[int, int] | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)

    def write(self, frame: Frame) -> None:
        self.last = frame
        self.frames_written += 1

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"null ({self.frames_written} frames discarded)"
