"""Media-file source: any file PyAV can decode, looped forever and paced in real time by its pts."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import av

from streamer import frames as frames_mod
from streamer.frames import Frame
from streamer.sources import Source, SourceError, to_rgb

_RESYNC_S = 0.5  # this far behind schedule (slow decode, busy machine): restart the clock, don't burst


class FileSource(Source):
    """Plays source.path at its own frame rate, scaled to the video size; at the end it starts over
    (pts keep increasing across loops, so downstream timing never jumps back)."""

    name = "file"

    def describe(self) -> str:
        return f"file {self.settings.source.path}"

    def _read(self, halt: threading.Event) -> Iterator[Frame]:
        path = os.path.expanduser(self.settings.source.path)
        if not os.path.isfile(path):
            raise SourceError(f"media file {path!r} does not exist (set source.path)")
        offset = 0.0  # seconds of media already played in earlier loops
        anchor: float | None = None  # wall time at which media time 0 (of loop 0) is due
        while not halt.is_set():
            try:
                container = av.open(path)
            except av.FFmpegError as e:
                raise SourceError(f"cannot open {path!r}: {e}") from e
            try:
                if not container.streams.video:
                    raise SourceError(f"{path!r} has no video stream")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # a file is not latency-bound: use every decoder thread
                rate = stream.average_rate or stream.guessed_rate
                step = 1.0 / float(rate) if rate else 1.0 / self.fps
                first: float | None = None
                media_t = offset
                count = 0
                for decoded in container.decode(stream):
                    t = decoded.time if decoded.time is not None else count * step
                    if first is None:
                        first = t
                    media_t = offset + max(0.0, t - first)
                    pixels = to_rgb(decoded, self.width, self.height)
                    now = frames_mod.now()
                    if anchor is None:
                        anchor = now - media_t
                    wait = anchor + media_t - now
                    if wait > 0:
                        if halt.wait(wait):
                            return
                    elif wait < -_RESYNC_S:
                        anchor = now - media_t
                    count += 1
                    yield self._emit(pixels, pts=media_t)
                    if halt.is_set():
                        return
                if count == 0:
                    raise SourceError(f"{path!r} has no decodable video frames")
                offset = media_t + step
            finally:
                container.close()
