"""Video sinks: where the pipeline's output frames go (virtual camera, network to OBS, recording, null).

The output thread opens every sink once with the video size and fps, writes each paced frame to all
of them, and closes them at the end. A sink that cannot work on this machine raises `SinkUnavailable`
from `open()` with the fix in its message; the pipeline then carries on with the others.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.frames import Frame

if TYPE_CHECKING:
    from streamer.config import Settings
    from streamer.doctor import Check


class SinkUnavailable(RuntimeError):
    """This sink cannot work here; the message says what to install or change."""


class Sink(ABC):
    """Receives paced output frames (HxWx3 uint8 RGB at the size given to `open`)."""

    name: str = "sink"

    def __init__(self) -> None:
        self.frames_written = 0

    @abstractmethod
    def open(self, width: int, height: int, fps: float) -> None:
        """Get ready for frames of this size and rate; SinkUnavailable when it cannot work here."""

    @abstractmethod
    def write(self, frame: Frame) -> None:
        """Take one frame; must return within a frame interval in normal operation."""

    @abstractmethod
    def close(self) -> None:
        """Finalise (flush encoders, write trailers); safe to call twice or before open."""

    @property
    def frames_dropped(self) -> int:
        """Frames write() took but will never deliver (the pipeline counts them as `drops_sink_<name>`):
        an encoder process a whole queue behind; 0 for a sink that delivers or blocks."""
        return 0

    def describe(self) -> str:
        return self.name


def frame_rgb(frame: Frame, width: int, height: int) -> np.ndarray:
    """The frame's pixels as a contiguous HxWx3 uint8 numpy array of exactly width x height.

    Copies or scales only when needed: a torch tensor (the engine may hand one over) is brought to the
    CPU, and a frame of the wrong size is scaled rather than refused so the stream never stops.
    """
    pixels: Any = frame.pixels
    if not isinstance(pixels, np.ndarray):
        pixels = pixels.detach().cpu().numpy() if hasattr(pixels, "detach") else np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"sink expects HxWx3 uint8 RGB, got {pixels.dtype} {pixels.shape}")
    if pixels.shape[0] != height or pixels.shape[1] != width:
        import av  # only on this rare path

        scaled = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        pixels = scaled.reformat(width=width, height=height).to_ndarray()
    return np.ascontiguousarray(pixels)


def rate_of(fps: float) -> Fraction:
    """fps as an exact fraction (29.97 -> 30000/1001) for encoder time bases."""
    return Fraction(fps).limit_denominator(1001)


class FrameClock:
    """Presentation timestamps from wall time on the 1/fps grid: a recording lasts as long as the
    stream did even when the output thread skipped ticks, and pts never repeat when writes bunch up."""

    def __init__(self, fps: float) -> None:
        self.rate = rate_of(fps)
        self._t0: float | None = None
        self._last = -1

    def next_pts(self) -> int:
        t = time.monotonic()
        if self._t0 is None:
            self._t0 = t
        pts = max(self._last + 1, round((t - self._t0) * float(self.rate)))
        self._last = pts
        return pts


_KINDS = {
    "virtualcam": "streamer.sinks.virtualcam:VirtualCamSink",
    "network": "streamer.sinks.network:NetworkSink",
    "record": "streamer.sinks.record:RecordSink",
    "null": "streamer.sinks.null:NullSink",
}


def _make(kind: str, settings: Settings, **kwargs: Any) -> Sink:
    module, cls = _KINDS[kind].split(":")
    sink: Sink = getattr(importlib.import_module(module), cls)(settings, **kwargs)
    return sink


def build_sinks(settings: Settings, record_path: str | None = None) -> list[Sink]:
    """The sinks listed in sinks.enabled, plus a recording at record_path (`streamer run --record`)."""
    sinks = []
    for kind in settings.sinks.enabled:
        if kind == "record" and record_path:
            continue  # --record replaces the configured recording path
        sinks.append(_make(kind, settings))
    if record_path:
        sinks.append(_make("record", settings, path=record_path))
    return sinks


def doctor_checks(settings: Settings) -> Iterable[Check]:
    """Each configured sink can open here: virtual camera backend present, URL valid, folder writable."""
    from streamer.doctor import Check

    v = settings.video
    if not settings.sinks.enabled:
        yield Check("sinks", "WARN", "no sink enabled: the output goes nowhere", "set sinks.enabled, e.g. ['network']")
    for kind in settings.sinks.enabled:
        sink = _make(kind, settings)
        label = f"sink {kind}"
        try:
            if kind == "record":
                yield _record_check(label, sink)
                continue
            sink.open(v.width, v.height, v.fps)
        except SinkUnavailable as e:
            # the daemon carries on with the other sinks, so that is a warning, a lone sink a failure
            others = [k for k in settings.sinks.enabled if k not in (kind, "null")]
            yield Check(label, "WARN" if others else "FAIL", str(e).splitlines()[0], _fix_of(e))
            continue
        except Exception as e:
            yield Check(label, "FAIL", f"{type(e).__name__}: {e}", "see the error above")
            continue
        finally:
            if kind != "record":
                sink.close()
        yield Check(label, "OK", sink.describe())


def _fix_of(e: SinkUnavailable) -> str:
    lines = str(e).splitlines()
    return " ".join(lines[1:]) if len(lines) > 1 else str(e)


def _record_check(label: str, sink: Sink) -> Check:
    from streamer.doctor import Check

    folder = os.path.dirname(os.path.abspath(getattr(sink, "path_pattern", "."))) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".streamer-doctor-"):
            pass
    except OSError as e:
        return Check(label, "FAIL", f"cannot write to {folder}: {e}", "set sinks.record.path to a writable folder")
    return Check(label, "OK", f"{folder} is writable")
