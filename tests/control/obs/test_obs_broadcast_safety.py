"""Broadcast safety end to end, read back from a real headless OBS (issue 15).

Hostile chat comes from the fake Twitch through the real Twitch component, moderation, the approval
queue and the governor; the OBS controller writes the prompt to OBS's text source; the streamer changes
the blocklist on the dashboard while requests wait, and moderators decide in chat. Meanwhile the text
source's settings are read back over obs-websocket every 30 ms on a connection of the test's own, and
every text the controller sent is recorded: only moderated, cleaned, clipped and approved text may ever
appear, never a refused request's words, never a waiting one's.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from obs_harness import PASSWORD, ObsInstance, running_obs

from streamer.config import ModerationSettings, Settings
from streamer.control.dashboard.server import make_app
from streamer.control.obs.conn import ObsSession
from streamer.control.obs.controller import ObsController
from streamer.control.obs.setup import run_setup
from streamer.control.policy.moderation import shown_prompt_limit
from streamer.control.policy.normalize import clean_for_model, display_text
from streamer.pipeline import Pipeline

for folder in ("twitch", "dashboard"):  # the fake Twitch's and the dashboard's harnesses
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
from dashboard_harness import TOKEN, StillSource  # noqa: E402
from twitch_harness import MOD, VIEWER, VIEWER2, VIP, make_control, replies_to, running_twitch, say  # noqa: E402

pytestmark = pytest.mark.obs
SCENE = "Safety Test"
PROMPT_INPUT = f"{SCENE} prompt"
AUTH = {"X-Streamer-Token": TOKEN}
SAGA = ("an endless procession of lanterns drifting over a frozen lake beneath northern lights, "
        "painted in gold leaf")
MAX_LENGTH, TEMPLATE = 40, "{prompt}, film grain"
MODERATION = {"mode": "approval", "min_change_interval_s": 0.0, "max_length": MAX_LENGTH, "template": TEMPLATE,
              "presets": {"saga": SAGA}}
LIMIT = shown_prompt_limit(ModerationSettings(max_length=MAX_LENGTH, template=TEMPLATE))  # what OBS may show
NO_COOLDOWNS = {"ai": 0.0, "style": 0.0, "approve": 0.0, "deny": 0.0}


@pytest.fixture(scope="module")
def obs_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObsInstance]:
    yield from running_obs(tmp_path_factory)


class TextWatcher:
    """Every distinct value OBS's prompt text source holds, read on a connection of its own (obsws-python
    blocks, so on a thread) until stopped."""

    def __init__(self, obs: ObsInstance) -> None:
        self.session = obs.connect()
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def text(self) -> str:
        return str(self.session.request("GetInputSettings", {"inputName": PROMPT_INPUT})["inputSettings"].get("text"))

    def _watch(self) -> None:
        while not self._stop.is_set():
            text = self.text()
            if not self.seen or self.seen[-1] != text:
                self.seen.append(text)
            self._stop.wait(0.03)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.session.close()


def recording_factory(pushed: list[str]) -> Any:
    """ObsSession factory for the controller that records the text of every SetInputSettings it sends."""
    def factory(settings: Any, **kw: Any) -> ObsSession:
        session = ObsSession(settings, PASSWORD, **kw)
        send = session.request

        def request(name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
            if name == "SetInputSettings" and data and data.get("inputName") == PROMPT_INPUT:
                pushed.append(data["inputSettings"]["text"])
            return send(name, data)

        session.request = request  # type: ignore[method-assign]
        return session

    return factory


async def until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.03)


def hidden(text: str) -> list[str]:
    return [f"U+{ord(ch):04X}" for ch in text if unicodedata.category(ch)[0] == "C"]


def test_only_moderated_approved_text_ever_reaches_obs_s_prompt_text(obs_instance, monkeypatch, tmp_path):
    setup = obs_instance.connect()
    obs_settings = obs_instance.settings(scene=SCENE, ai_input=f"{SCENE} video", prompt_input=PROMPT_INPUT)
    try:
        base = Settings()  # OBS plays the network sink's stream (no virtual camera needed)
        run_setup(setup, replace(base, sinks=replace(base.sinks, enabled=("network",)), obs=obs_settings),
                  "initial prompt", say=lambda _line: None)  # the text the daemon's bus starts with
    finally:
        setup.close()
    watcher = TextWatcher(obs_instance)
    pushed: list[str] = []

    async def body() -> None:
        async with running_twitch(monkeypatch, tmp_path, make_control, moderation=MODERATION,
                                  user_cooldowns_s=NO_COOLDOWNS, global_cooldowns_s=NO_COOLDOWNS) as h:
            settings = replace(h.settings, obs=obs_settings)
            ctx = SimpleNamespace(settings=settings, bus=h.bus, store=h.store, metrics=h.metrics, control=h.control,
                                  pipeline=Pipeline(settings, StillSource(), [], h.bus, h.metrics))
            controller = ObsController(ctx, session_factory=recording_factory(pushed))  # type: ignore[arg-type]
            obs_task = asyncio.create_task(controller.run())
            try:
                async with TestClient(TestServer(make_app(ctx, TOKEN), host="127.0.0.1")) as dashboard:
                    await scenario(h, dashboard, watcher)
            finally:
                obs_task.cancel()
                await asyncio.gather(obs_task, return_exceptions=True)

    try:
        asyncio.run(asyncio.wait_for(body(), timeout=90))
    finally:
        watcher.stop()

    bridge = clean_for_model("a ｓｔｏｎｅ\u200b bridge <b>at dusk</b>") + ", film grain"
    saga = display_text(SAGA + ", film grain", LIMIT)
    assert saga.endswith("…") and len(saga) == LIMIT  # the preset is longer than the box
    assert pushed[-1] == saga and watcher.seen[-1] == saga
    for texts in (watcher.seen, pushed):
        assert set(texts) <= {"initial prompt", bridge, saga}, texts
        for text in texts:
            assert not hidden(text) and len(text) <= LIMIT, text
            for word in ("edun", "nude", "balloon", "lighthouse", "<", "very long"):
                assert word not in text, (word, text)


async def scenario(h: Any, dashboard: TestClient, watcher: TextWatcher) -> None:
    await until(lambda: watcher.seen[-1:] == ["initial prompt"], "the prompt pushed on connect", 20)

    # refused by moderation: a bidi override painting a blocked word, a bidi control alone, a blocked
    # word, and text over moderation.max_length
    for text in ("a \u202eedun figure", "a cat\u202e on a boat", "a nude figure", "a very long prompt " * 4):
        await say(h, VIEWER, f"!ai {text}")
    refusals = await replies_to(h, "viewer1", 4)
    assert all("not used" in r for r in refusals), refusals

    # passes moderation, waits for a moderator
    await say(h, VIEWER2, "!ai a ｓｔｏｎｅ\u200b bridge <b>at dusk</b>")
    await replies_to(h, "viewer2")
    await say(h, VIP, "!ai a red balloon over the sea")
    await replies_to(h, "vipper")
    await say(h, VIEWER, "!ai a lighthouse in fog")
    await say(h, VIEWER2, "!style saga")
    await replies_to(h, "viewer2", 2)
    await until(lambda: len(h.control.approvals.pending()) == 4, "four waiting requests")
    bridge_id, balloon_id, lighthouse_id, saga_id = (i.id for i in h.control.approvals.pending())
    await asyncio.sleep(0.5)  # five debounce intervals: anything pushed would be in OBS by now
    assert watcher.text() == "initial prompt"

    # the streamer blocks a word on the dashboard while "balloon" waits: it is refused at once
    r = await dashboard.post("/api/blocklist", json={"add": ["balloon"]}, headers=AUTH)
    assert r.status == 200 and (await r.json())["refused"] == [balloon_id]
    await say(h, MOD, f"!approve {balloon_id}", "moderator")
    assert "already denied by moderation" in (await replies_to(h, "modguy"))[0]
    r = await dashboard.post(f"/api/approvals/{balloon_id}/approve", json={}, headers=AUTH)
    assert r.status == 409

    # approved: the cleaned text inside the template; a denied one never shows
    await say(h, MOD, f"!approve {bridge_id}", "moderator")
    await until(lambda: watcher.seen[-1].startswith("a stone bridge"), "the approved prompt in OBS")
    await say(h, MOD, f"!deny {lighthouse_id}", "moderator")
    await replies_to(h, "modguy", 3)
    # a preset longer than the box: the model gets all of it, OBS shows it clipped
    await say(h, MOD, f"!approve {saga_id}", "moderator")
    await until(lambda: watcher.seen[-1].endswith("…"), "the approved preset in OBS")
    assert h.bus.current().text.endswith("painted in gold leaf, film grain")
    await asyncio.sleep(0.5)
