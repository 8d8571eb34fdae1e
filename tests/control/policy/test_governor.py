"""PromptGovernor: moderation first, approval mode, one change per interval (injected clock), kill switch,
strength validation, and the asyncio loop that applies scheduled prompts."""

import asyncio
import math

import pytest

from streamer.config import ModerationSettings
from streamer.control.policy.approvals import Approvals
from streamer.control.policy.governor import PromptGovernor
from streamer.control.policy.moderation import Moderation
from streamer.prompts import PromptBus
from streamer.store import Store


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path, **kw):
    settings = ModerationSettings(**{"min_change_interval_s": 10.0, **kw})
    store = Store(tmp_path / "g.db")
    bus = PromptBus("start", store=store)
    clock = Clock()
    moderation = Moderation(settings, store)
    approvals = Approvals(store)
    gov = PromptGovernor(bus, moderation, approvals, settings, clock=clock)
    heard = []
    gov.add_listener(heard.append)
    return gov, bus, clock, heard, store


def test_rate_limit_schedules_the_newest_and_supersedes_older(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path)
    p = gov.propose("a cat", source="twitch.chat", author="a", meta={"redemption": "r1"})
    assert p.status == "applied" and bus.current().text == "a cat" and p.meta == {"redemption": "r1"}
    clock.t += 3
    p2 = gov.propose("a dog", source="twitch.chat", author="b", meta={"redemption": "r2"})
    assert p2.status == "scheduled" and math.isclose(p2.due_in_s, 7) and "7 s" in p2.reason
    p3 = gov.propose("a fox", source="channel_points", author="c")
    assert p3.status == "scheduled" and bus.current().text == "a cat"
    assert heard[-2].status == "superseded" and heard[-2].meta == {"redemption": "r2"}  # refundable
    assert gov.tick() is None  # 3 s in: not yet
    clock.t += 7
    applied = gov.tick()
    assert applied is not None and applied.status == "applied" and applied.text == "a fox"
    assert bus.current().text == "a fox" and bus.current().author == "c" and gov.scheduled() is None
    assert gov.tick() is None
    clock.t += 5
    assert gov.propose("a bird", source="twitch.chat", author="d").status == "scheduled"  # interval restarted at the tick


def test_rejected_proposals_never_reach_the_bus_or_the_schedule(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path)
    p = gov.propose("ｎｕｄｅ", source="twitch.chat", author="troll")
    assert p.status == "rejected" and p.text == "" and p.reason == "blocked: sexual content"
    assert bus.current().version == 0 and heard == [p]


def test_trusted_sources_apply_at_once_and_win_over_scheduled(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path)
    gov.propose("a cat", source="twitch.chat", author="a")
    clock.t += 1
    assert gov.propose("a dog", source="twitch.chat", author="b").status == "scheduled"
    p = gov.propose("the streamer's look", source="dashboard", author="streamer")
    assert p.status == "applied" and bus.current().text == "the streamer's look"
    assert heard[-2].status == "superseded" and gov.scheduled() is None
    clock.t += 100
    assert gov.tick() is None and bus.current().text == "the streamer's look"


def test_approval_mode_queues_and_approval_applies(tmp_path):
    gov, bus, clock, heard, store = make(tmp_path, mode="approval", template="anime, {prompt}")
    p = gov.propose("a cat", source="twitch.chat", author="alice", meta={"redemption": "r1"})
    assert p.status == "queued" and p.id is not None and p.text == "anime, a cat" and bus.current().version == 0
    assert [i.id for i in gov.approvals.pending()] == [p.id]
    gov.approvals.approve(p.id, by="mod_anna")
    assert bus.current().text == "anime, a cat" and bus.current().author == "alice"
    assert heard[-1].status == "applied" and heard[-1].id == p.id and heard[-1].meta == {"redemption": "r1"}
    # a second approval inside the interval is scheduled, not applied
    q = gov.propose("a dog", source="twitch.chat", author="bob")
    clock.t += 2
    gov.approvals.approve(q.id, by="mod_anna")
    assert heard[-1].status == "scheduled" and bus.current().text == "anime, a cat"
    # denial: nothing reaches the bus
    r = gov.propose("a fox", source="twitch.chat", author="carol")
    gov.approvals.deny(r.id, by="mod", reason="no")
    clock.t += 10
    gov.tick()
    assert bus.current().text == "anime, a dog"
    decisions = [row["decision"] for row in store.query("SELECT decision FROM moderation_audit ORDER BY id")]
    assert decisions.count("queued") == 3 and "applied" in decisions and "scheduled" in decisions


def test_approved_text_is_checked_again(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path, mode="approval")
    item_id = gov.approvals.submit("n u d e", source="twitch.chat", author="sneaky")  # queued around the governor
    gov.approvals.approve(item_id, by="mod")
    assert heard[-1].status == "rejected" and bus.current().version == 0


def test_kill_switch_drops_scheduled_and_revive(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path)
    gov.propose("a cat", source="twitch.chat", author="a")
    clock.t += 1
    gov.propose("a dog", source="twitch.chat", author="b")
    gov.kill("mod_anna", source="twitch.chat", reason="!aioff")
    state = bus.current()
    assert not state.enabled and state.author == "mod_anna" and state.reason == "!aioff"
    assert heard[-1].status == "dropped" and gov.scheduled() is None
    clock.t += 100
    assert gov.tick() is None
    gov.revive("streamer")
    assert bus.current().enabled and bus.current().text == "a cat"


def test_strength_validation(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path)
    gov.set_strength(0.4, "mod")
    assert bus.current().strength == 0.4
    gov.set_strength(1, "mod")
    assert bus.current().strength == 1.0
    for bad in (-0.1, 1.5, math.nan, math.inf, True, "0.5"):
        with pytest.raises(ValueError, match="strength"):
            gov.set_strength(bad, "mod")  # type: ignore[arg-type]
    assert bus.current().strength == 1.0
    gov.set_strength(None, "mod")
    assert bus.current().strength is None


def test_status_summary(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path)
    gov.propose("a cat", source="twitch.chat", author="a")
    clock.t += 4
    gov.propose("a dog", source="twitch.chat", author="b")
    s = gov.status()
    assert s["prompt"] == "a cat" and s["next_change_in_s"] == 6.0 and s["scheduled"]["text"] == "a dog"
    assert s["enabled"] and s["pending_approvals"] == 0 and s["mode"] == "open"


def test_run_loop_expires_approvals(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path, mode="approval", approval_max_age_s=60)
    gov.approvals._clock = clock  # the queue's ages on the same fake clock
    q = gov.propose("a cat", source="twitch.chat", author="a")
    gov.propose("a dog", source="dashboard", author="streamer")
    clock.t += 1
    gov.approvals.submit("a fox", source="twitch.chat", author="b")  # fresh
    gov.propose("a bird", source="poll", author="poll #1")  # trusted: applies at once
    clock.t += 100

    async def main():
        task = asyncio.create_task(gov.run(poll_s=0.01))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert gov.approvals.get(q.id).status == "expired"
    assert bus.current().text == "a bird"


def test_run_loop_applies_the_scheduled_prompt(tmp_path):
    gov, bus, clock, heard, _ = make(tmp_path)
    gov.propose("a cat", source="twitch.chat", author="a")
    gov.propose("a dog", source="twitch.chat", author="b")
    assert bus.current().text == "a cat"
    clock.t += 10

    async def main():
        task = asyncio.create_task(gov.run(poll_s=0.01))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    assert bus.current().text == "a dog" and heard[-1].status == "applied"
