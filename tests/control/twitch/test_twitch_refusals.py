"""Refused commands (role gate, cooldown) get one short answer per chatter per command per window,
through the real TwitchIO client against the local fake Twitch; the throttle itself with a fake clock."""

from __future__ import annotations

import asyncio
import re

from twitch_harness import VIEWER, VIEWER2, counter, replies_to, run_with_timeout, say, sent_texts, settle

from streamer.control.twitch import refusals as twitch_refusals
from streamer.control.twitch.refusals import Refusal, RefusalReplies


def test_forbidden_role_gets_one_reply_even_when_repeated(start_twitch):
    async def body():
        async with start_twitch() as h:
            await say(h, VIEWER, "!aioff please turn it off zebra")
            (reply,) = await replies_to(h, "viewer1")
            assert reply == "@viewer1 !aioff is for moderators"
            assert h.bus.current().enabled
            for i in range(10):  # a quick flood of the same refused command
                await say(h, VIEWER, f"!aioff zebra {i}")
            await settle(h, 0.5)
            assert counter(h, "twitch_command_forbidden") == 11
            assert len(await replies_to(h, "viewer1")) == 1
            assert counter(h, "twitch_refusal_replies_skipped") == 10
            assert not any("zebra" in t for t in sent_texts(h))  # the chatter's text is never echoed
            # another command is another window; another chatter has their own
            await say(h, VIEWER, "!strength 0.5")
            await say(h, VIEWER2, "!aioff")
            assert (await replies_to(h, "viewer1", 2))[1] == "@viewer1 !strength is for moderators"
            assert (await replies_to(h, "viewer2"))[0] == "@viewer2 !aioff is for moderators"

    run_with_timeout(body())


def test_cooldown_reply_states_the_seconds_left_once(start_twitch):
    async def body():
        async with start_twitch(moderation={"min_change_interval_s": 0.0},
                                user_cooldowns_s={"ai": 30.0}, global_cooldowns_s={"ai": 0.0}) as h:
            await say(h, VIEWER, "!ai a forest of glass")
            assert "prompt is now" in (await replies_to(h, "viewer1"))[0]
            await asyncio.sleep(1.2)  # so the seconds left are visibly fewer than the full 30
            for i in range(10):
                await say(h, VIEWER, f"!ai secret giraffe {i}")
            await settle(h, 0.5)
            mine = await replies_to(h, "viewer1", 2)
            assert len(mine) == 2 and counter(h, "twitch_command_cooldown") == 10
            m = re.fullmatch(r"@viewer1 !ai again in (\d+) s", mine[1])
            assert m is not None, mine[1]
            assert 27 <= int(m.group(1)) <= 29  # 30 s cooldown, ~1.2-1.7 s already over, rounded up
            assert not any("giraffe" in t for t in sent_texts(h))
            assert h.bus.current().text.endswith("a forest of glass")

    run_with_timeout(body())


def test_replies_off_keeps_refusals_silent(start_twitch):
    async def body():
        async with start_twitch(replies=False) as h:
            await say(h, VIEWER, "!aioff")
            await settle(h, 0.4)
            assert counter(h, "twitch_command_forbidden") == 1 and h.fake.sent == []

    run_with_timeout(body())


def test_throttle_windows_and_channel_cap():
    now = [0.0]
    cooldowns = {"ai": 30.0, "aioff": 0.0, "poll": 120.0}
    replies = RefusalReplies(lambda key: cooldowns[key], clock=lambda: now[0])
    role = Refusal("aioff", "!aioff", role="moderator")
    assert replies.allow("a", role) and not replies.allow("a", role)
    now[0] = twitch_refusals.ROLE_WINDOW_S - 0.1
    assert not replies.allow("a", role)
    now[0] = twitch_refusals.ROLE_WINDOW_S
    assert replies.allow("a", role)  # the window is over: one more answer
    # a role refusal of a command with a longer per-chatter cooldown stays quiet for that cooldown
    assert replies.allow("a", Refusal("poll", "!poll", role="moderator"))
    now[0] += 119.0
    assert not replies.allow("a", Refusal("poll", "!poll", role="moderator"))
    # a cooldown refusal stays quiet for the seconds that were left
    cool = Refusal("ai", "!ai", remaining_s=12.3)
    assert replies.allow("b", cool) and not replies.allow("b", Refusal("ai", "!ai", remaining_s=11.0))
    now[0] += 12.3
    assert replies.allow("b", Refusal("ai", "!ai", remaining_s=5.0))
    # channel-wide: many different chatters get at most CHANNEL_PER_WINDOW answers per window
    now[0] += 1000.0
    answered = sum(replies.allow(f"chatter{i}", role) for i in range(50))
    assert answered == twitch_refusals.CHANNEL_PER_WINDOW
    now[0] += twitch_refusals.CHANNEL_WINDOW_S
    assert replies.allow("chatter49", role)  # was capped, not throttled: may get an answer later


def test_refusal_texts():
    assert Refusal("ai", "!ai", remaining_s=11.2).text() == "!ai again in 12 s"
    assert Refusal("ai", "!ai", remaining_s=0.2).text() == "!ai again in 1 s"
    assert Refusal("poll", "!poll", role="vip").text() == "!poll is for VIPs"
    assert Refusal("aion", "?aion", role="broadcaster").text() == "?aion is for the broadcaster"
