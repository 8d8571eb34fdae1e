"""Approval queue: submit/approve/deny/expire, listeners, clear errors, and persistence across a restart."""

import pytest

from streamer.control.policy.approvals import ApprovalError, Approvals
from streamer.store import Store


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_submit_approve_deny_and_listeners(tmp_path):
    clock = Clock()
    q = Approvals(Store(tmp_path / "q.db"), clock=clock)
    events = []
    q.add_listener(lambda event, item: events.append((event, item.id, item.status)))
    a = q.submit("a cat", source="twitch.chat", author="alice", meta={"redemption": "r-1"}, model_text="style: a cat")
    b = q.submit("a dog", source="channel_points", author="bob", meta={"redemption": "r-2"})
    assert [i.id for i in q.pending()] == [a, b]
    item = q.approve(str(a), by="mod_anna")  # ids from URLs and chat arrive as text
    assert item.status == "approved" and item.decided_by == "mod_anna" and item.meta == {"redemption": "r-1"}
    assert item.model_text == "style: a cat" and item.created_at == 1000.0
    item = q.deny(f"#{b}", by="mod_ben", reason="off topic")
    assert item.status == "denied" and item.reason == "off topic"
    assert q.pending() == []
    assert events == [("submitted", a, "pending"), ("submitted", b, "pending"), ("approved", a, "approved"),
                      ("denied", b, "denied")]


def test_clear_errors_for_unknown_decided_and_bad_ids(tmp_path):
    q = Approvals(Store(tmp_path / "q.db"))
    a = q.submit("a cat", source="twitch.chat", author="alice")
    q.approve(a, by="mod_anna")
    with pytest.raises(ApprovalError, match=r"#\d+ was already approved by mod_anna"):
        q.deny(a, by="mod_ben")
    with pytest.raises(ApprovalError, match="no request #999"):
        q.approve(999, by="mod")
    with pytest.raises(ApprovalError, match="not a request number"):
        q.approve("abc", by="mod")
    assert q.get("abc") is None and q.get(999) is None and q.get(a).status == "approved"


def test_expiry_returns_items_for_refunds(tmp_path):
    clock = Clock()
    q = Approvals(Store(tmp_path / "q.db"), clock=clock)
    events = []
    q.add_listener(lambda event, item: events.append(event))
    old = q.submit("old", source="channel_points", author="a", meta={"redemption": "r-old"})
    clock.t += 500
    new = q.submit("new", source="channel_points", author="b")
    clock.t += 200  # old is 700 s old, new 200 s
    expired = q.expire(600)
    assert [i.id for i in expired] == [old] and expired[0].meta == {"redemption": "r-old"}
    assert expired[0].status == "expired" and expired[0].decided_by == "system"
    assert [i.id for i in q.pending()] == [new] and events.count("expired") == 1
    assert q.expire(600) == []


def test_queue_survives_a_restart(tmp_path):
    db = tmp_path / "q.db"
    store = Store(db)
    q = Approvals(store)
    a = q.submit("a cat \ud800", source="twitch.chat", author="alice", meta={"n": 1})
    b = q.submit("a dog", source="twitch.chat", author="bob")
    q.deny(b, by="mod", reason="no dogs")
    store.close()  # the daemon stops (or is killed: every write is already committed)

    q2 = Approvals(Store(db))
    assert [(i.id, i.text, i.meta) for i in q2.pending()] == [(a, "a cat \ufffd", {"n": 1})]
    assert q2.get(b).reason == "no dogs"
    assert q2.approve(a, by="mod").status == "approved"
    assert [i.id for i in q2.recent()] == [b, a]


def test_a_broken_listener_does_not_undo_a_decision(tmp_path):
    q = Approvals(Store(tmp_path / "q.db"))

    def broken(event, item):
        raise RuntimeError("UI down")

    q.add_listener(broken)
    a = q.submit("a cat", source="twitch.chat", author="alice")
    assert q.approve(a, by="mod").status == "approved"
