"""Audience polls: one at a time, native Twitch polls or chat votes, winner moderated onto the PromptBus.

- `PollSpec` (poll_spec.py, where Twitch's limits are defined) checks them before any HTTP call:
  TwitchIO only finds out after the request.
- Backends: chat votes (built in: `vote(chatter_id, n)`, one vote per chatter, the last one
  counts), or a `NativePollBackend` (the Twitch component: Helix create/end; its EventSub
  progress/end events call `on_progress` / `on_end`).
- Winner: the most votes. A tie goes to the tied choice that reached the winning count first
  (ordered by the vote/progress update that last raised its count); if still tied (one native
  update raised both) the lowest-numbered choice wins. No votes at all: no winner, no change.
- The winner is proposed through the governor (source "poll"), so it is moderated and templated
  like any chat text. Every poll, its tallies and chat ballots live in SQLite: a restart mid-poll
  restores a poll that still has time left and closes one whose time ran out (not applied then).
Listeners get a `PollSnapshot` (overlay data: title, choices, votes, seconds left) on every change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from streamer.control.policy.moderation import storable
from streamer.control.policy.poll_spec import PollError, PollSnapshot, PollSpec, PollSpecError, PollStatus, winner_of

if TYPE_CHECKING:
    from streamer.control.policy.governor import PromptGovernor
    from streamer.store import Store

__all__ = ["NativePollBackend", "PollError", "PollManager", "PollSnapshot", "PollSpec", "PollSpecError", "winner_of"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS polls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    choices TEXT NOT NULL,
    seconds INTEGER NOT NULL,
    backend TEXT NOT NULL,
    platform_id TEXT NOT NULL DEFAULT '',
    started_by TEXT NOT NULL,
    started_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    status TEXT NOT NULL,
    votes TEXT NOT NULL,
    reached TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    winner INTEGER,
    winner_text TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '',
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS poll_votes (
    poll_id INTEGER NOT NULL REFERENCES polls(id),
    chatter_id TEXT NOT NULL,
    choice INTEGER NOT NULL,
    PRIMARY KEY (poll_id, chatter_id)
);
"""

class NativePollBackend(Protocol):
    """A platform poll (the Twitch component implements it over Helix).

    create: start the poll, return the platform's poll id; raise to refuse (nothing is started,
    the caller may retry with backend="chat"). end: end it early; cancel=True hides the results
    (Twitch: ARCHIVED), else they stay visible (TERMINATED). Progress and end events come back
    through PollManager.on_progress / on_end with votes in the spec's choice order.
    """

    name: str

    async def create(self, spec: PollSpec) -> str: ...

    async def end(self, poll_id: str, *, cancel: bool) -> None: ...


@dataclass
class _Running:
    id: int
    spec: PollSpec
    backend_name: str
    backend: NativePollBackend | None
    platform_id: str
    started_by: str
    started_at: float
    ends_at: float
    votes: list[int]
    reached: list[int]  # per choice: the update number that last raised its count (tie-break)
    seq: int = 0
    ballots: dict[str, int] = field(default_factory=dict)  # chat: chatter -> 0-based choice


Listener = Callable[[PollSnapshot], None]


