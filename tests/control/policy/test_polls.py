"""Polls: Twitch's limits checked before any HTTP call, chat votes (one per chatter, last counts),
deterministic ties, the winner moderated onto the bus, results persisted, restart mid-poll, and the
native backend path with a fake backend."""

import asyncio

import pytest

from streamer.config import ModerationSettings
from streamer.control.policy.approvals import Approvals
from streamer.control.policy.governor import PromptGovernor
from streamer.control.policy.moderation import Moderation
from streamer.control.policy.polls import PollError, PollManager, PollSpec, PollSpecError, winner_of
from streamer.prompts import PromptBus
from streamer.store import Store


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class FakeNative:
    """What the Twitch component provides: create/end over Helix (here: recorded)."""

    name = "twitch"

    def __init__(self, fail: bool = False) -> None:
        self.created: list[PollSpec] = []
        self.ended: list[tuple[str, bool]] = []
        self.fail = fail

    async def create(self, spec: PollSpec) -> str:
        if self.fail:
            raise RuntimeError("403: the broadcaster is not an affiliate")
        self.created.append(spec)
        return f"helix-{len(self.created)}"

    async def end(self, poll_id: str, *, cancel: bool) -> None:
        self.ended.append((poll_id, cancel))


def make(db, clock=None, **kw):
    settings = ModerationSettings(**{"template": "{prompt}, cinematic", **kw})
    store = Store(db)
    bus = PromptBus("start", store=store)
    moderation = Moderation(settings, store)
    gov = PromptGovernor(bus, moderation, Approvals(store), settings)
    clock = clock or Clock()
    polls = PollManager(gov, store, clock=clock)
    seen = []
    polls.add_listener(seen.append)
    return polls, bus, clock, seen, store


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"title": "x" * 61}, "title is 61 characters; Twitch allows at most 60"),
        ({"title": "  "}, "needs a title"),
        ({"choices": ("only one",)}, "2 to 5 choices; got 1"),
        ({"choices": tuple("abcdef")}, "2 to 5 choices; got 6"),
        ({"choices": ("ok", "y" * 26)}, "choice 2 is 26 characters; Twitch allows at most 25"),
        ({"choices": ("ok", " ")}, "choice 2 is empty"),
        ({"choices": ("Neon", "neon")}, "two choices are the same"),
        ({"choices": "ab"}, "list of texts"),
        ({"seconds": 14}, "15 to 1800 seconds; got 14"),
        ({"seconds": 1801}, "got 1801"),
        ({"seconds": 20.5}, "whole seconds"),
        ({"seconds": True}, "whole seconds"),
        ({"title": "a\u202eb"}, "control or invisible"),
    ],
)
def test_spec_validation_names_the_problem(kwargs, message):
    args = {"title": "Next look?", "choices": ("neon", "oil painting"), "seconds": 60, **kwargs}
    with pytest.raises(PollSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PollSpec(**args)


def test_spec_limits_inclusive_and_from_mapping():
    s = PollSpec("t" * 60, ("a" * 25, "b", "c", "d", "e"), 1800)
    assert s.seconds == 1800 and len(s.choices) == 5
    s = PollSpec.from_mapping({"title": " Next  look ", "options": [" neon ", "oil"], "duration_s": 15.0})
    assert s == PollSpec("Next look", ("neon", "oil"), 15) and isinstance(s.seconds, int)
    with pytest.raises(PollSpecError, match="needs 'title'"):
        PollSpec.from_mapping({"title": "x"})


def test_chat_votes_one_per_chatter_last_counts_and_winner_applied(tmp_path):
    polls, bus, clock, seen, store = make(tmp_path / "p.db")
    snap = run(polls.start(PollSpec("Next look?", ("neon city", "oil painting", "pixel art"), 30), by="mod_anna"))
    assert snap.status == "running" and snap.backend == "chat" and snap.seconds_left == 30
    polls.vote("u1", 1)
    polls.vote("u2", "2")
    polls.vote("u3", 2)
    polls.vote("u1", 2)  # u1 changes their mind: the last vote counts
    polls.vote("u1", 2)  # repeating it changes nothing
    assert polls.current().votes == (0, 3, 0)
    for bad in (0, 4, "two"):
        with pytest.raises(PollError, match="from 1 to 3"):
            polls.vote("u4", bad)
    clock.t += 10
    assert polls.tick() is None and polls.current().seconds_left == 20
    clock.t += 20
    done = polls.tick()
    assert done.status == "ended" and done.winner == 1 and done.winner_text == "oil painting" and done.result == "applied"
    assert bus.current().text == "oil painting, cinematic" and bus.current().source == "poll"
    assert polls.current() is None and seen[0].status == "running" and seen[-1] == done
    with pytest.raises(PollError, match="no poll is running"):
        polls.vote("u5", 1)
    (row,) = store.query("SELECT * FROM polls")
    assert row["status"] == "ended" and row["winner"] == 1 and row["votes"] == "[0, 3, 0]"
    assert polls.results()[0].winner_text == "oil painting"


def test_ties_are_deterministic():
    assert winner_of([2, 2, 1], [5, 3, 1]) == 1  # choice 2 reached 2 votes first
    assert winner_of([2, 2], [4, 4]) == 0  # same update: the lowest number wins
    assert winner_of([0, 0], [0, 0]) is None


def test_tie_in_a_chat_poll_goes_to_the_choice_that_reached_the_count_first(tmp_path):
    polls, bus, clock, seen, _ = make(tmp_path / "p.db")
    run(polls.start(PollSpec("Next?", ("neon", "oil", "pixel"), 15), by="mod"))
    polls.vote("a", 3)
    polls.vote("b", 3)  # pixel reaches 2 first
    polls.vote("c", 1)
    polls.vote("d", 1)  # neon reaches 2 later
    done = run(polls.end(by="mod"))
    assert done.votes == (2, 0, 2) and done.winner == 2
    # switching away and back re-times the count: now neon got back to 2 earlier than pixel
    polls2, *_ = make(tmp_path / "q.db")
    run(polls2.start(PollSpec("Next?", ("neon", "oil"), 15), by="mod"))
    for chatter, choice in [("a", 2), ("b", 2), ("c", 1), ("d", 1), ("a", 1), ("a", 2)]:
        polls2.vote(chatter, choice)
    assert run(polls2.end(by="mod")).winner == 0  # neon reached 2 at vote 4; oil got back to 2 at vote 6


def test_no_votes_cancel_and_one_poll_at_a_time(tmp_path):
    polls, bus, clock, seen, _ = make(tmp_path / "p.db")
    run(polls.start(PollSpec("Next?", ("neon", "oil"), 15), by="mod"))
    with pytest.raises(PollError, match="already running"):
        run(polls.start(PollSpec("Other?", ("a", "b"), 15), by="mod"))
    clock.t += 15
    done = polls.tick()
    assert done.winner is None and done.result == "no votes" and bus.current().version == 0
    run(polls.start(PollSpec("Next?", ("neon", "oil"), 15), by="mod"))
    polls.vote("a", 1)
    done = run(polls.cancel(by="mod_ben"))
    assert done.status == "cancelled" and done.winner is None and bus.current().version == 0
    with pytest.raises(PollError):
        run(polls.end(by="mod"))


def test_blocked_poll_texts_are_refused_and_winner_is_moderated(tmp_path):
    polls, bus, clock, seen, _ = make(tmp_path / "p.db")
    with pytest.raises(PollSpecError, match="choice 2 is blocked: sexual content"):
        run(polls.start(PollSpec("Next?", ("neon", "n.u.d.e"), 15), by="mod"))
    assert polls.current() is None
    # a blocklist extended after the poll started still stops the winner (governor re-moderates it)
    run(polls.start(PollSpec("Next?", ("neon", "clowns"), 15), by="mod"))
    polls.governor.moderation = Moderation(ModerationSettings(blocklist_extra=("clown",)), None)
    polls.vote("a", 2)
    done = run(polls.end(by="mod"))
    assert done.winner == 1 and done.result.startswith("rejected: blocked") and bus.current().version == 0


def test_restart_mid_poll_restores_votes_or_closes_cleanly(tmp_path):
    db = tmp_path / "p.db"
    clock = Clock()
    polls, bus, _, _, store = make(db, clock)
    run(polls.start(PollSpec("Next?", ("neon", "oil"), 60), by="mod"))
    polls.vote("a", 1)
    polls.vote("b", 2)
    polls.vote("c", 2)
    store.close()  # the daemon dies mid-poll

    clock.t += 20
    polls2, bus2, _, _, store2 = make(db, clock)
    cur = polls2.current()
    assert cur is not None and cur.votes == (1, 2) and cur.seconds_left == 40
    polls2.vote("b", 1)  # ballots came back too: b's vote moves instead of counting twice
    assert polls2.current().votes == (2, 1)
    store2.close()

    clock.t += 100  # down past the end time
    polls3, bus3, _, _, store3 = make(db, clock)
    assert polls3.current() is None
    (last,) = polls3.results(1)
    assert last.status == "ended" and last.winner == 0 and "not applied" in last.result and bus3.current().version == 0


def test_native_backend_path(tmp_path):
    polls, bus, clock, seen, store = make(tmp_path / "p.db")
    native = FakeNative()
    polls.set_default_backend(native)
    snap = run(polls.start({"title": "Next?", "choices": ["neon", "oil", "pixel"], "seconds": 60}, by="dashboard"))
    assert snap.backend == "twitch" and snap.platform_id == "helix-1" and native.created[0].choices[2] == "pixel"
    with pytest.raises(PollError, match="Twitch's poll"):
        polls.vote("a", 1)
    assert polls.on_progress([1, 0, 0], poll_id="other-poll") is None  # not ours
    polls.on_progress([1, 0, 2], poll_id="helix-1")
    polls.on_progress([2, 0, 2], poll_id="helix-1")  # tie: pixel got to 2 first
    assert seen[-1].votes == (2, 0, 2)
    with pytest.raises(PollError, match="expected 3"):
        polls.on_progress([1, 2])
    done = polls.on_end([2, 0, 2], poll_id="helix-1")
    assert done.winner == 2 and bus.current().text == "pixel, cinematic"
    assert polls.on_end([9, 9, 9], poll_id="helix-1") is None  # a late duplicate changes nothing


def test_native_create_failure_starts_nothing_and_early_end_calls_helix(tmp_path):
    polls, bus, clock, seen, store = make(tmp_path / "p.db")
    with pytest.raises(RuntimeError, match="affiliate"):
        run(polls.start(PollSpec("Next?", ("neon", "oil"), 30), by="mod", backend=FakeNative(fail=True)))
    assert polls.current() is None and store.query("SELECT * FROM polls") == []
    native = FakeNative()
    run(polls.start(PollSpec("Next?", ("neon", "oil"), 30), by="mod", backend=native))
    polls.on_progress([0, 3])
    done = run(polls.end(by="mod"))
    assert native.ended == [("helix-1", False)] and done.winner == 1 and bus.current().text == "oil, cinematic"
    # explicit chat fallback even with a native default
    polls.set_default_backend(native)
    assert run(polls.start(PollSpec("Again?", ("a", "b"), 15), by="mod", backend="chat")).backend == "chat"


def test_native_poll_without_end_event_closes_after_grace(tmp_path):
    polls, bus, clock, seen, _ = make(tmp_path / "p.db")
    run(polls.start(PollSpec("Next?", ("neon", "oil"), 30), by="mod", backend=FakeNative()))
    polls.on_progress([4, 1])
    clock.t += 30
    assert polls.tick() is None  # Twitch's end event may still come
    clock.t += 15
    done = polls.tick()
    assert done.winner == 0 and bus.current().text == "neon, cinematic"


def test_overlay_view(tmp_path):
    polls, *_ = make(tmp_path / "p.db")
    run(polls.start(PollSpec("Next?", ("neon", "oil"), 30), by="mod"))
    polls.vote("a", 2)
    v = polls.current().view()
    assert v["title"] == "Next?" and v["choices"][1] == {"number": 2, "text": "oil", "votes": 1}
    assert v["total"] == 1 and v["seconds_left"] == 30 and v["status"] == "running"
