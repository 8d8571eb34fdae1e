"""Moderation: the one pipeline every person's text goes through before it can reach the model.

Order (io.md, "Safety for chat-driven prompts"): hard size cap -> preset lookup / presets-only gate ->
sanitise to plain text -> length cap -> blocklist on the raw text's normalised readings -> server-side
template -> blocklist on the final text -> no bidi embeddings/overrides/isolates (they would make a
page paint something the blocklist never read). Every decision is written to the audit log (who, source,
raw text truncated, verdict, reason, the matched term, time).

The template is the streamer's; the chat part is inserted as sanitised plain text with
`str.replace`, never `str.format`, and braces, newlines, markup and control characters cannot
survive `clean_for_model`, so chat cannot escape the template or smuggle in a second line.
Any internal error rejects the text (fail closed) instead of raising into the caller.
Role gates and per-chatter cooldowns live in the Twitch component; approval queueing and the
one-change-per-interval rate limit live in governor.py.
"""

from __future__ import annotations

import argparse
import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from streamer.config import ConfigError, ModerationSettings
from streamer.control.policy.normalize import (
    BlockedTerm,
    Blocklist,
    clean_for_model,
    display_text,
    fix_surrogates,
    fold,
    has_direction_controls,
)
from streamer.control.policy.runtime_terms import RuntimeTerms, saved_terms, tidy_terms
from streamer.prompts import Verdict

if TYPE_CHECKING:
    from streamer.store import Store

log = logging.getLogger(__name__)

_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS moderation_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    decision TEXT NOT NULL,
    source TEXT NOT NULL,
    author TEXT NOT NULL,
    raw TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS moderation_audit_at ON moderation_audit (at);
