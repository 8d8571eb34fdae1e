"""Video sources: where the pipeline's frames come from.

Every source runs its blocking reads (decoding, network waits, device reads) on a reader thread of
its own, one per connection attempt ("session"), and hands frames over through a small queue. That
keeps `frames()` responsive: it notices `stop` within ~0.1 s even while the reader is stuck in a
network read that only gives up at `source.timeout_s`. When a session ends (input dropped, stream
ended, device vanished) the source logs it once, waits with exponential backoff and opens a new
session, forever, until stopped.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer import frames as frames_mod
from streamer.frames import Frame

if TYPE_CHECKING:
    from streamer.config import Settings
    from streamer.doctor import Check

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often frames() looks at `stop` while waiting for the reader


class SourceError(RuntimeError):
    """The input cannot be opened or read; the message says what is wrong and how to fix it."""


class _End:
    """Queue marker: the reader's session is over (error is None for a clean end of stream)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Source(ABC):
    """A reconnecting frame producer.

    Subclasses implement `_read(halt)`: open the input, yield frames made with `_emit()` until the
    input ends (return) or fails (raise; `SourceError` for a message meant for the streamer), and
    check `halt` between frames. Everything else (threads, backoff, logging, counters) lives here.
    """

    name: str = "source"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.width = settings.video.width
        self.height = settings.video.height
        self.fps = settings.video.fps
        self.reconnects = 0  # sessions that delivered frames again after a drop or a failed open
        self.drops = 0  # sessions that delivered frames, then ended
        self.last_error = ""  # the most recent failure, for doctor and the dashboard
        self.next_index = 0  # index of the next frame `_emit` makes
        self._start_time: float | None = None
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ subclass API

    @abstractmethod
    def _read(self, halt: threading.Event) -> Iterator[Frame]:
        """One session: open the input and yield frames until it ends or fails."""

    def describe(self) -> str:
        """What this source reads, for log lines."""
        return self.name

    def _emit(self, pixels: np.ndarray, pts: float | None = None) -> Frame:
        """A frame stamped now, with the next running index; pts defaults to seconds since start."""
        t = frames_mod.now()
        if self._start_time is None:
            self._start_time = t
        frame = Frame(pixels=pixels, capture_time=t, index=self.next_index,
                      pts=t - self._start_time if pts is None else pts)
        self.next_index += 1
        return frame

    # ------------------------------------------------------------------ the contract

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Frames forever (reconnecting by itself) until `stop` is set."""
        cfg = self.settings.source
        delay = cfg.reconnect_initial_s
        failing = False  # true after a drop or a failed open, until frames flow again
        while not stop.is_set():
            halt = threading.Event()
            mailbox: queue.Queue[Frame | _End] = queue.Queue(maxsize=4)
            reader = threading.Thread(target=self._reader_main, args=(halt, mailbox),
                                      name=f"source-{self.name}", daemon=True)
            with self._lock:
                self._readers = [r for r in self._readers if r.is_alive()] + [reader]
            reader.start()
            delivered = 0
            error: BaseException | None = None
            try:
                while not stop.is_set():
                    try:
                        item = mailbox.get(timeout=_POLL_S)
                    except queue.Empty:
                        continue
                    if isinstance(item, _End):
                        error = item.error
                        break
                    if delivered == 0 and failing:
                        self.reconnects += 1
                        log.warning("%s: input is back (reconnect #%d)", self.describe(), self.reconnects)
                    failing = False
                    delay = cfg.reconnect_initial_s
                    delivered += 1
                    yield item
            finally:
                halt.set()  # the reader stops at its next frame or read timeout
            if stop.is_set():
                break
            reason = _reason(error)
            self.last_error = reason
            if delivered:
                self.drops += 1
                log.warning("%s: input dropped (%s); reconnecting with backoff from %.1f s",
                            self.describe(), reason, delay)
            elif not failing:
                log.warning("%s: cannot open (%s); retrying with backoff up to %.0f s",
                            self.describe(), reason, cfg.reconnect_max_s)
            else:
                log.debug("%s: still unavailable (%s); next try in %.1f s", self.describe(), reason, delay)
            failing = True
            stop.wait(delay)
            delay = min(delay * 2.0, cfg.reconnect_max_s)

    def close(self) -> None:
        """Wait (bounded) for reader threads that are finishing their last read."""
        with self._lock:
            readers, self._readers = self._readers, []
        deadline = time.monotonic() + self.settings.source.timeout_s + 1.0
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ internals

    def _reader_main(self, halt: threading.Event, mailbox: queue.Queue[Frame | _End]) -> None:
        end = _End(None)
        try:
            for frame in self._read(halt):
                if halt.is_set():
                    break
                _put(mailbox, frame, halt)
        except BaseException as e:  # handed to frames(), which logs it and reconnects
            end = _End(e)
        _put(mailbox, end, halt, always=True)


def _put(mailbox: queue.Queue[Any], item: Any, halt: threading.Event, always: bool = False) -> None:
    """Put without blocking forever: the consumer may have gone away (halt set)."""
    while True:
        try:
            mailbox.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            if halt.is_set():
                if always:  # make room so frames() still sees why the session ended
                    try:
                        mailbox.get_nowait()
                    except queue.Empty:
                        pass
                    continue
                return


def _reason(error: BaseException | None) -> str:
    if error is None:
        return "end of stream"
    if isinstance(error, SourceError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def to_rgb(frame: Any, width: int, height: int) -> np.ndarray:
    """A PyAV VideoFrame as an HxWx3 uint8 RGB array at exactly width x height (scaled if needed)."""
    if frame.width != width or frame.height != height or frame.format.name != "rgb24":
        frame = frame.reformat(width=width, height=height, format="rgb24")
    return np.ascontiguousarray(frame.to_ndarray())


_KINDS = {
    "pattern": "streamer.sources.pattern:PatternSource",
    "file": "streamer.sources.file:FileSource",
    "network": "streamer.sources.network:NetworkSource",
    "camera": "streamer.sources.camera:CameraSource",
}


def build_source(settings: Settings) -> Source:
    """The source named by source.kind (modules load lazily: cv2 only when a camera is used)."""
    module, cls = _KINDS[settings.source.kind].split(":")
    source: Source = getattr(importlib.import_module(module), cls)(settings)
    return source


def first_frame(source: Source, timeout_s: float) -> Frame:
    """Open `source` and wait for one frame; raises SourceError with the reason if none comes."""
    stop = threading.Event()
    result: list[Frame] = []

    def wait() -> None:
        for frame in source.frames(stop):
            result.append(frame)
            return

    waiter = threading.Thread(target=wait, name="source-probe", daemon=True)
    waiter.start()
    deadline = time.monotonic() + timeout_s
    while waiter.is_alive() and not source.last_error and time.monotonic() < deadline:
        waiter.join(0.05)  # the first failed open is the answer: no need to sit through the backoff
    stop.set()
    waiter.join(1.0)
    source.close()
    if not result:
        raise SourceError(source.last_error or f"no frame within {timeout_s:.0f} s")
    return result[0]


def doctor_checks(settings: Settings) -> Iterable[Check]:
    """The configured source opens and yields a frame of the configured size within a few seconds."""
    from streamer.doctor import Check

    kind = settings.source.kind
    try:
        source = build_source(settings)
    except (SourceError, ImportError) as e:
        yield Check(f"source ({kind})", "FAIL", str(e), _FIXES[kind])
        return
    t0 = time.monotonic()
    try:
        frame = first_frame(source, timeout_s=max(3.0, settings.source.timeout_s + 1.0))
    except SourceError as e:
        yield Check(f"source ({kind})", "FAIL", f"{source.describe()}: {e}", _FIXES[kind])
        return
    yield Check(f"source ({kind})", "OK",
                f"{source.describe()}: first {frame.width}x{frame.height} frame after {time.monotonic() - t0:.2f} s")


_FIXES = {
    "pattern": "the bundled FFmpeg lacks lavfi? reinstall PyAV: pip install --force-reinstall av",
    "file": "set source.path to a readable video file",
    "network": "start the sender first (e.g. OBS: Settings → Output → Recording → Custom Output (FFmpeg) "
               "to the same udp:// URL as mpegts) and check source.url / source.format",
    "camera": "check source.device and that the camera (or OBS's virtual camera) is running",
}
