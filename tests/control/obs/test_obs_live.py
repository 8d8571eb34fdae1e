"""The OBS controller against a real headless OBS: the prompt text follows the PromptBus (debounced),
scene switches drive `set_scene_active`, the kill switch (source visibility, kill scene), and a
reconnect after OBS is killed and restarted while frames keep flowing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from obs_harness import PASSWORD, ObsInstance, running_obs

from streamer.config import Settings
from streamer.control.obs.conn import ObsSession
from streamer.control.obs.controller import ObsController, build
from streamer.control.obs.setup import retire_input, run_setup
from streamer.metrics import Metrics
from streamer.prompts import PromptBus

pytestmark = pytest.mark.obs
SCENE = "Live Test"
KILL_SOURCE = "AI kill"


@pytest.fixture(scope="module")
def obs_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObsInstance]:
    yield from running_obs(tmp_path_factory)


def live_settings(obs: ObsInstance, **obs_overrides: Any) -> Settings:
    base = Settings()
    return replace(base, sinks=replace(base.sinks, enabled=("network",)),
                   obs=obs.settings(scene=SCENE, ai_input=f"{SCENE} video", prompt_input=f"{SCENE} prompt", **obs_overrides))


class FakePipeline:
    """Records the controller's scene activation calls (the real Pipeline's method has this signature)."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def set_scene_active(self, active: bool) -> None:
        self.calls.append(active)


