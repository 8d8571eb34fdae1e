"""Is the recording playable? Each segment the record sink wrote is decoded with PyAV, frame by frame.

A segment cut off by a fault (the disk full, the daemon SIGKILLed) is a fragmented MP4 that ends
mid-fragment: it plays up to its last complete fragment, and the decoder's complaint about the torn
tail is recorded, not counted as unplayable. Unplayable means: it does not open, or no frame decodes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av

from streamer.sinks.record import KEYFRAME_INTERVAL_S


@dataclass
class Segment:
    name: str
    bytes: int
    frames: int
    seconds: float  # presentation time of the last decoded frame (the file's timeline is wall time)
    error: str  # "" or what stopped decoding (a torn tail after frames is not fatal)

    @property
    def playable(self) -> bool:
        return self.frames > 0

    def plays_until(self, seconds_in: float, slack_s: float) -> bool:
        """Whether it plays at least up to `seconds_in` after its start, give or take `slack_s`."""
        return self.playable and self.seconds >= seconds_in - slack_s


def decode_segment(path: Path) -> Segment:
    frames, last, error = 0, 0.0, ""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            try:
                for frame in container.decode(stream):
                    frames += 1
                    if frame.pts is not None and frame.time_base is not None:
                        last = float(frame.pts * frame.time_base)
            except av.FFmpegError as e:
                error = f"{type(e).__name__}: {e}"
    except (av.FFmpegError, IndexError, OSError) as e:
        error = f"{type(e).__name__}: {e}"
    return Segment(path.name, path.stat().st_size, frames, round(last, 2), error)


def check_recordings(folder: Path) -> list[Segment]:
    return [decode_segment(p) for p in sorted(folder.glob("*.mp4"))]


# A segment plays up to a moment if it reaches it within one keyframe interval (what a cut loses at most)
# plus the second by which the soak may have seen the file late.
SLACK_S = KEYFRAME_INTERVAL_S + 1.0


def playable_at(segments: list[Segment], name: str | None, seconds_in: float) -> bool | None:
    """Whether segment `name` plays up to `seconds_in` after it was first seen (None: no recording then)."""
    seg = next((s for s in segments if s.name == name), None)
    return None if seg is None else seg.plays_until(seconds_in, SLACK_S)


def as_dicts(segments: list[Segment]) -> list[dict[str, Any]]:
    return [{**asdict(s), "playable": s.playable} for s in segments]
