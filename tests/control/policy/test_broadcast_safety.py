"""Broadcast safety: what a page, OBS's text source or a chat reply shows is moderated, cleaned text.

Bidi controls that would make a browser paint a blocked word are read as painted and refused; shown
text has no control or format characters and is clipped; pending approvals are moderated again at
approval, at start and when the blocklist changes, and one refused then is denied, never approved.
"""

import unicodedata

import pytest

from streamer.config import ConfigError, ModerationSettings
from streamer.control.obs.controller import prompt_display
from streamer.control.policy.approvals import REFUSED_BY, ApprovalError, Approvals
from streamer.control.policy.governor import PromptGovernor
from streamer.control.policy.moderation import Moderation
from streamer.control.policy.normalize import Blocklist, clean_for_model, display_text
from streamer.prompts import PromptBus
from streamer.store import Store

BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
FORMAT = ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff", "\u00ad", "\U000e0041", *BIDI]


def no_hidden_characters(text: str) -> bool:
    return not any(unicodedata.category(ch)[0] == "C" for ch in text)


def make(tmp_path, db="g.db", **kw):
    settings = ModerationSettings(**{"min_change_interval_s": 0.0, "mode": "approval", **kw})
    store = Store(tmp_path / db)
    bus = PromptBus("start", store=store)
    moderation = Moderation(settings, store)
    approvals = Approvals(store)
    gov = PromptGovernor(bus, moderation, approvals, settings)
    heard = []
    gov.add_listener(heard.append)
    return gov, bus, heard, store


@pytest.mark.parametrize("text", ["\u202eedun", "a \u202eedun figure", "\u202eeduN\u202c at dusk", "\u2067\u202eeduN",
                                  "\u202e\u200bed\u200bun", "sky \u202edekan\u202c", "\u202e43elur"])
def test_the_blocklist_reads_what_a_browser_paints(text):
    blocklist = Blocklist.build()
    hit = blocklist.find(text)
    assert hit is not None and hit.category == "sexual content", text


def test_direction_controls_are_refused_and_other_format_characters_cleaned(tmp_path):
    gov, bus, heard, store = make(tmp_path, mode="open")
    for ch in BIDI:  # no blocked word anywhere, still refused: they only serve to reorder a page
        p = gov.propose(f"a cat{ch} on a boat", source="twitch", author="a")
        assert p.status == "rejected" and p.reason == "text-direction control characters are not allowed", ch
    p = gov.propose("\u202eedun", source="twitch", author="a")
    assert p.status == "rejected" and p.reason == "blocked: sexual content"
    p = gov.propose("a ca\u200bt i\u00adn a\u2060 ha\ufefft\u200f", source="twitch", author="a")
    assert p.status == "applied" and bus.current().text == "a cat in a hat"
    assert prompt_display(bus.current(), 200) == "a cat in a hat"  # what OBS's text source shows


def test_display_text_drops_hidden_characters_clips_and_keeps_markup_literal():
    assert display_text("".join(FORMAT) + "a\u202ecat\x00\x1b[31m\n\tb\u3164", 100) == "acat[31m b"
    assert display_text("<b>bold</b>", 100) == "<b>bold</b>"  # pages use textContent: shown literally
    zalgo = display_text("Z" + "\u0336" * 40 + "a", 100)
    assert zalgo == "Z\u0336\u0336a"  # no mark tower over the box
    assert display_text("x" * 30, 10) == "x" * 9 + "…" and len(display_text("word " * 50, 20)) <= 20
    assert display_text("a\ud800b", 10) == "ab"  # a lone surrogate (unencodable) is dropped like U+FFFD
    for text in ["\u202eedun", "a\u200b\u200bb", "\U000e0041\U000e0042"]:
        assert no_hidden_characters(display_text(text, 50))
    assert no_hidden_characters(clean_for_model("".join(FORMAT) + "a cat"))


def test_public_names_are_cleaned_clipped_and_blocked_names_hidden(tmp_path):
    moderation = Moderation(ModerationSettings(), None)
    assert moderation.public_name("cool_guy_99") == "cool_guy_99"
    assert moderation.public_name("<script>x</script>") == "<script>x</script>"
    assert moderation.public_name("\u202eedun_lover") == "edun_lover"  # the override is gone: painted as read
    assert moderation.public_name("nude_lover") == "a viewer"
    assert moderation.public_name("al\u200bice\u2066") == "alice"
    assert moderation.public_name("n_u_d_e") == "a viewer" and moderation.public_name("") == "a viewer"
    assert len(moderation.public_name("ab" * 150)) == 25


