"""SinkKeeper: sinks that failed while running are closed and opened again here, off the output thread.

The output thread hands a failed sink over with `failed(sink)`, a queue put that never waits; the
keeper's own thread, started with the pipeline, closes it (which waits for its encoder process to
exit) and opens it again after RETRY_INITIAL_S, doubling up to RETRY_MAX_S while it keeps failing: a
full disk or a receiver that went away is often temporary, and a recording goes on in a new file.
One thread for the pipeline's life, not one per failure: `Thread.start()` waits until the new thread
runs, which held the output thread for 250 ms at the soak's disk-full fault on a loaded machine.
Sinks that are unavailable at start never get here: that is the machine's setup, not a failure.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamer.sinks import Sink

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0
_IDLE_S = 0.5  # how often the thread looks at `stop` when nothing is due


@dataclass
class _Waiting:
    sink: Sink
    due: float  # monotonic time of the next try
    delay: float


class SinkKeeper:
    """`on_back(sink)` puts a reopened sink back into service; it answers False when the pipeline is
    stopping, and the keeper then closes the sink instead."""

    def __init__(self, on_back: Callable[[Sink], bool]) -> None:
        self._on_back = on_back
        self._failed: queue.SimpleQueue[Sink] = queue.SimpleQueue()
        self.reopened = 0

    def failed(self, sink: Sink) -> None:
        """Called by the output thread after it took `sink` out of service; returns at once."""
        self._failed.put(sink)

    def run(self, stop: threading.Event, width: int, height: int, fps: float) -> None:
        waiting: list[_Waiting] = []
        while not stop.is_set():
            due = min((w.due for w in waiting), default=time.monotonic() + _IDLE_S)
            try:
                sink = self._failed.get(timeout=min(_IDLE_S, max(0.0, due - time.monotonic())))
            except queue.Empty:
                pass
            else:
                _close(sink)
                waiting.append(_Waiting(sink, time.monotonic() + RETRY_INITIAL_S, RETRY_INITIAL_S))
                continue
            for w in [w for w in waiting if w.due <= time.monotonic() and not stop.is_set()]:
                try:
                    w.sink.open(width, height, fps)
                except Exception as e:
                    w.delay = min(w.delay * 2, RETRY_MAX_S)
                    w.due = time.monotonic() + w.delay
                    log.warning(
                        "sink %s still failing (%s: %s); next try in %.0f s", w.sink.name, type(e).__name__, e, w.delay
                    )
                    continue
                waiting.remove(w)
                if self._on_back(w.sink):
                    self.reopened += 1
                    log.info("sink %s is back: %s", w.sink.name, w.sink.describe())
                else:
                    _close(w.sink)


def _close(sink: Sink) -> None:
    try:
        sink.close()
    except Exception:  # it failed already (the reason is logged); closing only lets go of its file and process
        pass
