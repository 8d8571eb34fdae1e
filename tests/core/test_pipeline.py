"""Pipeline threading behaviour with in-memory sources, transforms and sinks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamer import config
from streamer.frames import Frame, now
from streamer.metrics import Metrics
from streamer.pipeline import Pipeline
from streamer.prompts import PromptBus
from streamer.sinks import Sink

W, H = 32, 16


def settings(fps: float = 30.0, retry: float = 10.0):
    return config.from_dict(
        {"video": {"width": W, "height": H, "fps": fps}, "engine": {"retry_model_after_s": retry}}, "test"
    )


class CountingSource:
    """Produces frames whose first pixel carries the index, at `fps`."""

    name = "counting"

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.closed = False

    def frames(self, stop: threading.Event):
        i = 0
        while not stop.is_set():
            px = np.zeros((H, W, 3), np.uint8)
            px[0, 0, 0] = i % 256
            yield Frame(px, now(), index=i)
            i += 1
            stop.wait(1 / self.fps)

    def close(self) -> None:
        self.closed = True


class ListSink(Sink):  # the real base: the pipeline and the sink keeper call its describe() and frames_dropped
    def __init__(self, name: str = "list") -> None:
        self.name = name
        self.frames: list[Frame] = []
        self.opened = self.closed = False

    def open(self, width: int, height: int, fps: float) -> None:
        assert (width, height) == (W, H)
        self.opened = True

    def write(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True


class SlowTransform:
    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.seen: list[int] = []

    def step(self, frame, prompt):
        self.seen.append(frame.index)
        time.sleep(self.delay)
        return [frame.with_pixels(255 - frame.pixels)]

    def reset(self) -> None: ...
    def close(self) -> None: ...
    def status(self) -> str:
        return "slow"


class FailingTransform(SlowTransform):
    name = "failing"

    def __init__(self, fail_times: int) -> None:
        super().__init__(0.0)
        self.fail_times = fail_times
        self.resets = 0

    def step(self, frame, prompt):
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("CUDA error: boom")
        return super().step(frame, prompt)

    def reset(self) -> None:
        self.resets += 1


def run_pipeline(pipeline: Pipeline, seconds: float) -> None:
    pipeline.start()
    try:
        time.sleep(seconds)
    finally:
        pipeline.stop()


def wait_model(pipeline: Pipeline) -> None:
    deadline = time.monotonic() + 5
    while pipeline._model is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_latest_frame_wins_under_a_slow_transform():
    """A transform at 1/4 of the input rate must drop frames, not build up lag."""
    sink = ListSink()
    metrics = Metrics()
    slow = SlowTransform(delay=0.12)
    p = Pipeline(settings(fps=30), CountingSource(30), [sink], PromptBus("x"), metrics, lambda s: slow)
    p.start()
    wait_model(p)
    time.sleep(2.5)
    p.stop()
    assert len(slow.seen) >= 5
    assert np.diff(slow.seen).max() >= 2, "engine must skip to the newest frame"
    assert metrics.snapshot()["counters"]["drops_input"] > 0
    # lag does not grow: frames handed over late in the run are as fresh as early ones
    # (each output's age at hand-off is at most about one transform step plus scheduling noise)
    fresh = [f for f in sink.frames if f.pixels[0, 0, 0] == 255 - (f.index % 256)]
    assert len(fresh) >= 5
    assert metrics.snapshot()["latency_p99_ms"] < 700, metrics.snapshot()
    assert slow.seen[-1] >= max(f.index for f in fresh) and slow.seen[-1] > 45, "engine fell behind the source"
    assert sink.opened and sink.closed


def test_output_is_paced_and_repeats_the_last_frame_when_the_engine_is_late():
    sink = ListSink()
    metrics = Metrics()
    p = Pipeline(settings(fps=50), CountingSource(5), [sink], PromptBus("x"), metrics)
    run_pipeline(p, 1.2)
    assert 45 <= len(sink.frames) <= 70, len(sink.frames)  # ~50 fps out from a 5 fps source
    assert metrics.snapshot()["counters"]["repeats"] > 20


def test_transform_failure_falls_back_to_passthrough_within_one_frame_and_retries():
    sink = ListSink()
    metrics = Metrics()
    failing = FailingTransform(fail_times=1)
    p = Pipeline(settings(fps=30, retry=0.3), CountingSource(30), [sink], PromptBus("x"), metrics, lambda s: failing)
    p.start()
    wait_model(p)
    time.sleep(1.2)
    p.stop()
    assert metrics.snapshot()["counters"]["model_failures"] == 1
    assert failing.resets >= 1, "model retried after the cool-down"
    assert failing.seen, "model used again after the retry"
    # no frame was ever black/blank: passthrough frames carry the source pixels
    idx_in_first = [f.pixels[0, 0, 0] for f in sink.frames]
    assert idx_in_first


def test_kill_switch_and_scene_activation_route_to_passthrough():
    sink = ListSink()
    bus = PromptBus("x")
    slow = SlowTransform(0.0)
    p = Pipeline(settings(), CountingSource(30), [sink], bus, Metrics(), lambda s: slow)
    p.start()
    wait_model(p)
    time.sleep(0.2)
    bus.set_enabled(False, source="test", author="t")
    time.sleep(0.1)
    n = len(slow.seen)
    time.sleep(0.3)
    assert len(slow.seen) == n, "model ran while the kill switch was off"
    assert "kill switch" in p.transform_status()
    bus.set_enabled(True, source="test", author="t")
    p.set_scene_active(False)
    time.sleep(0.1)
    n = len(slow.seen)
    time.sleep(0.3)
    assert len(slow.seen) == n and "scene inactive" in p.transform_status()
    p.set_scene_active(True)
    time.sleep(0.3)
    p.stop()
    assert len(slow.seen) > n


def test_model_that_fails_to_load_leaves_passthrough_running():
    sink = ListSink()

    def broken(s):
        raise FileNotFoundError("weights.safetensors")

    p = Pipeline(settings(), CountingSource(30), [sink], PromptBus("x"), Metrics(), broken)
    run_pipeline(p, 0.5)
    assert "failed to load" in p.transform_status() and "weights.safetensors" in p.transform_status()
    assert len(sink.frames) > 5


def test_unavailable_sink_is_skipped_and_others_keep_running():
    from streamer.sinks import SinkUnavailable

    class Missing(ListSink):
        def open(self, width, height, fps):
            raise SinkUnavailable("no v4l2loopback: sudo modprobe v4l2loopback")

    good = ListSink("good")
    metrics = Metrics()
    p = Pipeline(settings(), CountingSource(30), [Missing("virtualcam"), good], PromptBus("x"), metrics)
    run_pipeline(p, 0.5)
    assert len(good.frames) > 5
    assert "modprobe" in metrics.snapshot()["info"]["sink_virtualcam"]


def test_a_sink_that_fails_while_running_is_reopened_in_the_background(monkeypatch):
    """A full disk: the record sink's write raises; the others never miss a frame, and it comes back
    (a new file) after its retry delay, opened off the output thread."""
    import streamer.sinks.keeper as keeper

    monkeypatch.setattr(keeper, "RETRY_INITIAL_S", 0.1)

    class Flaky(ListSink):
        def __init__(self) -> None:
            super().__init__("record")
            self.opens, self.fail_next, self.open_threads, self.close_threads = 0, 0, [], []

        def open(self, width, height, fps):
            self.opens += 1
            self.open_threads.append(threading.current_thread().name)
            if self.opens == 2:  # still full on the first retry
                raise OSError("No space left on device")
            super().open(width, height, fps)

        def write(self, frame):
            if self.fail_next:
                self.fail_next -= 1
                raise OSError("File too large")
            super().write(frame)

        def close(self):  # an encoder process's close waits for it to exit: never on the output thread
            self.close_threads.append(threading.current_thread().name)
            time.sleep(0.3)
            super().close()

    flaky, good, metrics = Flaky(), ListSink("good"), Metrics()
    p = Pipeline(settings(), CountingSource(30), [flaky, good], PromptBus("x"), metrics)
    p.start()
    try:
        time.sleep(0.3)
        flaky.fail_next = 1
        deadline = time.monotonic() + 5
        while flaky.opens < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        n = len(flaky.frames)
        time.sleep(0.3)
        assert len(flaky.frames) > n, "the reopened sink gets frames again"
    finally:
        p.stop()
    counters = metrics.snapshot()["counters"]
    assert counters["sink_errors"] == 1 and counters["sink_reopens"] == 1
    assert flaky.open_threads[1:] == ["streamer-sinks"] * 2  # never on the output thread
    assert flaky.close_threads[0] == "streamer-sinks"
    assert flaky.closed and flaky in p.sinks
    assert metrics.snapshot()["output_gap_max_ms"] < 200  # the good sink was never held up


@pytest.mark.parametrize("limit", [7])
def test_frame_limit_stops_output_exactly(limit):
    sink = ListSink()
    p = Pipeline(settings(fps=60), CountingSource(60), [sink], PromptBus("x"), Metrics())
    p.frame_limit = limit
    p.start()
    assert p.frames_done.wait(5)
    p.stop()
    assert len(sink.frames) == limit


def test_set_steps_builds_a_new_model_in_the_background_and_swaps_it_in():
    built = []

    class Recording(SlowTransform):
        def __init__(self, steps):
            super().__init__(0.0)
            self.steps, self.closed = steps, False

        def close(self):
            self.closed = True

    def factory(s):
        built.append(Recording(s.model.steps))
        return built[-1]

    sink = ListSink()
    p = Pipeline(settings(), CountingSource(30), [sink], PromptBus("x"), Metrics(), factory)
    p.start()
    wait_model(p)
    assert p.model_steps == 1  # the tiny preset's (model.steps = 0)
    p.set_steps(3)
    deadline = time.monotonic() + 5
    while p.model_steps != 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    p.stop()
    assert [m.steps for m in built] == [1, 3]
    assert built[0].closed and built[1].closed
    assert built[1].seen, "the new model ran after the swap"
    with pytest.raises(ValueError):
        p.set_steps(0)


def test_time_to_the_first_transformed_frame_is_measured_once_and_not_by_failures():
    metrics = Metrics()
    failing = FailingTransform(fail_times=2)
    p = Pipeline(settings(fps=30, retry=0.2), CountingSource(30), [ListSink()], PromptBus("x"), metrics, lambda s: failing)
    p.start()
    wait_model(p)
    time.sleep(1.0)
    p.stop()
    assert failing.seen, "the model produced frames after its failures"
    first = p.first_model_frame_s
    assert first is not None and 0.2 <= first < 5, first  # after the two failures' cool-downs, not at the first try
    assert metrics.snapshot()["info"]["first_model_frame_s"] == f"{first:.1f}"


def test_stop_never_waits_for_a_model_load_and_a_late_model_is_closed_unused():
    release = threading.Event()
    late = SlowTransform(0.0)
    late.closed = False

    def close() -> None:
        late.closed = True

    late.close = close  # type: ignore[method-assign]

    def blocking_factory(s):
        release.wait()  # a load that never ends on its own (a huge checkpoint, a hung disk)
        return late

    sink = ListSink()
    p = Pipeline(settings(), CountingSource(30), [sink], PromptBus("x"), Metrics(), blocking_factory)
    p.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    p.stop()
    assert time.perf_counter() - t0 < 2.0
    assert sink.closed and len(sink.frames) > 3  # passthrough ran meanwhile; the recording is finalised
    release.set()  # the load finishes after the stop: the model is closed, never installed
    p._loader.join(timeout=5)
    assert late.closed and p._model is None and not late.seen