def test_an_approval_moderation_refuses_is_denied_and_reported_so(tmp_path):
    gov, bus, heard, store = make(tmp_path)
    events = []
    gov.approvals.add_listener(lambda event, item: events.append((event, item.status)))
    item_id = gov.approvals.submit("a \u202eedun figure", source="twitch", author="sneaky", meta={"redemption_id": "r1"})
    item = gov.approvals.approve(item_id, by="mod_anna")
    assert item.status == "denied" and item.decided_by == REFUSED_BY and item.reason == "blocked: sexual content"
    assert events[-1] == ("denied", "denied")  # channel points listeners refund on denied
    assert heard[-1].status == "rejected" and heard[-1].id == item_id and heard[-1].meta == {"redemption_id": "r1"}
    assert bus.current().version == 0 and gov.approvals.pending() == []
    with pytest.raises(ApprovalError, match="already denied by moderation"):
        gov.approvals.approve(item_id, by="mod_ben")
    # what passes is applied as the text moderation produced at approval time, not what was stored
    ok = gov.approvals.submit("a ca\u200bt", source="twitch", author="alice", model_text="stale text")
    item = gov.approvals.approve(ok, by="mod_anna")
    assert item.status == "approved" and item.model_text == "a cat" and bus.current().text == "a cat"


def test_pending_items_are_checked_again_at_start(tmp_path):
    gov, bus, heard, store = make(tmp_path, template="anime, {prompt}")
    keep = gov.propose("a castle", source="twitch", author="alice").id
    doomed = gov.propose("a cactus", source="twitch", author="bob").id
    around = gov.approvals.submit("n u d e", source="twitch", author="carol")  # stored without review
    assert gov.approvals.get(around).status == "pending"  # (this governor was built before it came)
    store.close()

    # restart with a blocklist that now holds "cactus" and another template
    gov2, bus2, heard2, store2 = make(tmp_path, template="oil painting, {prompt}", blocklist_extra=("cactus",))
    assert [i.id for i in gov2.approvals.pending()] == [keep]
    assert gov2.approvals.get(keep).model_text == "oil painting, a castle"
    for refused, reason in [(doomed, "blocked: blocked by the streamer"), (around, "blocked: sexual content")]:
        item = gov2.approvals.get(refused)
        assert item.status == "denied" and item.decided_by == REFUSED_BY and item.reason == reason
    store2.close()


def test_pending_items_are_checked_again_when_the_blocklist_changes(tmp_path):
    gov, bus, heard, store = make(tmp_path)
    a = gov.propose("a red balloon", source="twitch", author="alice").id
    b = gov.propose("a blue kite", source="twitch", author="bob").id
    gov.moderation.set_blocklist(["balloon"])
    assert [i.id for i in gov.approvals.pending()] == [b]
    assert gov.approvals.get(a).status == "denied" and heard[-1].status == "rejected" and heard[-1].id == a
    assert gov.propose("balloons", source="twitch", author="c").status == "rejected"
    with pytest.raises(ConfigError, match="needs at least two Latin letters"):
        gov.moderation.set_blocklist(["x"])  # malformed: refused, the current list stays
    assert gov.propose("balloon", source="twitch", author="c").status == "rejected"
    strict = Moderation(ModerationSettings(template="a kite, {prompt}"), None)
    with pytest.raises(ConfigError, match="moderation.template"):
        strict.set_blocklist(["kite"])  # the streamer's own template would be blocked
    gov.moderation.set_blocklist([])
    assert gov.approvals.approve(b, by="mod").status == "approved" and bus.current().text == "a blue kite"


def test_obs_text_shows_only_approved_moderated_text(tmp_path):
    gov, bus, heard, store = make(tmp_path, template="{prompt}, film grain")
    p = gov.propose("a ｓｔｏｎｅ\u200b bridge <b>", source="twitch", author="alice")
    assert p.status == "queued" and prompt_display(bus.current(), 200) == "start"  # nothing while it waits
    gov.approvals.approve(p.id, by="mod")
    shown = prompt_display(bus.current(), 200)
    assert shown == "a stone bridge b, film grain" and no_hidden_characters(shown)  # markup cannot survive


def test_request_numbers_beyond_sqlite_integers_are_no_request(tmp_path):
    approvals = Approvals(Store(tmp_path / "q.db"))
    for bad in ("9" * 30, str(2**63), "0", "-1"):
        with pytest.raises(ApprovalError, match="not a request number"):
            approvals.approve(bad, by="mod")
        assert approvals.get(bad) is None
