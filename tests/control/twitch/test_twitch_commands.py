"""Chat commands through the real TwitchIO client against the local fake Twitch: roles, cooldowns,
the approval flow and the kill switch."""

from __future__ import annotations

import asyncio

from twitch_harness import MOD, OWNER, VIEWER, VIEWER2, VIP, counter, replies_to, run_with_timeout, say, settle


def test_ai_command_sets_the_prompt_and_replies(start_twitch):
    async def body():
        async with start_twitch(global_cooldowns_s={"ai": 0.0}) as h:
            await say(h, VIEWER, "!ai a neon city at night")
            (reply,) = await replies_to(h, "viewer1")
            assert h.bus.current().text.endswith("a neon city at night")
            assert h.bus.current().author == "viewer1" and h.bus.current().source == "twitch"
            assert "prompt is now" in reply
            # blocked text never reaches the bus, and the reply does not echo it
            await say(h, VIEWER2, "!ai a naked person")
            (reply2,) = await replies_to(h, "viewer2")
            assert "naked" not in reply2 and "not used" in reply2
            assert h.bus.current().text.endswith("a neon city at night")
            await say(h, VIEWER2, "hello chat, no command here")
            await settle(h)
            assert counter(h, "twitch_chat_messages") == 3 and counter(h, "twitch_commands") == 2

    run_with_timeout(body())


def test_role_gates(start_twitch):
    async def body():
        async with start_twitch(roles={"strength": "vip"}, reply_on_refusal=False) as h:
            await say(h, VIEWER, "!aioff")
            await say(h, VIEWER, "!strength 0.3")
            await settle(h, 0.3)
            assert h.bus.current().enabled and h.bus.current().strength is None
            # with reply_on_refusal = false a refusal is only counted (test_twitch_refusals covers the replies)
            assert counter(h, "twitch_command_forbidden") == 2 and h.fake.sent == []

            await say(h, MOD, "!aioff", "moderator")
            await replies_to(h, "modguy")
            assert not h.bus.current().enabled and h.bus.current().author == "modguy"
            await say(h, OWNER, "!aion", "broadcaster")
            await replies_to(h, "streamer")
            assert h.bus.current().enabled
            await say(h, VIP, "!strength 0.25", "vip")  # configured: vip may set the strength
            await replies_to(h, "vipper")
            assert h.bus.current().strength == 0.25
            await say(h, VIP, "!strength 7", "vip")
            assert "usage" in (await replies_to(h, "vipper", 2))[1]
            assert h.bus.current().strength == 0.25

    run_with_timeout(body())


def test_user_and_global_cooldowns_with_mods_exempt(start_twitch):
    async def body():
        async with start_twitch(moderation={"min_change_interval_s": 0.0},
                                user_cooldowns_s={"ai": 30.0}, global_cooldowns_s={"ai": 1.0}) as h:
            await say(h, VIEWER, "!ai first look")
            await replies_to(h, "viewer1")
            await say(h, VIEWER2, "!ai second look")  # inside the 1 s channel-wide cooldown
            assert "again in 1 s" in (await replies_to(h, "viewer2"))[0]
            assert counter(h, "twitch_command_cooldown") == 1
            assert h.bus.current().text.endswith("first look")
            await asyncio.sleep(1.0)
            await say(h, VIEWER, "!ai third look")  # viewer1's own 30 s cooldown
            await say(h, VIEWER2, "!ai fourth look")  # global cooldown over
            assert "again in" in (await replies_to(h, "viewer1", 2))[1]
            assert "prompt is now" in (await replies_to(h, "viewer2", 2))[1]
            assert counter(h, "twitch_command_cooldown") == 2
            assert h.bus.current().text.endswith("fourth look")
            for i in range(3):  # moderators are exempt from both
                await say(h, MOD, f"!ai mod look {i}", "moderator")
            await replies_to(h, "modguy", 3)
            assert counter(h, "twitch_command_cooldown") == 2

    run_with_timeout(body())


def test_approval_flow(start_twitch):
    async def body():
        async with start_twitch(moderation={"mode": "approval", "min_change_interval_s": 0.0},
                                global_cooldowns_s={"ai": 0.0}) as h:
            await say(h, VIEWER, "!ai a castle made of candy")
            await say(h, VIEWER2, "!ai an underwater city")
            r1 = (await replies_to(h, "viewer1"))[0]
            await replies_to(h, "viewer2")
            assert "waiting for a mod" in r1 and h.bus.current().text == "initial prompt"
            first, second = (str(i.id) for i in h.control.approvals.pending())
            await say(h, VIEWER, "!aiqueue")
            queue = (await replies_to(h, "viewer1", 2))[1]
            assert f"#{first}" in queue and f"#{second}" in queue and "(viewer1)" in queue
            assert "candy" not in queue and "underwater" not in queue  # a waiting request's text never reaches chat
            await say(h, VIEWER, f"!approve {first}")  # viewers cannot approve
            await settle(h, 0.3)
            assert h.bus.current().text == "initial prompt"
            await say(h, MOD, f"!approve {first}", "moderator")
            assert "approved" in (await replies_to(h, "modguy"))[0]
            await h.fake.wait_for(lambda: h.bus.current().text.endswith("candy"))
            await say(h, MOD, f"!deny #{second} not today", "moderator")
            assert "denied" in (await replies_to(h, "modguy", 2))[1]
            assert h.control.approvals.get(second).status == "denied"
            await say(h, MOD, f"!approve {second}", "moderator")  # already decided: clear answer, no change
            assert "already denied" in (await replies_to(h, "modguy", 3))[2]
            assert h.bus.current().text.endswith("candy")

    run_with_timeout(body())


def test_approving_what_moderation_now_refuses_is_answered_as_refused(start_twitch):
    async def body():
        async with start_twitch(moderation={"mode": "approval", "min_change_interval_s": 0.0}) as h:
            # queued around the governor (as an older version could have stored it): a bidi override
            # makes "edun" paint as a blocked word
            item_id = h.control.approvals.submit("a \u202eedun figure", source="twitch", author="viewer1")
            await say(h, MOD, f"!approve {item_id}", "moderator")
            (reply,) = await replies_to(h, "modguy")
            assert "refused by moderation" in reply and "approved" not in reply and "edun" not in reply
            item = h.control.approvals.get(item_id)
            assert item.status == "denied" and item.decided_by == "moderation"
            assert h.bus.current().text == "initial prompt"

    run_with_timeout(body())
