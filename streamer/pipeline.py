"""The frame path: capture thread -> latest-frame slot -> engine thread -> output queue -> output thread.

Why three threads: decoding blocks on I/O, the engine blocks on the GPU, and the sinks must be
paced at a steady fps (repeating the last frame when the engine is late) so OBS never sees a stall.
Only the newest input frame is kept (LatestFrameSlot), so a slow transform drops frames instead of
building lag. A transform that raises is replaced by passthrough for that very frame and retried
after `engine.retry_model_after_s`; the stream never goes black or freezes because of the model. A sink
that fails while running (disk full, receiver gone) is handed to the SinkKeeper's thread, which closes
it and opens it again with backoff, so the others never wait for it and a recording goes on in a new file.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from streamer.config import Settings
from streamer.frames import Frame, LatestFrameSlot, OutputQueue, blank_frame, now
from streamer.metrics import Metrics
from streamer.prompts import PromptBus
from streamer.sinks.keeper import SinkKeeper
from streamer.transform import BadOutput, Passthrough, Transform

if TYPE_CHECKING:
    from streamer.sinks import Sink
    from streamer.sources import Source

log = logging.getLogger(__name__)

LOADER_THREAD = "streamer-model-load"


def loader_running() -> bool:
    """Whether a model load is still in flight in this process (one abandoned by `Pipeline.stop`)."""
    return any(t.name == LOADER_THREAD and t.is_alive() for t in threading.enumerate())


def wait_for_loaders(timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the model loads still in flight to end; True when none is left."""
    deadline = time.monotonic() + timeout_s
    for t in [t for t in threading.enumerate() if t.name == LOADER_THREAD]:
        t.join(max(0.0, deadline - time.monotonic()))
    return not loader_running()


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        source: Source,
        sinks: Sequence[Sink],
        bus: PromptBus,
        metrics: Metrics,
        model_factory: Callable[[Settings], Transform] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sinks = list(sinks)
        self.bus = bus
        self.metrics = metrics
        self._model_factory = model_factory
        self._model: Transform | None = None
        self._model_error: str = ""
        self._passthrough = Passthrough()
        self._slot = LatestFrameSlot()
        self._out = OutputQueue(capacity=5)  # one wan chunk + one frame of jitter; more would only add latency
        self._stop = threading.Event()
        self._sinks_lock = threading.Lock()  # stop() vs a sink reopened in the background
        self._keeper = SinkKeeper(self._sink_back)
        self._threads: list[threading.Thread] = []
        self._loader: threading.Thread | None = None
        self._swap = threading.Lock()  # a finished load vs stop(): exactly one of them closes the new model
        self._retired: list[Transform] = []  # replaced models, closed by the engine thread
        self._last_transform: Transform | None = None
        self._scene_active = True
        self._reset_requested = threading.Event()
        self._model_failed_at: float | None = None
        self._model_failure = ""  # why the model's last step failed, said while passthrough stands in
        self._latest_output: Frame | None = None
        self._started = time.perf_counter()
        self.first_model_frame_s: float | None = None  # start -> first transformed frame handed on (load included)
        self.frames_out = 0  # ticks handed to the sinks (repeats included)
        self.frames_done = threading.Event()  # set when frame_limit ticks were written
        self.frame_limit = 0
        for counter in ("drops_input", "drops_output"):  # present at 0, so a scraper sees them before the first drop
            metrics.count(counter, 0)

    # ------------------------------------------------------------------ control API (thread-safe)

    def latest_output(self) -> Frame | None:
        return self._latest_output

    def set_scene_active(self, active: bool) -> None:
        """OBS per-scene activation: the model runs only while an active scene is live."""
        if active != self._scene_active:
            log.info("model %s by scene change", "resumed" if active else "paused (passthrough)")
        self._scene_active = active

    def reset(self) -> None:
        """Forget the model's temporal state at the next frame."""
        self._reset_requested.set()

    def transform_status(self) -> str:
        if self._model is None:
            if self._model_error:
                return f"passthrough (model failed to load: {self._model_error})"
            return "passthrough (model loading…)" if self._model_factory else "passthrough"
        if self._model_failed_at is not None:
            return f"passthrough (model failed: {self._model_failure}; retrying) — {self._model.status()}"
        if not self.bus.current().enabled:
            return f"passthrough (kill switch) — {self._model.status()}"
        if not self._scene_active:
            return f"passthrough (scene inactive) — {self._model.status()}"
        return self._model.status()

    def health_problem(self) -> str | None:
        """Why the stream is not what was asked for, or None: while passthrough stands in for a model
        whose step failed (an exception, or output the model flagged unusable), /healthz says not ok."""
        if self._model_failed_at is None:
            return None
        return f"model failed ({self._model_failure}); passthrough until it is retried"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        v = self.settings.video

        def keep() -> None:
            self._keeper.run(self._stop, v.width, v.height, v.fps)

        for name, target in [("capture", self._capture_loop), ("engine", self._engine_loop),
                             ("output", self._output_loop), ("sinks", keep)]:
            t = threading.Thread(target=target, name=f"streamer-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self._model_factory is not None:
            self._start_loader(self.settings)

    def stop(self) -> None:
        """Stop the threads, then finalise the sinks (a recording is playable after this)."""
        self._stop.set()
        self._slot.close()
        for t in self._threads:
            t.join(timeout=10)
        if self._loader is not None and self._loader.is_alive():
            # Never wait for it: a load can take minutes (a huge checkpoint, a slow disk). It is a daemon
            # thread; should it finish later, it sees the stop and closes what it built (_load_model).
            log.warning("a model load is still running; shutting down without waiting for it")
        with self._sinks_lock:
            sinks = list(self.sinks)
        for sink in sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)
        with self._swap:
            models = [self._model, *self._retired]
        for model in models:
            if model is not None:
                model.close()
        self.source.close()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ threads

    @property
    def model_steps(self) -> int:
        """Denoising steps of the model now running (or loading)."""
        return self.settings.model.steps

    def set_steps(self, steps: int) -> None:
        """Change the denoising steps live: a model with the new step count (new buffers, a new
        captured graph on the GPU) is built in the background while the current one keeps running,
        then swapped in. Explicit `model.timesteps` of another length are dropped (derived instead)."""
        if not 1 <= steps <= 50:
            raise ValueError(f"steps must be between 1 and 50, got {steps}")
        if self._model_factory is None:
            raise RuntimeError("no model configured (engine.transform = 'passthrough')")
        m = self.settings.model
        if steps == m.steps:
            return
        timesteps = m.timesteps if len(m.timesteps) == steps else ()
        self._start_loader(dataclasses.replace(self.settings, model=dataclasses.replace(m, steps=steps, timesteps=timesteps)))

    def _start_loader(self, settings: Settings) -> None:
        if self._loader is not None and self._loader.is_alive():
            raise RuntimeError("a model is still loading; try again when it is ready")
        self._loader = threading.Thread(target=self._load_model, args=(settings,), name=LOADER_THREAD, daemon=True)
        self._loader.start()

    def _load_model(self, settings: Settings) -> None:
        assert self._model_factory is not None
        try:
            t0 = time.perf_counter()
            model = self._model_factory(settings)
            log.info("model ready in %.1f s: %s", time.perf_counter() - t0, model.status())
        except Exception as e:
            self._model_error = f"{type(e).__name__}: {e}"
            log.error("model failed to load, %s: %s",
                      "keeping the current model" if self._model else "running passthrough", self._model_error)
            return
        with self._swap:
            stopped = self._stop.is_set()  # stop() sets it before it takes the lock to close the models
            if not stopped:
                old, self._model, self.settings = self._model, model, settings
                self._model_error = ""
                if old is not None:  # the engine thread may be mid-step on it: close it after that step
                    self._retired.append(old)
        if stopped:
            log.info("model load finished after shutdown began; closing it unused")
            model.close()

    def _capture_loop(self) -> None:
        try:
            for frame in self.source.frames(self._stop):
                dropped_before = self._slot.dropped
                self._slot.put(frame)
                self.metrics.tick("in")
                self.metrics.count("frames_in")
                if self._slot.dropped != dropped_before:
                    self.metrics.count("drops_input")
                if self._stop.is_set():
                    break
        except Exception:
            log.exception("capture thread crashed")

    def _pick_transform(self) -> Transform:
        model = self._model
        if model is None or not self._scene_active or not self.bus.current().enabled:
            return self._passthrough
        if self._model_failed_at is not None:
            if now() - self._model_failed_at < self.settings.engine.retry_model_after_s:
                return self._passthrough
            log.info("retrying the model after its failure")
            self._model_failed_at = None
            model.reset()
        return model

    def _engine_loop(self) -> None:
        while not self._stop.is_set():
            frame = self._slot.get(timeout=0.2)
            if frame is None:
                continue
            if self._reset_requested.is_set() and self._model is not None:
                self._reset_requested.clear()
                self._model.reset()
            while self._retired:
                self._retired.pop().close()
            transform = self._pick_transform()
            if transform is not self._last_transform:
                self._last_transform = transform
                self.metrics.clear_latency()
            t0 = time.perf_counter()
            try:
                outputs = transform.step(frame, self.bus.current())
                for out in outputs:
                    if out.pixels.shape != frame.pixels.shape:
                        raise ValueError(f"transform returned {out.pixels.shape}, expected {frame.pixels.shape}")
            except Exception as e:
                if transform is self._passthrough:
                    raise
                self._model_failure = f"{type(e).__name__}: {e}"
                self._model_failed_at = now()
                self.metrics.count("model_failures")
                if isinstance(e, BadOutput):  # NaN/inf or diverged: its own counter, to alert on
                    self.metrics.count("model_bad_output")
                log.error(
                    "model step failed (%s: %s); passthrough for %.0f s, then retrying",
                    type(e).__name__, e, self.settings.engine.retry_model_after_s,
                )
                outputs = [frame]  # this very frame goes out unchanged: never black, never frozen
            else:
                if outputs and transform is not self._passthrough and self.first_model_frame_s is None:
                    self.first_model_frame_s = time.perf_counter() - self._started
                    self.metrics.info["first_model_frame_s"] = f"{self.first_model_frame_s:.1f}"
                    log.info("first transformed frame %.1f s after start", self.first_model_frame_s)
            # the model's own time, not diluted by passthrough frames (loading, kill switch, fallback)
            self.metrics.observe("engine" if transform is not self._passthrough else "passthrough", time.perf_counter() - t0)
            self.metrics.tick("engine")
            self.metrics.info["transform"] = self.transform_status()
            dropped_before = self._out.dropped
            self._out.put_many(outputs)
            if self._out.dropped != dropped_before:
                self.metrics.count("drops_output", self._out.dropped - dropped_before)

    def _output_loop(self) -> None:
        """Hand frames to the sinks as soon as the engine has them (lowest latency), but never
        closer than half a frame interval (a full one while a chunk's frames are queued), and
        repeat the last frame when nothing new arrives in time, so the sinks see a steady fps."""
        v = self.settings.video
        interval = 1.0 / v.fps
        self._open_sinks(v.width, v.height, v.fps)
        last: Frame | None = None
        last_write = now()
        repeat_after = interval
        while not self._stop.is_set():
            frame = self._out.take(timeout=max(0.0, last_write + repeat_after - now()))
            fresh = frame is not None
            if frame is None:
                if self._stop.is_set():
                    break
                frame = last or blank_frame(v.width, v.height)
                if last is not None:
                    self.metrics.count("repeats")
                repeat_after = interval
            else:
                gap = interval if len(self._out) else interval / 2
                wait = last_write + gap - now()
                if wait > 0:
                    self._stop.wait(wait)
                repeat_after = 1.5 * interval  # a little slack before repeating: engine jitter is normal
            last_write = now()  # spacing counts from the hand-off, not from when the sinks finished
            self.metrics.handoff()
            t0 = time.perf_counter()
            for sink in list(self.sinks):
                self._write(sink, frame)
            self.metrics.observe("output", time.perf_counter() - t0)
            if fresh:
                self.metrics.latency(now() - frame.capture_time)
            self.metrics.tick("out")
            self.metrics.count("frames_out")
            self._latest_output = frame
            last = frame
            self.frames_out += 1
            if self.frame_limit and self.frames_out >= self.frame_limit:
                self.frames_done.set()
                return

    def _open_sinks(self, width: int, height: int, fps: float) -> None:
        from streamer.sinks import SinkUnavailable

        opened = []
        for sink in self.sinks:
            try:
                sink.open(width, height, fps)
                opened.append(sink)
            except SinkUnavailable as e:
                log.warning("sink %s unavailable, continuing without it: %s", sink.name, e)
                self.metrics.info[f"sink_{sink.name}"] = f"unavailable: {e}"
            except Exception as e:
                log.error("sink %s failed to open (%s: %s); continuing without it", sink.name, type(e).__name__, e)
        for sink in opened:
            self.metrics.count(f"drops_sink_{sink.name}", 0)
        self.sinks = opened

    def _write(self, sink: Sink, frame: Frame) -> None:
        try:
            dropped_before = getattr(sink, "frames_dropped", 0)  # a duck-typed sink may not count drops
            sink.write(frame)
            dropped = getattr(sink, "frames_dropped", 0) - dropped_before
            if dropped > 0:  # e.g. its encoder process is a whole queue behind
                self.metrics.count(f"drops_sink_{sink.name}", dropped)
        except Exception as e:
            log.error("sink %s failed (%s: %s); removing it, reopening it in the background",
                      sink.name, type(e).__name__, e)
            self.metrics.count("sink_errors")
            self.sinks.remove(sink)
            self._keeper.failed(sink)  # closed and reopened on the keeper's thread: never waited for here

    def _sink_back(self, sink: Sink) -> bool:
        """The keeper reopened a sink that failed: back into service, unless the pipeline is stopping."""
        with self._sinks_lock:
            if self._stop.is_set():  # stop() closes what is in the list: add it only while running
                return False
            self.sinks.append(sink)
        self.metrics.count("sink_reopens")
        return True
