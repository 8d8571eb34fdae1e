"""PromptBus + Store: every change recorded with who/what/when; moderation on `propose`; WAL store survives reopen."""

import threading

import pytest

from streamer.prompts import PromptBus, Verdict, prompt_history
from streamer.store import Store


class RejectCats:
    def review(self, text, *, source, author):
        if "cat" in text:
            return Verdict(False, "", "no cats")
        return Verdict(True, f"style: {text}", "ok")


def test_changes_are_recorded_and_survive_reopen(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    bus = PromptBus("start", store=store)
    bus.set("neon city", source="console", author="streamer")
    bus.set_enabled(False, source="twitch.chat", author="mod_anna", reason="!aioff")
    store.close()
    rows = prompt_history(Store(db))
    assert [r["text"] for r in rows] == ["neon city", "neon city"]
    assert rows[0]["enabled"] == 0 and rows[0]["author"] == "mod_anna" and rows[0]["reason"] == "!aioff"
    assert rows[1]["source"] == "console" and rows[1]["version"] == 1
    assert Store(db).query("PRAGMA journal_mode")[0][0] == "wal"


def test_propose_runs_the_moderator():
    bus = PromptBus("start", moderator=RejectCats())
    v = bus.propose("a cat", source="dashboard", author="x")
    assert not v.allowed and bus.current().text == "start"
    v = bus.propose("a dog", source="dashboard", author="x")
    assert v.allowed and bus.current().text == "style: a dog" and bus.current().previous_text == "start"


def test_listeners_see_changes_and_a_broken_listener_is_contained():
    bus = PromptBus("a")
    seen = []
    bus.add_listener(lambda s: 1 / 0)
    bus.add_listener(lambda s: seen.append((s.version, s.text)))
    bus.set("b", source="t", author="t")
    assert seen == [(1, "b")]


def test_strength_is_validated():
    bus = PromptBus("a")
    bus.set_strength(0.4, source="t", author="t")
    assert bus.current().strength == 0.4
    with pytest.raises(ValueError):
        bus.set_strength(1.5, source="t", author="t")


def test_concurrent_changes_get_unique_versions(tmp_path):
    bus = PromptBus("a", store=Store(tmp_path / "c.db"))
    threads = [threading.Thread(target=lambda i=i: [bus.set(f"p{i}-{j}", source="t", author="t") for j in range(50)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bus.current().version == 200
    assert len({r["version"] for r in prompt_history(bus._store, 1000)}) == 200
