"""Blocklist terms added while running: kept in the Store across a restart, bounded, refused when the
streamer's own template would be blocked, and every change re-checks what waits (the approval queue
and the proposal waiting for the rate limit) so nothing the new list holds is ever applied."""

import argparse
import json

import pytest

from streamer.config import ConfigError, ModerationSettings
from streamer.control.policy.approvals import REFUSED_BY, Approvals
from streamer.control.policy.governor import PromptGovernor
from streamer.control.policy.moderation import Moderation, check_prompt_command
from streamer.control.policy.runtime_terms import MAX_TERM_CHARS, MAX_TERMS, tidy_terms
from streamer.prompts import PromptBus
from streamer.store import Store


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path, **kw):
    settings = ModerationSettings(**{"min_change_interval_s": 10.0, **kw})
    store = Store(tmp_path / "t.db")
    bus = PromptBus("start", store=store)
    clock = Clock()
    gov = PromptGovernor(bus, Moderation(settings, store), Approvals(store), settings, clock=clock)
    heard = []
    gov.add_listener(heard.append)
    return gov, bus, clock, heard, store


def test_terms_are_tidied_and_bounded():
    assert tidy_terms(["  red   balloon ", "Red Balloon", "", "kite", "KITE", "*spider"]) == ("red balloon", "kite", "*spider")
    for bad, match in [([1], "must be text"), (["x" * (MAX_TERM_CHARS + 1)], "at most"),
                       ([f"term{i}" for i in range(MAX_TERMS + 1)], "at most 500")]:
        with pytest.raises(ValueError, match=match):
            tidy_terms(bad)


def test_terms_survive_a_restart_on_top_of_the_config(tmp_path):
    gov, bus, clock, heard, store = make(tmp_path, blocklist_extra=("cactus",))
    assert gov.moderation.set_blocklist(["balloon"], by="dashboard") == ("balloon",)
    assert gov.moderation.set_blocklist(["Balloon", "kite"], by="dashboard", add=True) == ("balloon", "kite")
    row = gov.moderation.audit.recent(1)[0]
    assert row["decision"] == "blocklist" and row["author"] == "dashboard" and row["detail"] == "balloon, kite"
    store.close()

    gov2, *_, store2 = make(tmp_path, blocklist_extra=("cactus",))
    assert gov2.moderation.runtime_terms == ("balloon", "kite")
    for text in ("a red balloon", "kites", "a cactus"):  # run-time terms and the config's both hold
        assert gov2.propose(text, source="twitch", author="a").status == "rejected", text
    gov2.moderation.set_blocklist([])
    assert gov2.propose("a red balloon", source="twitch", author="a").status == "applied"
    assert gov2.propose("a cactus", source="twitch", author="a").status == "rejected"  # the config's stays
    store2.close()


def test_a_change_that_would_block_the_template_is_refused_and_the_list_kept(tmp_path):
    gov, bus, clock, heard, store = make(tmp_path, template="a kite, {prompt}")
    gov.moderation.set_blocklist(["balloon"])
    for bad, match in [(["kite"], "moderation.template"), (["x"], "needs at least two"), ([None], "must be text")]:
        with pytest.raises(ConfigError, match=match):
            gov.moderation.set_blocklist(bad, add=True)
        assert gov.moderation.runtime_terms == ("balloon",)
        assert gov.propose("balloon", source="twitch", author="a").status == "rejected"
    store.close()


def test_stored_terms_that_now_block_the_template_are_left_off_at_start(tmp_path, caplog):
    gov, *_, store = make(tmp_path)
    gov.moderation.set_blocklist(["kite"])
    store.close()
    gov2, *_, store2 = make(tmp_path, template="a kite, {prompt}")  # the config changed meanwhile
    assert gov2.moderation.runtime_terms == () and "not applied" in caplog.text
    assert gov2.propose("a boat", source="twitch", author="a").status == "applied"
    store2.close()


def test_an_unreadable_stored_row_counts_as_no_terms(tmp_path):
    gov, *_, store = make(tmp_path)
    gov.moderation.set_blocklist(["kite"])
    store.execute("UPDATE blocklist_runtime SET terms = ?", (json.dumps({"not": ["a list"]}) + "garbage",))
    assert Moderation(ModerationSettings(), store).runtime_terms == ()
    store.close()


def test_a_change_rejects_the_proposal_waiting_for_the_rate_limit(tmp_path):
    gov, bus, clock, heard, store = make(tmp_path)
    assert gov.propose("a cat", source="twitch", author="a").status == "applied"
    waiting = gov.propose("a red balloon", source="twitch", author="b", meta={"redemption_id": "r9"})
    assert waiting.status == "scheduled"
    gov.moderation.set_blocklist(["balloon"])
    assert gov.scheduled() is None
    assert heard[-1].status == "rejected" and heard[-1].reason == "blocked: blocked by the streamer"
    assert heard[-1].meta == {"redemption_id": "r9"}  # channel points listeners refund it
    clock.t += 60
    assert gov.tick() is None and bus.current().text == "a cat"  # never applied
    # one the new list does not hold keeps its turn
    assert gov.propose("a kite", source="twitch", author="c").status == "applied"
    assert gov.propose("a castle", source="twitch", author="d").status == "scheduled"
    gov.moderation.set_blocklist(["balloon", "dragon"])
    assert gov.scheduled() is not None and gov.scheduled().text == "a castle"
    store.close()


def test_a_change_denies_queued_items_it_now_blocks_and_keeps_the_others(tmp_path):
    gov, bus, clock, heard, store = make(tmp_path, mode="approval", min_change_interval_s=0.0)
    doomed = gov.propose("a b a l l 0 0 n over the sea", source="twitch", author="alice").id
    kept = gov.propose("a boat", source="twitch", author="bob").id
    gov.moderation.set_blocklist(["balloon"], by="dashboard")
    item = gov.approvals.get(doomed)
    assert item.status == "denied" and item.decided_by == REFUSED_BY and "blocked" in item.reason
    assert [i.id for i in gov.approvals.pending()] == [kept]
    assert gov.approvals.approve(kept, by="mod").status == "approved" and bus.current().text == "a boat"
    store.close()


def test_check_prompt_knows_the_words_added_on_the_dashboard(tmp_path, capsys):
    db = tmp_path / "daemon.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{db}"\n')
    args = argparse.Namespace(text="a red balloon", config=str(cfg))
    assert check_prompt_command(args) == 0 and not db.exists()  # no store yet: nothing created
    store = Store(db)
    Moderation(ModerationSettings(), store).set_blocklist(["balloon"], by="dashboard")
    store.close()
    capsys.readouterr()
    assert check_prompt_command(args) == 1
    out = capsys.readouterr().out
    assert "+ 1 added on the dashboard" in out and "blocked by the streamer" in out
    db.write_bytes(b"not a database at all" * 100)
    assert check_prompt_command(args) == 0
