"""Where the daemon's TwitchIO connects: Twitch, or a local fake named by STREAMER_TWITCH_API_BASE (loopback
only, so the variable can never send the tokens off the machine); and chat coming back after the
EventSub websocket is dropped without a reconnect message."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from twitch_harness import VIEWER, replies_to, run_with_timeout, say

from streamer import config
from streamer.control.twitch import component as twitch
from streamer.control.twitch.endpoints import ENV, EndpointError, local_api_base, overrides


@pytest.mark.parametrize(
    "value, base",
    [
        ("", None),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:9/", "http://localhost:9"),
        ("http://[::1]:7000", "http://[::1]:7000"),
        ("http://127.8.9.1:80/helix", "http://127.8.9.1:80"),
    ],
)
def test_loopback_bases_are_taken(value, base):
    assert local_api_base({ENV: value}) == base


@pytest.mark.parametrize(
    "value",
    [
        "https://api.twitch.tv",
        "http://10.0.0.5:80",
        "http://evil.example:80",
        "http://127.0.0.1",
        "ws://127.0.0.1:80",
        "http://127.0.0.1:99999",
        "127.0.0.1:80",
    ],
)
def test_anything_else_is_refused(value):
    with pytest.raises(EndpointError, match=ENV):
        local_api_base({ENV: value})


def test_overrides_point_helix_oauth_and_eventsub_at_the_base():
    values = {attribute: value for _, attribute, value in overrides("http://127.0.0.1:5000")}
    assert values == {
        "BASE": "http://127.0.0.1:5000/helix/",
        "ID_BASE": "http://127.0.0.1:5000/",
        "WSS": "ws://127.0.0.1:5000/ws",
    }


def test_a_refused_base_turns_twitch_off_with_one_error(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", "s")
    monkeypatch.setenv(ENV, "http://twitch.example.net:80")
    settings = config.from_dict(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "twitch": {"enabled": True, "client_id": "c", "bot_id": "1", "owner_id": "2"},
        }
    )
    with caplog.at_level(logging.ERROR):
        assert twitch.build(SimpleNamespace(settings=settings)) is None
    assert "Twitch control is off" in caplog.text and ENV in caplog.text


def test_chat_comes_back_after_the_websocket_is_dropped(start_twitch):
    async def body():
        async with start_twitch(global_cooldowns_s={"ai": 0.0}, user_cooldowns_s={"ai": 0.0}) as h:
            first = h.fake.live_sessions()
            assert await h.fake.drop_sessions() == len(first) >= 1  # one websocket per token (bot, broadcaster)
            await h.fake.wait_for(lambda: any(s not in first for s in h.fake.live_sessions()), timeout=15)
            # TwitchIO resubscribes on its new session: a command typed now is answered
            await h.fake.wait_for(
                lambda: any(
                    sub["status"] == "enabled" and sub["transport"]["session_id"] not in first
                    for sub in h.fake.subscriptions.values()
                ),
                timeout=15,
            )
            await asyncio.sleep(0.1)
            await say(h, VIEWER, "!ai after the drop")
            await replies_to(h, "viewer1")
            assert h.bus.current().text.endswith("after the drop")

    run_with_timeout(body(), 40)
