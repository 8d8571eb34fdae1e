"""PromptBus: the one current prompt, who set it and why.

Every control (console, dashboard, Twitch command, poll winner, channel points) writes here; texts
from people go through `propose`, which runs the moderator first. The engine thread reads
`current()` once per frame: the state is an immutable object swapped under a lock, so the read is
cheap and never sees a half-updated prompt. Every change is one row of the `prompt_history` table,
which this module owns (the Store itself knows no tables).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from streamer.store import Store

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompt_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    strength REAL,
    changed_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PromptState:
    """What the engine should do now.

    text: the prompt exactly as the model sees it (already moderated and templated).
    enabled: False is the kill switch: the engine runs passthrough until re-enabled.
    strength: an override of the model's configured strength (None = use the config).
    """

    text: str
    version: int = 0
    source: str = "config"
    author: str = "streamer"
    reason: str = ""
    changed_at: float = 0.0
    enabled: bool = True
    strength: float | None = None
    previous_text: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A moderation decision. `text` is what may reach the model (templated) when allowed."""

    allowed: bool
    text: str
    reason: str = ""


class Moderator(Protocol):
    """Implemented by streamer.control.policy.moderation.Moderation."""

    def review(self, text: str, *, source: str, author: str) -> Verdict: ...


Listener = Callable[[PromptState], None]


class PromptBus:
    """Thread-safe holder of the current PromptState with change listeners and a history in the Store."""

    def __init__(
        self,
        initial_text: str = "",
        *,
        store: Store | None = None,
        moderator: Moderator | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._state = PromptState(text=initial_text, changed_at=time.time())
        self._listeners: list[Listener] = []
        self._store = store
        if store is not None:
            store.ensure_schema(_SCHEMA)
        self.moderator = moderator

    def current(self) -> PromptState:
        return self._state

    def add_listener(self, listener: Listener) -> None:
        """`listener(state)` runs on the thread that made the change: keep it short and thread-safe
        (asyncio users should hop with loop.call_soon_threadsafe)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def propose(self, text: str, *, source: str, author: str) -> Verdict:
        """A person's text: moderated first, then set if allowed. Returns the verdict."""
        if self.moderator is None:
            verdict = Verdict(allowed=True, text=text.strip(), reason="no moderator configured")
        else:
            verdict = self.moderator.review(text, source=source, author=author)
        if verdict.allowed:
            self.set(verdict.text, source=source, author=author, reason=verdict.reason or "allowed")
        return verdict

    def set(self, text: str, *, source: str, author: str, reason: str = "") -> PromptState:
        """Set an already-moderated prompt (trusted callers only)."""
        return self._change(
            lambda s: replace(s, text=text, previous_text=s.text), source, author, reason or "set"
        )

    def set_enabled(self, enabled: bool, *, source: str, author: str, reason: str = "") -> PromptState:
        """The kill switch: enabled=False sends the engine to passthrough."""
        return self._change(
            lambda s: replace(s, enabled=enabled), source, author, reason or ("on" if enabled else "off")
        )

    def set_strength(self, strength: float | None, *, source: str, author: str) -> PromptState:
        if strength is not None and not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        return self._change(lambda s: replace(s, strength=strength), source, author, "strength")

    def _change(
        self, update: Callable[[PromptState], PromptState], source: str, author: str, reason: str
    ) -> PromptState:
        with self._lock:
            old = self._state
            new = replace(
                update(old),
                version=old.version + 1,
                source=source,
                author=author,
                reason=reason,
                changed_at=time.time(),
            )
            self._state = new
            listeners = list(self._listeners)
        if self._store is not None:
            _record(self._store, new)
        log.info("prompt v%d by %s/%s (%s): %r", new.version, source, author, reason, new.text)
        for listener in listeners:
            try:
                listener(new)
            except Exception:  # a broken listener must not break the control that set the prompt
                log.exception("prompt listener failed")
        return new


def _record(store: Store, state: PromptState) -> None:
    store.execute(
        "INSERT INTO prompt_history (version, text, source, author, reason, enabled, strength, changed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (state.version, state.text, state.source, state.author, state.reason, int(state.enabled), state.strength,
         state.changed_at),
    )


def prompt_history(store: Store, limit: int = 50) -> list[sqlite3.Row]:
    """The newest `limit` recorded prompt changes, newest first (none yet in a fresh Store)."""
    store.ensure_schema(_SCHEMA)
    return store.query("SELECT * FROM prompt_history ORDER BY id DESC LIMIT ?", (limit,))