class PollManager:
    """One poll at a time; see the module doc. Methods are called on the asyncio loop (votes may come
    from any thread: state changes hold a lock)."""

    def __init__(
        self, governor: PromptGovernor, store: Store, *, clock: Callable[[], float] = time.time,
        native_grace_s: float = 15.0,
    ) -> None:
        self.governor = governor
        self._store = store
        self._clock = clock  # wall time: end times must survive a restart
        self._grace = native_grace_s  # how long past its end a native poll waits for Twitch's end event
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._default_backend: NativePollBackend | None = None
        self._running: _Running | None = None
        self._starting = False
        store.ensure_schema(_SCHEMA)
        self._restore()

    # ------------------------------------------------------------------ listeners, backends, views

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _publish(self, snap: PollSnapshot) -> None:
        for listener in list(self._listeners):
            try:
                listener(snap)
            except Exception:
                log.exception("poll listener failed")

    def set_default_backend(self, backend: NativePollBackend | None) -> None:
        """The backend `start` uses when none is given (the Twitch component sets it when the channel
        can run native polls; None = chat votes)."""
        self._default_backend = backend

    def current(self) -> PollSnapshot | None:
        with self._lock:
            return None if self._running is None else self._snapshot(self._running, "running")

    def results(self, limit: int = 20) -> list[PollSnapshot]:
        """Finished polls, newest first."""
        rows = self._store.query("SELECT * FROM polls WHERE status != 'running' ORDER BY id DESC LIMIT ?", (limit,))
        return [self._row_snapshot(r) for r in rows]

    def _snapshot(self, r: _Running, status: PollStatus, winner: int | None = None, result: str = "") -> PollSnapshot:
        return PollSnapshot(
            r.id, r.spec.title, r.spec.choices, tuple(r.votes), r.spec.seconds, r.backend_name, status,
            r.started_by, r.started_at, r.ends_at, max(0.0, r.ends_at - self._clock()) if status == "running" else 0.0,
            winner, "" if winner is None else r.spec.choices[winner], result, r.platform_id,
        )

    def _row_snapshot(self, row: Any) -> PollSnapshot:
        return PollSnapshot(
            row["id"], row["title"], tuple(json.loads(row["choices"])), tuple(json.loads(row["votes"])), row["seconds"],
            row["backend"], row["status"], row["started_by"], row["started_at"], row["ends_at"], 0.0, row["winner"],
            row["winner_text"], row["result"], row["platform_id"],
        )

    # ------------------------------------------------------------------ starting

    async def start(
        self, spec: PollSpec | Mapping[str, Any], *, by: str,
        backend: NativePollBackend | Literal["chat"] | None = None,
    ) -> PollSnapshot:
        """Validate, check the texts against the blocklist, create the poll (native or chat) and return it.
        Raises PollSpecError (bad spec / blocked text) or PollError (a poll is already running)."""
        if not isinstance(spec, PollSpec):
            spec = PollSpec.from_mapping(spec)
        for label, text in [("the title", spec.title), *[(f"choice {i + 1}", c) for i, c in enumerate(spec.choices)]]:
            hit = self.governor.moderation.find_blocked(text)
            if hit is not None:
                self.governor.moderation.audit.record("poll-rejected", source="poll", author=by, raw=text,
                                                      reason=f"{label}: {hit.category}", detail=f"matched {hit.entry!r}")
                raise PollSpecError(f"{label} is blocked: {hit.category}")
        native = self._default_backend if backend is None else (None if backend == "chat" else backend)
        with self._lock:
            if self._running is not None or self._starting:
                raise PollError("a poll is already running: end it first")
            self._starting = True
        try:
            platform_id = "" if native is None else str(await native.create(spec))
            now = self._clock()
            r = _Running(0, spec, "chat" if native is None else native.name, native, platform_id, storable(by, 100),
                         now, now + spec.seconds, [0] * len(spec.choices), [0] * len(spec.choices))
            r.id = self._store.execute(
                "INSERT INTO polls (title, choices, seconds, backend, platform_id, started_by, started_at, ends_at,"
                " status, votes, reached) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (spec.title, json.dumps(spec.choices), spec.seconds, r.backend_name, platform_id, r.started_by,
                 r.started_at, r.ends_at, json.dumps(r.votes), json.dumps(r.reached)),
            )
            with self._lock:
                self._running = r
                snap = self._snapshot(r, "running")
        finally:
            self._starting = False
        self.governor.moderation.audit.record("poll-start", source="poll", author=by, raw=spec.title,
                                              reason=f"poll #{r.id} ({r.backend_name}, {spec.seconds} s)",
                                              text=" | ".join(spec.choices))
        self._publish(snap)
        return snap

    # ------------------------------------------------------------------ votes and progress

    def vote(self, chatter_id: str, choice_number: int | str) -> PollSnapshot:
        """A chat vote (1-based choice number); a chatter's later vote replaces their earlier one.
        Raises PollError with a message fit for a chat reply when there is nothing to vote on."""
        with self._lock:
            r = self._running
            if r is None:
                raise PollError("no poll is running")
            if r.backend is not None or r.backend_name != "chat":
                raise PollError("vote in Twitch's poll above the chat")
            n = len(r.spec.choices)
            try:
                choice = int(str(choice_number).strip().lstrip("#")) - 1
            except ValueError:
                raise PollError(f"vote with a number from 1 to {n}") from None
            if not 0 <= choice < n:
                raise PollError(f"vote with a number from 1 to {n}")
            chatter = storable(chatter_id, 100)
            old = r.ballots.get(chatter)
            if old == choice:
                return self._snapshot(r, "running")
            if old is not None:
                r.votes[old] -= 1
            r.ballots[chatter] = choice
            r.votes[choice] += 1
            r.seq += 1
            r.reached[choice] = r.seq
            self._store.execute(
                "INSERT INTO poll_votes (poll_id, chatter_id, choice) VALUES (?, ?, ?)"
                " ON CONFLICT (poll_id, chatter_id) DO UPDATE SET choice = excluded.choice",
                (r.id, chatter, choice),
            )
            self._save_tallies(r)
            snap = self._snapshot(r, "running")
        self._publish(snap)
        return snap

    def on_progress(self, votes: Sequence[int], *, poll_id: str | None = None) -> PollSnapshot | None:
        """Native progress event: the current totals in choice order. Ignored (None) when it is not
        about the running poll."""
        with self._lock:
            r = self._match(poll_id)
            if r is None:
                return None
            self._take_totals(r, votes)
            snap = self._snapshot(r, "running")
        self._publish(snap)
        return snap

    def on_end(self, votes: Sequence[int] | None = None, *, poll_id: str | None = None) -> PollSnapshot | None:
        """Native end event: final totals (None: keep the last progress); the winner is applied."""
        with self._lock:
            r = self._match(poll_id)
            if r is None:
                return None
            if votes is not None:
                self._take_totals(r, votes)
        return self._finish(r, "ended", by="twitch")

    def _match(self, poll_id: str | None) -> _Running | None:
        r = self._running
        if r is None or r.backend_name == "chat" or (poll_id is not None and poll_id != r.platform_id):
            return None
        return r

    def _take_totals(self, r: _Running, votes: Sequence[int]) -> None:
        if len(votes) != len(r.votes) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in votes):
            raise PollError(f"poll #{r.id}: expected {len(r.votes)} non-negative vote counts, got {list(votes)!r}")
        r.seq += 1
        for i, v in enumerate(votes):
            if v > r.votes[i]:
                r.reached[i] = r.seq
            r.votes[i] = v
        self._save_tallies(r)

    def _save_tallies(self, r: _Running) -> None:
        self._store.execute("UPDATE polls SET votes = ?, reached = ?, seq = ? WHERE id = ?",
                            (json.dumps(r.votes), json.dumps(r.reached), r.seq, r.id))

    # ------------------------------------------------------------------ ending

    async def end(self, *, by: str) -> PollSnapshot:
        """End the running poll now and apply its winner."""
        return await self._stop(by, cancel=False)

    async def cancel(self, *, by: str) -> PollSnapshot:
        """Stop the running poll without a winner."""
        return await self._stop(by, cancel=True)

    async def _stop(self, by: str, *, cancel: bool) -> PollSnapshot:
        with self._lock:
            r = self._running
            if r is None:
                raise PollError("no poll is running")
        if r.backend is not None:
            try:
                await r.backend.end(r.platform_id, cancel=cancel)
            except Exception:  # Twitch ends it by itself at its end time; our side closes regardless
                log.exception("could not end poll #%d on %s", r.id, r.backend_name)
        snap = self._finish(r, "cancelled" if cancel else "ended", by=by)
        if snap is None:
            raise PollError("the poll already ended")
        return snap

    def _finish(self, r: _Running, status: PollStatus, *, by: str, apply: bool = True, note: str = "") -> PollSnapshot | None:
        with self._lock:
            if self._running is not r:
                return None  # ended already (a late end event after an early end)
            self._running = None
        winner = winner_of(r.votes, r.reached) if status == "ended" else None
        if status == "cancelled":
            result = f"cancelled by {by}"
        elif winner is None:
            result = "no votes"
        elif not apply:
            result = note or "not applied"
        else:
            p = self.governor.propose(r.spec.choices[winner], source="poll", author=f"poll #{r.id}",
                                      meta={"poll_id": r.id, "title": r.spec.title})
            result = p.status if p.status != "rejected" else f"rejected: {p.reason}"
        snap = self._snapshot(r, status, winner, result)
        self._store.execute(
            "UPDATE polls SET status = ?, votes = ?, reached = ?, winner = ?, winner_text = ?, result = ?, ended_at = ?"
            " WHERE id = ?",
            (status, json.dumps(r.votes), json.dumps(r.reached), winner, snap.winner_text, result, self._clock(), r.id),
        )
        self.governor.moderation.audit.record("poll-" + status, source="poll", author=by, raw=r.spec.title,
                                              reason=result, text=snap.winner_text)
        self._publish(snap)
        return snap

    def tick(self, now: float | None = None) -> PollSnapshot | None:
        """Close a chat poll whose time is up (or a native one whose end event never came)."""
        now = self._clock() if now is None else now
        r = self._running
        if r is None:
            return None
        if r.backend_name == "chat" and now >= r.ends_at:
            return self._finish(r, "ended", by="timer")
        if r.backend_name != "chat" and now >= r.ends_at + self._grace:
            log.warning("poll #%d: no end event from %s; closing with the last tallies", r.id, r.backend_name)
            return self._finish(r, "ended", by="timer")
        return None

    async def run(self, poll_s: float = 0.25) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("poll tick failed")
            await asyncio.sleep(poll_s)

    # ------------------------------------------------------------------ restart

    def _restore(self) -> None:
        rows = self._store.query("SELECT * FROM polls WHERE status = 'running' ORDER BY id")
        now = self._clock()
        for i, row in enumerate(rows):
            spec = PollSpec(row["title"], tuple(json.loads(row["choices"])), row["seconds"])
            r = _Running(row["id"], spec, row["backend"], None, row["platform_id"], row["started_by"], row["started_at"],
                         row["ends_at"], list(json.loads(row["votes"])), list(json.loads(row["reached"])), row["seq"])
            if r.backend_name == "chat":
                r.ballots = {v["chatter_id"]: v["choice"] for v in
                             self._store.query("SELECT chatter_id, choice FROM poll_votes WHERE poll_id = ?", (r.id,))}
            self._running = r
            if i < len(rows) - 1 or now >= r.ends_at:
                self._finish(r, "ended", by="restart", apply=False, note="ended while the daemon was stopped; not applied")
            else:
                log.info("poll #%d restored: %.0f s left, %d votes", r.id, r.ends_at - now, sum(r.votes))
