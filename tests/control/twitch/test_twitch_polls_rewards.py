"""Native and chat polls, channel points, a session_reconnect mid-poll and token refresh, all through
the real TwitchIO client against the local fake Twitch."""

from __future__ import annotations

import asyncio

from twitch_harness import BOT, MOD, OWNER, VIEWER, VIEWER2, VIP, replies_to, run_with_timeout, say, sent_texts

POLL_TESTS_TIMEOUT_S = 40.0
FAST = {"min_change_interval_s": 0.0}


def test_native_poll_with_a_reconnect_in_the_middle(start_twitch):
    async def body():
        async with start_twitch(moderation=FAST) as h:
            await say(h, MOD, "!poll a foggy forest | a desert at noon | a snowy village 30", "moderator")
            await h.fake.wait_for(lambda: h.fake.polls)
            (poll,) = h.fake.polls.values()
            assert [c["title"] for c in poll["choices"]] == ["a foggy forest", "a desert at noon", "a snowy village"]
            assert poll["duration"] == 30
            await h.fake.wait_for(lambda: any("vote in the poll" in t for t in sent_texts(h)))
            await h.fake.vote(poll["id"], 1, 3)
            await h.fake.wait_for(lambda: h.control.polls.current().votes == (0, 3, 0))

            # Twitch moves the broadcaster's EventSub session to another edge mid-poll.
            old = [s for s in h.fake.live_sessions()]
            for session_id in old:
                await h.fake.session_reconnect(session_id)
            await h.fake.wait_for(lambda: len(h.fake.live_sessions()) == len(old)
                                  and not set(h.fake.live_sessions()) & set(old))
            await h.fake.vote(poll["id"], 2, 5)  # delivered on the new session
            await h.fake.wait_for(lambda: h.control.polls.current().votes == (0, 3, 5))
            await h.fake.finish_poll(poll["id"])
            await h.fake.wait_for(lambda: h.control.polls.current() is None)
            assert h.bus.current().text.endswith("a snowy village") and h.bus.current().source == "poll"
            await h.fake.wait_for(lambda: any("poll over" in t and "a snowy village wins" in t for t in sent_texts(h)))
            # chat still arrives after the reconnect
            await say(h, VIEWER, "!ai a quiet harbour")
            await h.fake.wait_for(lambda: h.bus.current().text.endswith("a quiet harbour"))

    run_with_timeout(body(), POLL_TESTS_TIMEOUT_S)


def test_chat_vote_fallback_and_tie(start_twitch):
    async def body():
        async with start_twitch(affiliate=False, moderation=FAST) as h:
            await say(h, MOD, "!poll red | blue 15", "moderator")
            await h.fake.wait_for(lambda: any("!vote" in t for t in sent_texts(h)))
            assert h.fake.polls == {} and ("POST", "polls", 403) in h.fake.requests  # Twitch refused: not affiliate
            snap = h.control.polls.current()
            assert snap.backend == "chat" and snap.choices == ("red", "blue")
            await say(h, VIEWER, "!vote 2")
            await asyncio.sleep(0.05)
            await say(h, VIEWER2, "!vote 1")
            await say(h, VIP, "!vote 9")  # out of range: told so, not counted
            assert "1 to 2" in (await replies_to(h, "vipper"))[0]
            await h.fake.wait_for(lambda: h.control.polls.current().votes == (1, 1))
            await h.control.polls.end(by="test")  # tie: blue reached 1 vote first
            assert h.bus.current().text.endswith("blue")
            await say(h, VIEWER, "!vote 1")
            assert "no poll" in (await replies_to(h, "viewer1"))[0]

    run_with_timeout(body(), POLL_TESTS_TIMEOUT_S)


def test_poll_rejects_bad_input_before_any_http_call(start_twitch):
    async def body():
        async with start_twitch(moderation=FAST) as h:
            await say(h, MOD, "!poll " + " | ".join(["x"] * 6), "moderator")
            await say(h, MOD, "!poll a | b 5", "moderator")
            await say(h, VIEWER, "!poll a | b")  # viewers may not start polls
            answers = await replies_to(h, "modguy", 2)
            assert all("choice" in a or "second" in a for a in answers), answers
            assert not any(r[1] == "polls" for r in h.fake.requests) and h.control.polls.current() is None

    run_with_timeout(body(), POLL_TESTS_TIMEOUT_S)


def test_channel_points_approved_and_refunded(start_twitch):
    async def body():
        async with start_twitch(moderation=FAST) as h:
            await h.fake.wait_for(lambda: h.fake.rewards)
            (reward,) = h.fake.rewards.values()
            assert reward["title"] == "AI prompt" and reward["_client_id"] == h.fake.client_id
            good = await h.fake.redeem(reward["id"], VIEWER, "a stained glass window")
            bad = await h.fake.redeem(reward["id"], VIEWER2, "a nude painting")
            later = await h.fake.redeem(reward["id"], VIP, "a paper cutout world")
            await h.fake.wait_for(lambda: len(h.control.approvals.pending()) == 2)
            await h.fake.wait_for(lambda: h.fake.redemptions[bad]["status"] == "CANCELED")  # blocked: refunded
            first, second = (i.id for i in h.control.approvals.pending())
            await say(h, MOD, f"!approve {first}", "moderator")
            await h.fake.wait_for(lambda: h.fake.redemptions[good]["status"] == "FULFILLED")
            assert h.bus.current().text.endswith("a stained glass window")
            await say(h, MOD, f"!deny {second}", "moderator")
            await h.fake.wait_for(lambda: h.fake.redemptions[later]["status"] == "CANCELED")
            assert h.bus.current().text.endswith("a stained glass window")

    run_with_timeout(body(), POLL_TESTS_TIMEOUT_S)


def test_expired_approval_is_refunded_and_reward_is_found_again(start_twitch):
    async def body():
        async with start_twitch(moderation=FAST) as h:
            await h.fake.wait_for(lambda: h.fake.rewards)
            (reward,) = h.fake.rewards.values()
            rid = await h.fake.redeem(reward["id"], VIEWER, "a lighthouse in a storm")
            await h.fake.wait_for(lambda: h.control.approvals.pending())
            h.control.approvals.expire(0.0)
            await h.fake.wait_for(lambda: h.fake.redemptions[rid]["status"] == "CANCELED")
            # a second connection finds the reward it created instead of making another
            await h.link.rewards.ensure_reward()
            assert len(h.fake.rewards) == 1

    run_with_timeout(body(), POLL_TESTS_TIMEOUT_S)


def test_expired_token_is_refreshed_and_stored(start_twitch):
    async def body():
        async with start_twitch(moderation=FAST) as h:
            old = h.tokens.get(BOT).access_token
            h.fake.expire_token(old)
            await say(h, VIEWER, "!ai a field of sunflowers")
            await replies_to(h, "viewer1")  # the reply needed the bot's token: 401 -> refresh -> retry
            assert ("POST", "chat/messages", 401) in h.fake.requests and h.fake.refreshes == 1
            new = h.tokens.get(BOT).access_token
            assert new != old and h.fake.tokens[new].valid
            assert h.tokens.get(OWNER).access_token in h.fake.tokens

    run_with_timeout(body(), POLL_TESTS_TIMEOUT_S)