@dataclass
class Ctx:
    settings: Settings
    bus: PromptBus
    pipeline: FakePipeline = field(default_factory=FakePipeline)
    store: Any = None
    metrics: Metrics = field(default_factory=Metrics)
    control: Any = None


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class Running:
    """The controller's `run()` on an asyncio loop in a thread (as in the daemon), plus a counter of
    the requests it sends, and a probe that the loop is never blocked by OBS calls."""

    def __init__(self, obs: ObsInstance, **obs_overrides: Any) -> None:
        self.settings = live_settings(obs, **obs_overrides)
        self.ctx = Ctx(self.settings, PromptBus("first prompt"))
        self.requests: list[str] = []

        def factory(settings: Any, **kw: Any) -> ObsSession:
            session = ObsSession(settings, PASSWORD, **kw)
            original = session.request

            def counted(name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
                self.requests.append(name)
                return original(name, data)

            session.request = counted  # type: ignore[method-assign]
            return session

        self.controller = ObsController(self.ctx, session_factory=factory)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.max_loop_gap = 0.0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self._main(), self.loop)

    async def _main(self) -> None:
        async def probe() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                self.max_loop_gap = max(self.max_loop_gap, now - last)
                last = now

        async with asyncio.TaskGroup() as tg:
            tg.create_task(probe())
            tg.create_task(self.controller.run())

    def stop(self) -> None:
        self.task.cancel()
        time.sleep(0.2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def obs(obs_instance: ObsInstance) -> ObsSession:
    session = obs_instance.connect()
    run_setup(session, live_settings(obs_instance), "set up", say=lambda _line: None)
    scenes = {s["sceneName"] for s in session.request("GetSceneList")["scenes"]}
    for scene in ("Chat", "Kill"):
        if scene not in scenes:
            session.request("CreateScene", {"sceneName": scene})
    inputs = {i["inputName"] for i in session.request("GetInputList")["inputs"]}
    if KILL_SOURCE not in inputs:
        session.request("CreateInput", {"sceneName": SCENE, "inputName": KILL_SOURCE, "inputKind": "color_source_v3",
                                        "inputSettings": {"color": 0xFF0000FF}, "sceneItemEnabled": False})
    session.request("SetCurrentProgramScene", {"sceneName": SCENE})
    yield session
    session.close()


def prompt_text(obs: ObsSession) -> str:
    return str(obs.request("GetInputSettings", {"inputName": f"{SCENE} prompt"})["inputSettings"].get("text"))


def test_build_is_none_when_disabled() -> None:
    assert build(Ctx(Settings(), PromptBus("x"))) is None  # type: ignore[arg-type]


def test_prompt_text_follows_the_bus_debounced(obs_instance: ObsInstance, obs: ObsSession) -> None:
    run = Running(obs_instance)
    try:
        wait_for(lambda: run.controller.connected, what="connect")
        wait_for(lambda: prompt_text(obs) == "first prompt", what="initial prompt pushed on connect")
        pushes_before = run.requests.count("SetInputSettings")
        for i in range(20):  # a burst from another thread: one or two pushes, ending on the last text
            run.ctx.bus.set(f"burst {i}", source="test", author="t")
        wait_for(lambda: prompt_text(obs) == "burst 19", what="last burst text")
        time.sleep(0.3)
        assert run.requests.count("SetInputSettings") - pushes_before <= 2
        run.ctx.bus.set_enabled(False, source="test", author="t")
        wait_for(lambda: prompt_text(obs) == "AI off", what="kill switch shown")
        assert run.max_loop_gap < 0.5, f"the asyncio loop stalled {run.max_loop_gap:.2f} s"
    finally:
        run.stop()


def test_prompt_is_restored_when_setup_recreates_the_text_source(obs_instance: ObsInstance, obs: ObsSession) -> None:
    run = Running(obs_instance)
    try:
        wait_for(lambda: run.controller.connected, what="connect")
        run.ctx.bus.set("the live prompt", source="test", author="t")
        wait_for(lambda: prompt_text(obs) == "the live prompt", what="live prompt")
        retire_input(obs, f"{SCENE} prompt", f"{SCENE} prompt (dropped)")
        run_setup(obs, run.settings, "the config's prompt", say=lambda _line: None)
        wait_for(lambda: prompt_text(obs) == "the live prompt", what="live prompt after InputCreated")
    finally:
        run.stop()


def test_scene_switches_call_set_scene_active(obs_instance: ObsInstance, obs: ObsSession) -> None:
    run = Running(obs_instance, active_scenes=(SCENE,))
    calls = run.ctx.pipeline.calls
    try:
        wait_for(lambda: calls == [True], what="initial scene state")
        obs.request("SetCurrentProgramScene", {"sceneName": "Chat"})
        wait_for(lambda: calls[-1:] == [False], what="inactive on Chat")
        obs.request("SetCurrentProgramScene", {"sceneName": SCENE})
        wait_for(lambda: calls[-1:] == [True], what="active again")
        assert calls == [True, False, True]
    finally:
        run.stop()


def test_kill_source_visibility_and_kill_scene_toggle_the_bus(obs_instance: ObsInstance, obs: ObsSession) -> None:
    run = Running(obs_instance, kill_source=KILL_SOURCE, kill_scene="Kill")
    bus = run.ctx.bus
    item = obs.request("GetSceneItemId", {"sceneName": SCENE, "sourceName": KILL_SOURCE})["sceneItemId"]
    try:
        wait_for(lambda: run.controller.connected, what="connect")
        obs.request("SetSceneItemEnabled", {"sceneName": SCENE, "sceneItemId": item, "sceneItemEnabled": True})
        wait_for(lambda: not bus.current().enabled, what="kill by source")
        assert bus.current().source == "obs" and KILL_SOURCE in bus.current().reason
        obs.request("SetSceneItemEnabled", {"sceneName": SCENE, "sceneItemId": item, "sceneItemEnabled": False})
        wait_for(lambda: bus.current().enabled, what="revive by source")

        obs.request("SetCurrentProgramScene", {"sceneName": "Kill"})
        wait_for(lambda: not bus.current().enabled, what="kill by scene")
        obs.request("SetCurrentProgramScene", {"sceneName": SCENE})
        wait_for(lambda: bus.current().enabled, what="revive on leaving the kill scene")

        # a moderator's kill is not undone by leaving the kill scene
        obs.request("SetCurrentProgramScene", {"sceneName": "Kill"})
        wait_for(lambda: not bus.current().enabled, what="kill by scene again")
        bus.set_enabled(False, source="twitch", author="mod", reason="!aioff")
        obs.request("SetCurrentProgramScene", {"sceneName": SCENE})
        wait_for(lambda: run.controller.status().endswith(f"scene {SCENE!r}"), what="scene seen")
        time.sleep(0.3)
        assert not bus.current().enabled and bus.current().source == "twitch"
    finally:
        obs.request("SetCurrentProgramScene", {"sceneName": SCENE})
        run.stop()


def test_exit_started_drops_the_session_and_reconnects(obs_instance: ObsInstance, obs: ObsSession) -> None:
    """OBS 29 sends ExitStarted only on a GUI quit (SIGTERM kills it silently), so the event is fed in
    the way obsws-python's reader thread delivers it."""
    run = Running(obs_instance)
    try:
        wait_for(lambda: run.controller.connections == 1 and run.controller.connected, what="connect")
        threading.Thread(target=run.controller._on_obs_event, args=("ExitStarted", {})).start()
        wait_for(lambda: run.controller.connections == 2 and run.controller.connected, what="reconnect after ExitStarted")
    finally:
        run.stop()


def test_reconnects_after_obs_is_killed_and_restarted_while_frames_flow(obs_instance: ObsInstance) -> None:
    run = Running(obs_instance, active_scenes=(SCENE,))
    frames: list[float] = []
    stop = threading.Event()

    def produce() -> None:  # stands in for the pipeline's output thread: it must never notice OBS going away
        while not stop.is_set():
            run.ctx.bus.current()
            frames.append(time.monotonic())
            time.sleep(1 / 30)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        wait_for(lambda: run.controller.connections == 1 and run.controller.connected, what="first connect")
        away_from = time.monotonic()
        obs_instance.stop()
        wait_for(lambda: not run.controller.connected, what="disconnect noticed")
        assert "waiting for OBS" in run.controller.status()
        time.sleep(max(0.0, 2.0 - (time.monotonic() - away_from)))  # away long enough for a stall to show
        obs_instance.start()
        away_s = time.monotonic() - away_from
        wait_for(lambda: run.controller.connections == 2 and run.controller.connected, timeout=20, what="reconnect")
        assert run.ctx.metrics.snapshot()["counters"]["obs_connections"] == 2  # what /metrics shows (and the soak reads)
        # resubscribed: events from the new OBS arrive again
        session = obs_instance.connect()
        try:
            run_setup(session, run.settings, "x", say=lambda _line: None)
            session.request("SetCurrentProgramScene", {"sceneName": SCENE})
            calls = run.ctx.pipeline.calls
            n = len(calls)
            session.request("CreateScene", {"sceneName": "After Restart"})
            session.request("SetCurrentProgramScene", {"sceneName": "After Restart"})
            wait_for(lambda: len(calls) > n and calls[-1] is False, what="scene event after reconnect")
            run.ctx.bus.set("after restart", source="test", author="t")
            wait_for(lambda: prompt_text(session) == "after restart", what="prompt after reconnect")
        finally:
            session.close()
        stop.set()
        producer.join(timeout=2)
        # OBS was away for seconds; a loop that waited on it would show a gap that long. The bound is
        # loose because CI shares two cores with OBS's own start-up.
        gaps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
        assert away_s > 1.5
        assert max(gaps) < min(1.0, away_s / 2), f"frame loop stalled {max(gaps):.2f} s while OBS was away"
        assert run.max_loop_gap < min(1.0, away_s / 2), f"the asyncio loop stalled {run.max_loop_gap:.2f} s"
    finally:
        stop.set()
        run.stop()
