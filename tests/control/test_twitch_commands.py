"""Chat commands through the real TwitchIO client against the local fake Twitch."""

from __future__ import annotations

import asyncio

from twitch_harness import MOD, OWNER, VIEWER, VIEWER2, make_control, running_twitch, say, sent_texts, settle


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_ai_command_sets_the_prompt_and_replies(monkeypatch, tmp_path):
    async def body():
        async with running_twitch(monkeypatch, tmp_path, make_control) as h:
            await say(h, VIEWER, "!ai a neon city at night")
            await h.fake.wait_for(lambda: h.fake.sent)
            assert h.bus.current().text.endswith("a neon city at night")
            assert h.bus.current().author == "viewer1"
            assert "@viewer1" in sent_texts(h)[0] and "prompt is now" in sent_texts(h)[0]

    run(body())
