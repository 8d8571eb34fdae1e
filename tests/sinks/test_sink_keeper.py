"""SinkKeeper: a failed sink is closed on the keeper's thread, reopened with doubling delays while it keeps
failing, put back through on_back, and closed instead when the pipeline is stopping."""

from __future__ import annotations

import threading
import time

import pytest

import streamer.sinks.keeper as keeper
from streamer.sinks.keeper import SinkKeeper


class Sink:
    name = "record"

    def __init__(self, failures: int) -> None:
        self.failures, self.opens, self.closes = failures, [], 0

    def open(self, width: int, height: int, fps: float) -> None:
        self.opens.append(time.monotonic())
        if len(self.opens) <= self.failures:
            raise OSError("No space left on device")

    def close(self) -> None:
        self.closes += 1

    def describe(self) -> str:
        return "record x.mp4"


def run(k: SinkKeeper, stop: threading.Event) -> threading.Thread:
    t = threading.Thread(target=k.run, args=(stop, 64, 64, 10.0), name="keeper")
    t.start()
    return t


@pytest.mark.parametrize("accept", [True, False])
def test_reopened_with_doubling_delays_then_handed_back(monkeypatch, accept):
    monkeypatch.setattr(keeper, "RETRY_INITIAL_S", 0.05)
    back: list = []
    k, stop = SinkKeeper(lambda s: back.append(s) or accept), threading.Event()
    thread = run(k, stop)
    sink = Sink(failures=2)
    t0 = time.monotonic()
    k.failed(sink)
    deadline = time.monotonic() + 5
    while len(sink.opens) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    stop.set()
    thread.join(2)
    assert back == [sink] and k.reopened == int(accept)
    waits = [b - a for a, b in zip([t0, *sink.opens], sink.opens, strict=False)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1 and waits[2] >= 0.2  # 1x, 2x, 4x the first delay
    assert sink.closes == (1 if accept else 2)  # closed on failure; again when the pipeline would not take it back


def test_failed_returns_at_once_and_the_keeper_stops_promptly():
    k, stop = SinkKeeper(lambda s: True), threading.Event()
    thread = run(k, stop)
    t0 = time.monotonic()
    k.failed(Sink(failures=100))
    assert time.monotonic() - t0 < 0.01
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
