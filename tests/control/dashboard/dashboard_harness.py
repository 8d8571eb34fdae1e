"""Shared by the dashboard and overlay tests: a real AppContext (PromptBus, Store, Metrics, Pipeline,
control plane when importable) and a real dashboard server on a random loopback port."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from streamer import config
from streamer.app import AppContext
from streamer.control.policy.plane import build_control_plane
from streamer.frames import Frame, now
from streamer.metrics import Metrics
from streamer.pipeline import Pipeline
from streamer.prompts import PromptBus
from streamer.store import Store

W, H = 64, 48
TOKEN = "test-token-0123456789"


def still_picture() -> np.ndarray:
    """Left half red, right half blue: easy to recognise after a JPEG round trip."""
    px = np.zeros((H, W, 3), np.uint8)
    px[:, : W // 2] = (220, 30, 30)
    px[:, W // 2 :] = (30, 30, 220)
    return px


class StillSource:
    """Source of one still picture at 30 fps (the pipeline's Source interface)."""

    name = "still"

    def __init__(self) -> None:
        self.closed = False

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        i = 0
        while not stop.is_set():
            yield Frame(still_picture(), now(), index=i)
            i += 1
            stop.wait(1 / 30)

    def close(self) -> None:
        self.closed = True


def make_settings(extra: dict[str, Any] | None = None) -> config.Settings:
    raw: dict[str, Any] = {
        "video": {"width": W, "height": H, "fps": 30},
        "engine": {"transform": "passthrough"},
        "dashboard": {"port": 0},
        "prompt": {"initial": "a watercolour painting", "console": False},
    }
    for section, values in (extra or {}).items():
        raw.setdefault(section, {}).update(values)
    return config.from_dict(raw, "test")


def make_ctx(tmp_path: Path, extra: dict[str, Any] | None = None) -> AppContext:
    """A real context; the control plane comes from streamer.control.policy.plane like the daemon builds it."""
    settings = make_settings(extra)
    store = Store(str(tmp_path / "streamer.db"))
    metrics = Metrics(settings.metrics.window)
    bus = PromptBus(settings.prompt.initial, store=store)
    control = build_control_plane(settings, store, bus)  # as the daemon builds it (moderates bus.propose too)
    pipeline = Pipeline(settings, StillSource(), [], bus, metrics)
    return AppContext(settings, bus, store, metrics, pipeline, control, interactive=False)


@contextmanager
def running_dashboard(ctx: AppContext, token: str = TOKEN, sign_in: Any = None) -> Iterator[str]:
    """The real Dashboard component on its own event loop thread; yields its base URL.

    sign_in: a `SignIn` to use (the test issues its codes), else the component's own."""
    from streamer.control.dashboard.server import Dashboard

    dashboard = Dashboard(ctx, token, generated=False)
    if sign_in is not None:
        dashboard.sign_in = sign_in
    loop = asyncio.new_event_loop()
    started = threading.Event()
    task_box: list[asyncio.Task[None]] = []

    async def main() -> None:
        dashboard.started = asyncio.Event()
        task = asyncio.create_task(dashboard.run())
        task_box.append(task)
        waiter = asyncio.create_task(dashboard.started.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        started.set()
        try:
            await task
        except asyncio.CancelledError:
            pass

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10) or not dashboard.url:
        raise RuntimeError("the dashboard did not start")
    try:
        yield dashboard.url.rstrip("/")
    finally:
        loop.call_soon_threadsafe(task_box[0].cancel)
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("the dashboard did not stop within 10 s of being cancelled")
        loop.close()


def wait_for(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# A valid body for each state-changing route, paths as the router formats them ({id} is a request number):
# a refusal of one of these can only come from the auth and request checks. The one table both tests use.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/api/prompt": {"text": "a pencil sketch"},
    "/api/kill": {},
    "/api/revive": {},
    "/api/strength": {"strength": 0.3},
    "/api/steps": {"steps": 3},
    "/api/reset": {},
    "/api/approvals/list": {},
    "/api/approvals/{id}/approve": {},
    "/api/approvals/{id}/deny": {"reason": "no"},
    "/api/poll/start": {"title": "Next look?", "options": ["oil painting", "pixel art"], "duration_s": 30},
    "/api/poll/end": {},
    "/api/blocklist": {"add": ["balloon"]},
    "/api/session": {},  # trades a one-time sign-in code (or a token) for a session token
}
