"""The daemon: builds the pipeline and the control plane from settings and runs them until stopped.

The asyncio loop (main thread) hosts the control plane; each part is a component with
`async run()` that handles its own reconnects, so one missing service (OBS, Twitch) never stops the
others or the video. Components are listed in COMPONENTS as "module:build" and imported lazily, so
an optional extra that is not installed only disables its own part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import signal
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from streamer import config as config_mod
from streamer.config import Settings
from streamer.control.policy.plane import ControlPlane, build_control_plane
from streamer.metrics import Metrics
from streamer.pipeline import Pipeline
from streamer.prompts import PromptBus
from streamer.store import Store

log = logging.getLogger(__name__)

# "module:build" — build(ctx) returns a Component, or None when disabled in the config.
COMPONENTS = [
    "streamer.control.console:build",
    "streamer.app:build_status_line",
    "streamer.control.policy.plane:build",
    "streamer.control.dashboard.server:build",
    "streamer.control.obs.controller:build",
    "streamer.control.twitch.component:build",
]


class Component(Protocol):
    name: str

    async def run(self) -> None: ...


@dataclass
class AppContext:
    settings: Settings
    bus: PromptBus
    store: Store
    metrics: Metrics
    pipeline: Pipeline
    control: ControlPlane | None = None
    interactive: bool = True  # read the console / redraw the status line


class StatusLine:
    """Prints the metrics' one-line summary every `metrics.status_interval_s`."""

    name = "status"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        tty = sys.stdout.isatty()
        while True:
            await asyncio.sleep(self.ctx.settings.metrics.status_interval_s)
            line = self.ctx.metrics.status_line()
            if tty:
                print(f"\r\033[K{line}", end="", flush=True)
            else:
                print(line, flush=True)


def build_status_line(ctx: AppContext) -> Component:
    return StatusLine(ctx)


def build_pipeline(settings: Settings, bus: PromptBus, metrics: Metrics, record_path: str | None = None) -> Pipeline:
    from streamer.sinks import build_sinks
    from streamer.sources import build_source

    factory = None
    if settings.engine.transform == "model":
        def factory(model_settings: Settings) -> Any:
            from streamer.fault_inject import with_fault_injection
            from streamer.model.builder import build_model_transform

            return with_fault_injection(build_model_transform(model_settings))  # unchanged unless soak-enabled

    return Pipeline(settings, build_source(settings), build_sinks(settings, record_path), bus, metrics, factory)


async def run_daemon(settings: Settings, *, frames: int = 0, record: str | None = None, interactive: bool = True) -> int:
    store = Store(settings.store.path)
    metrics = Metrics(settings.metrics.window)
    bus = PromptBus(settings.prompt.initial, store=store)
    control = build_control_plane(settings, store, bus)  # every text from people is moderated
    pipeline = build_pipeline(settings, bus, metrics, record)
    pipeline.frame_limit = frames
    ctx = AppContext(settings, bus, store, metrics, pipeline, control, interactive)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows / non-main thread
            loop.add_signal_handler(sig, stop.set)

    log.info("streamer starting: source %s, sinks %s, transform %s, %dx%d @ %g fps",
             settings.source.kind, ", ".join(s.name for s in pipeline.sinks) or "none",
             settings.engine.transform, settings.video.width, settings.video.height, settings.video.fps)
    pipeline.start()
    tasks = []
    for spec in COMPONENTS:
        component = _build_component(spec, ctx)
        if component is not None:
            tasks.append(asyncio.create_task(_supervise(component), name=component.name))
    waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
    if frames:
        waiters.append(asyncio.create_task(asyncio.to_thread(pipeline.frames_done.wait)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("shutting down")
        pipeline.frames_done.set()  # releases the frame-count waiter's thread
        for t in tasks + waiters:
            t.cancel()
        await asyncio.gather(*tasks, *waiters, return_exceptions=True)
        await asyncio.to_thread(pipeline.stop)
        store.close()
        if sys.stdout.isatty():
            print()
        log.info("stopped after %d output frames", pipeline.frames_out)
    return 0


def _build_component(spec: str, ctx: AppContext) -> Component | None:
    module, func = spec.split(":")
    try:
        return getattr(importlib.import_module(module), func)(ctx)  # type: ignore[no-any-return]
    except ImportError as e:
        log.warning("%s disabled: %s (install the matching extra, see `streamer doctor`)", module, e)
    except Exception:
        log.exception("%s failed to start; the video keeps running without it", module)
    return None


async def _supervise(component: Component) -> None:
    """Restart a crashed component with backoff: the control plane must never take the video down."""
    delay = 1.0
    while True:
        try:
            await component.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("component %s crashed; restarting in %.0f s", component.name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def run_command(args: argparse.Namespace) -> int:
    settings = config_mod.load(args.config)
    if getattr(args, "no_console", False):
        settings = dataclasses.replace(settings, prompt=dataclasses.replace(settings.prompt, console=False))
    # A model load still running now is abandoned; the process entry point (cli.console_main) leaves without
    # the interpreter's teardown then. Not here: an in-process caller (a test) must get the code back.
    return asyncio.run(run_daemon(settings, frames=args.frames, record=args.record))
