"""The stream never goes black: a model whose output is NaN (all-NaN weights) is replaced by passthrough
for that very frame, the reason is logged and counted, and /healthz answers 503 with the problem while
passthrough stands in; once the model is retried and works, /healthz is ok again."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from streamer import config
from streamer.app import AppContext
from streamer.control.dashboard.server import make_app
from streamer.control.policy.plane import build_control_plane
from streamer.frames import Frame, now
from streamer.metrics import Metrics
from streamer.model.engine import ModelTransform
from streamer.model.loading import load_parts
from streamer.pipeline import Pipeline
from streamer.prompts import PromptBus, PromptState
from streamer.sinks import Sink
from streamer.sources import Source
from streamer.store import Store
from streamer.transform import BadOutput, Transform

W, H = 64, 48


def _settings(tmp_path: Path, retry: float) -> config.Settings:
    return config.from_dict({
        "video": {"width": W, "height": H, "fps": 30},
        "engine": {"retry_model_after_s": retry},
        "model": {"width": 64, "height": 64, "steps": 2, "window": 4, "sinks": 1, "dtype": "float32",
                  "checkpoint": "random", "vae": "random", "cache_dir": str(tmp_path / "text-cache")},
        "prompt": {"console": False},
        "dashboard": {"port": 0},
    }, "test")


class GreySource:
    """A mid-grey picture with a moving bar at 30 fps: black output could only come from the model."""

    name = "grey"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        i = 0
        while not stop.is_set():
            px = np.full((H, W, 3), 128, np.uint8)
            px[:, i % W] = 250
            yield Frame(px, now(), index=i)
            i += 1
            stop.wait(1 / 30)

    def close(self) -> None: ...


class ListSink(Sink):
    name = "list"

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    def open(self, width: int, height: int, fps: float) -> None: ...

    def write(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self) -> None: ...


def _healthz(ctx: AppContext) -> tuple[int, dict[str, Any]]:
    async def get() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(make_app(ctx, "token-0123456789abcdef"), host="127.0.0.1")) as client:
            r = await client.get("/healthz")
            return r.status, await r.json()

    return asyncio.run(get())


def _context(tmp_path: Path, settings: config.Settings, factory: Callable[[config.Settings], Transform],
             sink: ListSink) -> AppContext:
    store = Store(str(tmp_path / "streamer.db"))
    bus = PromptBus(settings.prompt.initial, store=store)
    source = cast(Source, GreySource())  # the pipeline only calls frames() and close()
    pipeline = Pipeline(settings, source, [sink], bus, Metrics(settings.metrics.window), factory)
    return AppContext(settings, bus, store, pipeline.metrics, pipeline, build_control_plane(settings, store, bus),
                      interactive=False)


def _wait(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_nan_model_output_goes_out_as_the_camera_and_healthz_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, retry=60)

    def nan_model(s: config.Settings) -> Transform:
        parts = load_parts(s.model, torch.device("cpu"))
        with torch.no_grad():
            for p in parts.dit.parameters():
                p.fill_(math.nan)
        return ModelTransform(s.model, parts)

    sink = ListSink()
    ctx = _context(tmp_path, settings, nan_model, sink)
    pipeline = ctx.pipeline
    assert _healthz(ctx)[0] == 200
    with caplog.at_level(logging.ERROR, logger="streamer.pipeline"):
        pipeline.start()
        try:
            _wait(lambda: ctx.metrics.snapshot()["counters"].get("model_bad_output", 0) >= 1, "the bad output")
            _wait(lambda: len(sink.frames) > 20, "frames out")
            status, health = _healthz(ctx)
        finally:
            pipeline.stop()
    assert status == 503 and health["ok"] is False
    assert "BadOutput: the model's output is not finite (NaN/inf)" in health["problem"]
    assert "passthrough (model failed: BadOutput" in health["transform"]
    assert any("model step failed (BadOutput: the model's output is not finite" in r.message for r in caplog.records)
    assert ctx.metrics.snapshot()["counters"]["model_failures"] >= 1
    means = [float(f.pixels.mean()) for f in sink.frames]
    assert min(means) > 100, "a black (or dark) frame went out"
    assert all(f.pixels[0, 0, 0] in (128, 250) for f in sink.frames), "every frame out is the camera's"


class BadOnce:
    """Flags its output unusable once, then transforms (inverts) frames."""

    name = "bad-once"

    def __init__(self) -> None:
        self.bad = 1

    def step(self, frame: Frame, prompt: PromptState) -> list[Frame]:
        if self.bad:
            self.bad -= 1
            raise BadOutput("the model's output is not finite (NaN/inf)")
        return [frame.with_pixels(255 - frame.pixels)]

    def reset(self) -> None: ...
    def close(self) -> None: ...
    def status(self) -> str:
        return "bad-once"


def test_healthz_is_not_ok_only_while_passthrough_stands_in(tmp_path: Path) -> None:
    settings = _settings(tmp_path, retry=1.5)  # room for a slow machine to ask /healthz in between
    model = BadOnce()
    sink = ListSink()
    ctx = _context(tmp_path, settings, lambda s: model, sink)
    ctx.pipeline.start()
    try:
        _wait(lambda: model.bad == 0, "the bad chunk")
        status, health = _healthz(ctx)
        assert status == 503 and "BadOutput" in health["problem"]
        _wait(lambda: ctx.pipeline.health_problem() is None, "the retry")
        status, health = _healthz(ctx)
        assert status == 200 and health["ok"] is True and "problem" not in health and health["transform"] == "bad-once"
    finally:
        ctx.pipeline.stop()
    assert ctx.metrics.snapshot()["counters"]["model_bad_output"] == 1