"""
_HARD_CAP_FACTOR = 20  # raw input beyond max_length * this is rejected before any normalisation work
NAME_MAX = 25  # characters of a name shown on pages and in chat (Twitch logins are at most 25)


def shown_prompt_limit(m: ModerationSettings) -> int:
    """Characters of a prompt that pages and OBS's text source show: the template around the longest chat
    part. A longer text (a preset, the streamer's own prompt) is cut there with "…"; the model gets all of it."""
    return len(m.template) - len("{prompt}") + m.max_length


def storable(text: Any, limit: int = 0) -> str:
    """A string SQLite and logs accept (no lone surrogates), optionally truncated with an ellipsis."""
    s = fix_surrogates(text if isinstance(text, str) else repr(text))
    return s if not limit or len(s) <= limit else s[: limit - 1] + "…"


class AuditLog:
    """Append-only record of every moderation and control decision (SQLite, or memory without a Store)."""

    def __init__(self, store: Store | None, *, max_chars: int = 300, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._max = max_chars
        self._clock = clock
        self._memory: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._lock = threading.Lock()
        if store is not None:
            store.ensure_schema(_AUDIT_SCHEMA)

    def record(
        self, decision: str, *, source: str, author: str, raw: str = "", reason: str = "", detail: str = "", text: str = ""
    ) -> None:
        row = {
            "at": self._clock(),
            "decision": decision,
            "source": storable(source, 100),
            "author": storable(author, 100),
            "raw": storable(raw, self._max),
            "reason": storable(reason, 500),
            "detail": storable(detail, 500),
            "text": storable(text, 4000),
        }
        try:
            if self._store is not None:
                self._store.execute(
                    "INSERT INTO moderation_audit (at, decision, source, author, raw, reason, detail, text)"
                    " VALUES (:at, :decision, :source, :author, :raw, :reason, :detail, :text)",
                    row,
                )
            else:
                with self._lock:
                    self._memory.append(row)
        except Exception:  # the audit log must never take a control down; say so loudly instead
            log.exception("could not write the moderation audit log")

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        if self._store is not None:
            rows = self._store.query("SELECT * FROM moderation_audit ORDER BY id DESC LIMIT ?", (limit,))
            return [dict(r) for r in rows]
        with self._lock:
            return list(reversed(self._memory))[:limit]


def _preset_key(name: str) -> str:
    return " ".join(clean_for_model(name).casefold().split())


class Moderation:
    """Implements the `Moderator` protocol (`review`) for every text that may reach the model."""

    def __init__(self, settings: ModerationSettings, store: Store | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.audit = AuditLog(store, max_chars=settings.audit_max_chars, clock=clock)
        self._presets = {_preset_key(name): (name, prompt) for name, prompt in settings.presets.items()}
        self._blocklist_listeners: list[Callable[[], object]] = []
        self._lock = threading.Lock()  # one blocklist change at a time (read-modify-write of the terms)
        self._runtime = RuntimeTerms(store, clock=clock)
        self.runtime_terms: tuple[str, ...] = ()  # added while running (the dashboard), on top of the config's
        self.blocklist = self._blocklist(())  # a config file that blocks its own template fails here, at start
        stored = self._runtime.load()
        if stored:
            try:
                self.blocklist = self._blocklist(stored)
                self.runtime_terms = stored
            except ConfigError as e:  # the config changed since they were added: start, and say why they are off
                log.warning("the blocklist terms added while running are not applied: %s", e)

    def _blocklist(self, runtime_terms: tuple[str, ...]) -> Blocklist:
        """The blocklist with these run-time terms, after checking the streamer's own template and presets
        pass it (fail at start, or refuse the change, rather than mid-stream)."""
        s = self.settings
        try:
            blocklist = Blocklist.build((*s.blocklist_extra, *runtime_terms), s.blocklist_allow)
        except ValueError as e:
            where = "blocklist" if runtime_terms else "moderation.blocklist_extra"
            raise ConfigError(f"{where}: {e}") from None
        for where, text in [("moderation.template", s.template.replace("{prompt}", "")),
                            *[(f"moderation.presets.{n}", p) for n, p in s.presets.items()]]:
            hit = blocklist.find(text)
            if hit is not None:
                raise ConfigError(f"'{where}' contains the blocked term {hit.entry!r} ({hit.category});"
                                  " change it or list the term in moderation.blocklist_allow")
        return blocklist

    def set_blocklist(self, terms: Iterable[object], *, by: str = "streamer", add: bool = False) -> tuple[str, ...]:
        """Replace (or with add=True extend) the terms added while running, save them in the Store and
        return them. Raises ConfigError (and keeps the current list) when a term is malformed or the
        template or a preset would be blocked. Listeners run afterwards: the governor re-checks every
        pending proposal against the new list."""
        with self._lock:
            try:
                new = tidy_terms((*self.runtime_terms, *terms) if add else terms)
            except ValueError as e:
                raise ConfigError(f"blocklist: {e}") from None
            blocklist = self._blocklist(new)
            self._runtime.save(new, by)  # saved first: what runs is what a restart will load
            self.blocklist, self.runtime_terms = blocklist, new
        self.audit.record("blocklist", source="moderation", author=by, detail=", ".join(new),
                          reason=f"{len(new)} terms added while running; {self.blocklist.size} entries in all")
        for listener in list(self._blocklist_listeners):
            listener()
        return new

    def add_blocklist_listener(self, listener: Callable[[], object]) -> None:
        """`listener()` after every set_blocklist (on the thread that called it)."""
        self._blocklist_listeners.append(listener)

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def negative_prompt(self) -> str:
        """Fixed negative terms for models that take a negative prompt (never from chat)."""
        return self.settings.negative_prompt

    def presets(self) -> dict[str, str]:
        """The streamer's curated looks, name -> prompt."""
        return dict(self.settings.presets)

    def is_trusted(self, source: str) -> bool:
        """Trusted sources (the streamer's dashboard/console, mod-made polls) skip approval, presets-only
        and the rate limit; their text is still sanitised, capped, blocklisted and templated."""
        return source in self.settings.trusted_sources

    def find_blocked(self, text: str) -> BlockedTerm | None:
        """The blocked term in `text` (any disguise), or None. Never raises on a str."""
        if not isinstance(text, str):
            return None
        return self.blocklist.find(text)

    def public_name(self, name: str) -> str:
        """A person's name as pages and chat replies show it: display_text, clipped to Twitch's 25
        characters; a name that holds a blocked term is shown as "a viewer"."""
        shown = display_text(name, NAME_MAX) if isinstance(name, str) else ""
        return shown if shown and self.blocklist.find(shown) is None else "a viewer"

    def clean(self, text: str) -> str:
        """The chat part as it may reach the model: plain, single-spaced text (see normalize.clean_for_model)."""
        return clean_for_model(text)

    def render(self, chat_part: str) -> str:
        """The final model text: the streamer's template around already-clean chat text."""
        return self.settings.template.replace("{prompt}", chat_part).strip()

    def review(self, text: str, *, source: str, author: str) -> Verdict:
        """Decide on one text; logs the decision. Allowed verdicts carry the final (templated) model text."""
        try:
            verdict, detail = self._decide(text, source)
        except Exception:  # fail closed: a bug here must never let unreviewed text through
            log.exception("moderation failed on a text from %s/%s", storable(source), storable(author))
            verdict, detail = Verdict(False, "", "internal moderation error"), ""
        self.audit.record(
            "allowed" if verdict.allowed else "rejected",
            source=source, author=author, raw=text, reason=verdict.reason, detail=detail, text=verdict.text,
        )
        return verdict

    def _decide(self, text: Any, source: str) -> tuple[Verdict, str]:
        s = self.settings
        if not isinstance(text, str):
            return Verdict(False, "", "not text"), type(text).__name__
        if len(text) > s.max_length * _HARD_CAP_FACTOR:
            return Verdict(False, "", f"too long (at most {s.max_length} characters)"), f"{len(text)} raw characters"
        reason = "allowed"
        preset = self._presets.get(_preset_key(text)) if self._presets else None
        if preset is not None:
            name, chat_text = preset
            reason = f"preset {name}"
        elif s.mode == "presets-only" and not self.is_trusted(source):
            names = ", ".join(n for n, _ in self._presets.values()) or "none configured"
            return Verdict(False, "", f"only presets are allowed here: {names}"), ""
        else:
            chat_text = text
        clean = clean_for_model(chat_text)
        if not clean:
            return Verdict(False, "", "empty prompt"), ""
        if preset is None and len(clean) > s.max_length:
            return Verdict(False, "", f"too long ({len(clean)} characters, at most {s.max_length})"), ""
        final = self.render(clean)
        for candidate in (chat_text, final):
            hit = self.blocklist.find(candidate)
            if hit is not None:
                return Verdict(False, "", f"blocked: {hit.category}"), f"matched {hit.entry!r}"
        if has_direction_controls(chat_text):  # only useful to make a page paint what the blocklist did not read
            return Verdict(False, "", "text-direction control characters are not allowed"), ""
        return Verdict(True, final, reason), ""


def check_prompt_command(args: argparse.Namespace) -> int:
    """`streamer check-prompt "TEXT" [--config FILE]`: print the verdict; exit 0 allowed, 1 rejected."""
    from streamer import config

    settings = config.load(getattr(args, "config", None))
    moderation = Moderation(settings.moderation, None)
    terms = saved_terms(settings.store.path)  # words the daemon's dashboard added, as the daemon reads them
    if terms:
        try:
            moderation.set_blocklist(terms)
            print(f"blocklist:  + {len(terms)} added on the dashboard (saved in {settings.store.path})")
        except ConfigError as e:
            print(f"blocklist:  the words added on the dashboard are left off, as the daemon does: {e}")
    text: str = args.text
    verdict = moderation.review(text, source="cli", author="check-prompt")
    detail = moderation.audit.recent(1)[0]["detail"]
    print(f"verdict:    {'allowed' if verdict.allowed else 'rejected'}")
    print(f"reason:     {verdict.reason}" + (f" ({detail})" if detail else ""))
    print(f"normalised: {' '.join(fold(text).split())!r}")
    print(f"model text: {verdict.text!r}" if verdict.allowed else "model text: (none)")
    if verdict.allowed and settings.moderation.mode == "approval":
        print("note:       mode is 'approval': chat proposals wait for a moderator before they apply")
    return 0 if verdict.allowed else 1


def doctor_checks(settings: Any) -> Iterable[Any]:
    """`streamer doctor` provider: the moderation settings load, and warnings for risky choices."""
    from streamer.doctor import Check

    m: ModerationSettings = settings.moderation
    try:
        moderation = Moderation(m, None)
    except ConfigError as e:
        yield Check("moderation", "FAIL", str(e), "edit the [moderation] section of your config")
        return
    yield Check("moderation", "OK", f"mode {m.mode}, {moderation.blocklist.size} blocklist entries, {len(m.presets)} presets,"
                f" at most {m.max_length} characters, one audience change per {m.min_change_interval_s:g} s")
    if m.mode == "presets-only" and not m.presets:
        yield Check("moderation presets", "WARN", "presets-only mode without presets: chat cannot change the prompt",
                    "add [moderation.presets] entries, or use mode = \"open\" or \"approval\"")
    if m.mode == "open" and m.min_change_interval_s < 5:
        yield Check("moderation rate limit", "WARN", f"chat may change the prompt every {m.min_change_interval_s:g} s",
                    "raise moderation.min_change_interval_s (10 s or more keeps the stream watchable)")
