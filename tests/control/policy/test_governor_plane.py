"""The control-plane bundle as the app builds it: one Store, one bus, every part wired together."""

import asyncio
from types import SimpleNamespace

import pytest

from streamer import config
from streamer.config import ConfigError
from streamer.control.policy.plane import ControlPlane, build, build_control_plane
from streamer.prompts import PromptBus
from streamer.store import Store


def test_build_control_plane_wires_everything(tmp_path):
    settings = config.from_dict({"moderation": {"mode": "approval", "template": "anime, {prompt}"}})
    store = Store(tmp_path / "s.db")
    bus = PromptBus("start", store=store)
    plane = build_control_plane(settings, store, bus)
    assert isinstance(plane, ControlPlane) and bus.moderator is plane.moderation
    assert plane.governor.approvals is plane.approvals and plane.polls.governor is plane.governor
    assert not bus.propose("n u d e", source="console", author="streamer").allowed  # the bus's own path is moderated
    p = plane.governor.propose("a cat", source="twitch.chat", author="alice")
    assert p.status == "queued" and plane.approvals.pending()[0].id == p.id
    plane.approvals.approve(p.id, by="mod")
    assert bus.current().text == "anime, a cat"
    assert build(SimpleNamespace(control=plane)) is plane and build(SimpleNamespace(control=None)) is None


def test_plane_runs_as_a_component_until_cancelled(tmp_path):
    store = Store(tmp_path / "s.db")
    plane = build_control_plane(config.Settings(), store, PromptBus("start", store=store))

    async def main():
        task = asyncio.create_task(plane.run())
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_blocked_preset_fails_the_build_with_a_config_error(tmp_path):
    settings = config.from_dict({"moderation": {"presets": {"spicy": "topless beach"}}})
    store = Store(tmp_path / "s.db")
    with pytest.raises(ConfigError, match="moderation.presets.spicy"):
        build_control_plane(settings, store, PromptBus("start"))
