"""Record sink: the output to a video file (H.264 by default), playable after close().

`{time}` in the path becomes the start time (YYYYmmdd-HHMMSS); an existing file is never overwritten
(a numbered name is used instead). MP4 is written fragmented (a moov up front, a fragment per
keyframe), so even a recording cut off by a crash or power loss plays up to its last keyframe.
"""

from __future__ import annotations

import os
import time
from typing import Any

import av

from streamer.sinks import SinkUnavailable
from streamer.sinks.encoder import EncodingSink, open_encoder
from streamer.sinks.encoder_process import EncoderOpenError

KEYFRAME_INTERVAL_S = 2.0  # also the most a crash can lose from a fragmented MP4
# flush_packets: each fragment goes to the file when it is complete. Without it FFmpeg keeps 256 KiB in its
# write buffer, which a full disk (or a lost host) takes with it: at a low bitrate that was 20 s of video.
_MP4_OPTIONS = {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


def expand_path(pattern: str, when: float | None = None) -> str:
    """The recording path: ~ expanded, {time} filled in, and never an existing file."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    path = os.path.expanduser(pattern.replace("{time}", stamp))
    root, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(path):
        path = f"{root}-{n}{ext}"
        n += 1
    return path


class RecordSink(EncodingSink):
    """Writes every output frame to sinks.record.path (or the `--record` path)."""

    name = "record"

    def __init__(self, settings: Any, path: str | None = None) -> None:
        super().__init__()
        self.cfg = settings.sinks.record
        self.path_pattern: str = path or self.cfg.path
        self.path = ""  # the actual file, known after open()

    def describe(self) -> str:
        return f"record {self.path or self.path_pattern} ({self.cfg.codec}, crf {self.cfg.crf})"

    def open(self, width: int, height: int, fps: float) -> None:
        path = expand_path(self.path_pattern)
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise SinkUnavailable(f"cannot create the recording folder {folder}: {e}\n"
                                  "set sinks.record.path to a writable place") from e
        ext = os.path.splitext(path)[1].lower()
        codec_options = {"crf": str(self.cfg.crf), "preset": self.cfg.preset} if "264" in self.cfg.codec else {}
        try:
            self._encoder = open_encoder(
                path,
                format=None,  # from the extension
                width=width,
                height=height,
                fps=fps,
                codec=self.cfg.codec,
                codec_options=codec_options,
                container_options=_MP4_OPTIONS if ext in (".mp4", ".mov") else {},
                gop=max(1, round(fps * KEYFRAME_INTERVAL_S)),
            )
        except (av.FFmpegError, ValueError, EncoderOpenError) as e:
            raise SinkUnavailable(f"cannot record to {path}: {e}\n"
                                  "use a .mp4/.mkv path and an FFmpeg encoder such as libx264") from e
        self.path = path
        self._size = (width, height)
