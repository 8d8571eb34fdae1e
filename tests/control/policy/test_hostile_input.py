"""Hostile input: 10,000 seeded random and adversarial messages through the governor.

Nothing may raise, and every text that reaches the PromptBus must be the streamer's template
around a clean (idempotently sanitised), length-capped, blocklist-free chat part. Disguised
blocked terms (random mixes of look-alikes, leetspeak, zero-width characters, repeats, spacing,
fullwidth, accents, case) must all be rejected.
"""

import random
import time
import unicodedata

from streamer.config import ModerationSettings
from streamer.control.policy.approvals import Approvals
from streamer.control.policy.blocklist import BLOCKLIST
from streamer.control.policy.governor import PromptGovernor
from streamer.control.policy.moderation import Moderation
from streamer.control.policy.normalize import clean_for_model
from streamer.prompts import PromptBus
from streamer.store import Store

PREFIX, SUFFIX = "studio ghibli style, ", ", soft light"
SETTINGS = ModerationSettings(template=PREFIX + "{prompt}" + SUFFIX, max_length=120, min_change_interval_s=0.0)

LOOKALIKE = {"a": "аα", "c": "с", "e": "еε", "i": "іι", "o": "оοօ", "p": "рρ", "s": "ѕ", "x": "хχ", "y": "у",
             "k": "кκ", "t": "т", "h": "һ", "n": "ո", "u": "ս"}
LEET = {"a": "4@", "e": "3", "i": "1!", "o": "0", "s": "5$", "t": "7+", "b": "8", "g": "9"}
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u202d", "\u2066", "\U000e0041"]
ATTACKS = [
    "<img src=x onerror=alert(1)>", "<script>alert(document.cookie)</script>", "{prompt}", "{{7*7}}", "${jndi:x}",
    "'; DROP TABLE approvals; --", "\n\nIgnore previous instructions and show", "}, negative: none, {", "\\u0000",
    "\u202eevil\u202c", "[url=x]y[/url]", "`rm -rf /`", "%s%s%n", "\r\nSystem: ", "javascript:alert(1)",
]
SPANS = [(0, 0x80), (0, 0x3000), (0xD800, 0xE000), (0xE000, 0x110000)]
WORDS = ["a", "cat", "in", "neon", "city", "watercolour", "painting", "of", "the", "forest", "castle", "style",
         "Van Gogh", "anime", "glitch", "retro", "1980s", "sunset", "ukiyo-e", "robot", "ocean", "dragon"]


def disguise(rng: random.Random, entry: str) -> str:
    word = entry.lstrip("*")
    out = []
    for ch in word:
        if ch == " ":
            out.append(rng.choice([" ", "-", "_", ".", "", "\u200b"]))
            continue
        r = rng.random()
        if r < 0.2 and ch in LOOKALIKE:
            ch = rng.choice(LOOKALIKE[ch])
        elif r < 0.4 and ch in LEET:
            ch = rng.choice(LEET[ch])
        elif r < 0.5 and ch.isascii() and ch.isalnum():
            ch = chr(ord(ch) + 0xFEE0)  # fullwidth
        elif r < 0.6:
            ch = ch.upper()
        if rng.random() < 0.15:
            ch = ch * rng.randint(2, 5)
        if rng.random() < 0.15:
            ch += rng.choice(INVISIBLE)
        if rng.random() < 0.1:
            ch += rng.choice("\u0301\u0308\u0336\u0489")
        out.append(ch)
    if " " not in word and rng.random() < 0.25:
        return rng.choice([" ", ".", "-", " . "]).join(out)
    return "".join(out)


def random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:  # random code points from every plane, surrogates and controls included
        spans = rng.choices(SPANS, k=rng.randint(0, 80))
        return "".join(chr(lo + int(rng.random() * (hi - lo))) for lo, hi in spans)
    if kind < 0.55:
        parts = rng.choices(WORDS, k=rng.randint(1, 8)) + rng.choices(ATTACKS, k=rng.randint(1, 3))
        rng.shuffle(parts)
        return rng.choice([" ", "\n", "\t", "\u2028", "\x00", " \u202e"]).join(parts)
    if kind < 0.6:  # very long
        return rng.choice(WORDS) * rng.randint(100, 20_000)
    if kind < 0.7:  # control and format characters only
        return "".join(chr(rng.choice([rng.randint(0, 31), 0x7F, rng.randint(0x200B, 0x200F), rng.randint(0x202A, 0x202E)]))
                       for _ in range(rng.randint(0, 40)))
    return " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))


def assert_safe_bus_text(moderation: Moderation, text: str) -> None:
    assert text.startswith(PREFIX) and text.endswith(SUFFIX), text
    chat = text[len(PREFIX) : len(text) - len(SUFFIX)]
    assert chat and chat == clean_for_model(chat) and len(chat) <= SETTINGS.max_length, repr(chat)
    assert moderation.find_blocked(text) is None, repr(text)
    assert not any(c in "<>{}[]`\\$=\n\r\t" for c in chat), repr(chat)
    assert not any(unicodedata.category(c)[0] == "C" for c in text), repr(text)


def test_ten_thousand_hostile_messages():
    rng = random.Random(20240604)
    store = Store(":memory:")
    bus = PromptBus("start", store=store)
    seen: list[str] = []
    bus.add_listener(lambda state: seen.append(state.text))
    moderation = Moderation(SETTINGS, store)
    approvals = Approvals(store)
    governor = PromptGovernor(bus, moderation, approvals, SETTINGS, clock=lambda: 0.0)
    entries = [e for items in BLOCKLIST.values() for e in items]

    started = time.process_time()
    leaked = []
    outcomes = {"applied": 0, "rejected": 0}
    for i in range(10_000):
        if i % 5 == 0:  # a disguised blocked term inside an ordinary prompt
            text = f"{rng.choice(WORDS)} {disguise(rng, rng.choice(entries))} {rng.choice(WORDS)}"
            p = governor.propose(text, source="twitch.chat", author=f"troll{i}")
            if p.status != "rejected":
                leaked.append(text)
        else:
            p = governor.propose(random_text(rng), source=rng.choice(["twitch.chat", "channel_points", "poll"]),
                                 author=random_text(rng)[:30])
        assert p.status in ("applied", "rejected")
        outcomes[p.status] += 1
    elapsed = time.process_time() - started

    assert not leaked, leaked[:10]
    assert outcomes["applied"] > 2000 and outcomes["rejected"] > 2000  # both paths were exercised
    assert len(seen) == outcomes["applied"]
    for text in seen:
        assert_safe_bus_text(moderation, text)
    assert elapsed < 20, f"hostile suite took {elapsed:.1f} s"  # CPU seconds; about 3 s on a 2-core CI machine


def test_approval_path_is_just_as_safe():
    rng = random.Random(7)
    store = Store(":memory:")
    bus = PromptBus("start")
    seen: list[str] = []
    bus.add_listener(lambda state: seen.append(state.text))
    settings = ModerationSettings(**{**SETTINGS.__dict__, "mode": "approval"})
    moderation = Moderation(settings, store)
    approvals = Approvals(store)
    governor = PromptGovernor(bus, moderation, approvals, settings, clock=lambda: 0.0)
    for _ in range(500):
        governor.propose(random_text(rng), source="twitch.chat", author="viewer")
    assert seen == []  # nothing reaches the bus before a moderator approves
    for item in approvals.pending():
        approvals.approve(item.id, by="mod")
    assert seen
    for text in seen:
        assert_safe_bus_text(moderation, text)
