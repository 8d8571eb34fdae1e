"""Approval queue: audience proposals that wait for a moderator (or the streamer) to decide.

Persisted in the Store's SQLite file, so a restart loses nothing that was accepted or is waiting:
pending items come back pending, decided items keep who decided and why. A vetter (the governor's
moderation) checks an item again when a moderator approves it and whenever `recheck()` is called
(at start, after a blocklist change): an item it refuses is denied by REFUSED_BY with its reason,
never approved, so whoever reports the decision reports the refusal. Channel-points
redemptions ride along in `meta` (e.g. the redemption id), so whoever refunds on deny/expiry finds
them on the returned item. Listeners hear every change (`submitted`, `approved`, `denied`,
`expired`) on the thread that made it; the governor listens for `approved` to apply the prompt.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streamer.control.policy.moderation import storable
from streamer.prompts import Verdict

if TYPE_CHECKING:
    from streamer.store import Store

log = logging.getLogger(__name__)

Status = Literal["pending", "approved", "denied", "expired"]
Event = Literal["submitted", "approved", "denied", "expired"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    source TEXT NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    model_text TEXT NOT NULL,
    meta TEXT NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at REAL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, id);
"""


class ApprovalError(LookupError):
    """No such item, or it was already decided; the message says which (fit for a chat reply)."""


@dataclass(frozen=True)
class ApprovalItem:
    """One proposal in the queue. `text` is what the person wrote, `model_text` the moderated, templated
    text it would become (filled by the governor; re-checked when approved)."""

    id: int
    created_at: float
    source: str
    author: str
    text: str
    model_text: str
    meta: dict[str, Any] = field(default_factory=dict)
    status: Status = "pending"
    decided_by: str = ""
    decided_at: float | None = None
    reason: str = ""


Listener = Callable[[str, ApprovalItem], None]
Vetter = Callable[[ApprovalItem], Verdict]  # allowed -> the fresh model text; refused -> the reason

REFUSED_BY = "moderation"  # decided_by of an item the vetter refused (at approval, start or a blocklist change)
_ID_MAX = 2**63 - 1  # SQLite's INTEGER: a larger number cannot name a row (and would not bind)


def _item(row: Any) -> ApprovalItem:
    try:
        meta = json.loads(row["meta"])
    except ValueError:
        meta = {}
    return ApprovalItem(
        id=row["id"], created_at=row["created_at"], source=row["source"], author=row["author"], text=row["text"],
        model_text=row["model_text"], meta=meta if isinstance(meta, dict) else {}, status=row["status"],
        decided_by=row["decided_by"], decided_at=row["decided_at"], reason=row["reason"],
    )


def _parse_id(item_id: int | str) -> int:
    try:
        if isinstance(item_id, bool):
            raise ValueError
        value = int(str(item_id).strip().lstrip("#"))
        if not 0 < value <= _ID_MAX:
            raise ValueError
    except (TypeError, ValueError):
        raise ApprovalError(f"{storable(item_id, 40)!r} is not a request number") from None
    return value


class Approvals:
    """The persistent queue. Thread-safe; every method returns at once (SQLite writes are tiny)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock  # wall time: ages must survive a restart
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._vetter: Vetter | None = None
        store.ensure_schema(_SCHEMA)

    def set_vetter(self, vetter: Vetter | None) -> None:
        """Check every approval (and `recheck`) with `vetter`; the governor installs its moderation."""
        self._vetter = vetter

    def add_listener(self, listener: Listener) -> None:
        """`listener(event, item)` for event in submitted/approved/denied/expired (on the changing thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def submit(
        self, text: str, *, source: str, author: str, meta: Mapping[str, Any] | None = None, model_text: str = ""
    ) -> int:
        """Queue a proposal; returns its id (the number moderators `!approve`)."""
        meta_json = json.dumps(dict(meta or {}), default=str, ensure_ascii=True)
        with self._lock:
            item_id = self._store.execute(
                "INSERT INTO approvals (created_at, source, author, text, model_text, meta, status)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (self._clock(), storable(source, 100), storable(author, 100), storable(text, 4000),
                 storable(model_text, 4000), meta_json),
            )
        self._emit("submitted", self._get(item_id))
        return item_id

    def get(self, item_id: int | str) -> ApprovalItem | None:
        try:
            return self._get(_parse_id(item_id))
        except ApprovalError:
            return None

    def _get(self, item_id: int) -> ApprovalItem:
        rows = self._store.query("SELECT * FROM approvals WHERE id = ?", (item_id,))
        if not rows:
            raise ApprovalError(f"there is no request #{item_id}")
        return _item(rows[0])

    def pending(self) -> list[ApprovalItem]:
        """Waiting items, oldest first."""
        rows = self._store.query("SELECT * FROM approvals WHERE status = 'pending' ORDER BY id")
        return [_item(r) for r in rows]

    def recent(self, limit: int = 50) -> list[ApprovalItem]:
        """All items, newest first (the dashboard's history)."""
        return [_item(r) for r in self._store.query("SELECT * FROM approvals ORDER BY id DESC LIMIT ?", (limit,))]

    def approve(self, item_id: int | str, by: str) -> ApprovalItem:
        """Approve a pending item if the vetter passes it again (its model_text is then the fresh text);
        an item the vetter refuses comes back denied by REFUSED_BY with the reason, so check `status`.
        Raises ApprovalError if unknown or already decided."""
        return self._decide(_parse_id(item_id), "approved", by, "")

    def recheck(self) -> list[ApprovalItem]:
        """Vet every pending item again (at start, after a blocklist change): refused ones are denied by
        REFUSED_BY (listeners hear `denied`, so channel points are refunded); the others get the fresh
        model text. Returns the refused items."""
        refused: list[ApprovalItem] = []
        if self._vetter is None:
            return refused
        for item in self.pending():
            try:
                decided = self._decide(item.id, "approved", REFUSED_BY, "", vet_only=True)
            except ApprovalError:  # decided meanwhile by someone else
                continue
            if decided.status == "denied":
                refused.append(decided)
        return refused

    def deny(self, item_id: int | str, by: str, reason: str = "") -> ApprovalItem:
        """Deny a pending item; raises ApprovalError if unknown or already decided."""
        return self._decide(_parse_id(item_id), "denied", by, reason or "denied")

    def expire(self, max_age_s: float, now: float | None = None) -> list[ApprovalItem]:
        """Expire items pending longer than max_age_s; returns them (refund their channel points)."""
        now = self._clock() if now is None else now
        expired = []
        with self._lock:
            for row in self._store.query(
                "SELECT id FROM approvals WHERE status = 'pending' AND created_at <= ? ORDER BY id", (now - max_age_s,)
            ):
                expired.append(self._decide(row["id"], "expired", "system", f"not decided within {max_age_s:g} s",
                                            emit=False))
        for item in expired:
            self._emit("expired", item)
        return expired

    def _decide(
        self, item_id: int, status: Status, by: str, reason: str, *, emit: bool = True, vet_only: bool = False
    ) -> ApprovalItem:
        """One decision, under the lock so two moderators cannot both decide an item. An approval is
        vetted first; with vet_only an item that passes stays pending (only its model text is renewed)."""
        with self._lock:
            item = self._get(item_id)
            if item.status != "pending":
                who = f" by {item.decided_by}" if item.decided_by else ""
                raise ApprovalError(f"request #{item_id} was already {item.status}{who}")
            model_text = item.model_text
            if status == "approved" and self._vetter is not None:
                verdict = self._vetter(item)
                if verdict.allowed:
                    model_text = verdict.text
                else:
                    status, by, reason = "denied", REFUSED_BY, verdict.reason or "refused by moderation"
            if vet_only and status == "approved":
                if model_text != item.model_text:
                    self._store.execute("UPDATE approvals SET model_text = ? WHERE id = ?",
                                        (storable(model_text, 4000), item_id))
                return self._get(item_id)
            self._store.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, reason = ?, model_text = ?"
                " WHERE id = ?",
                (status, storable(by, 100), self._clock(), storable(reason, 500), storable(model_text, 4000), item_id),
            )
            item = self._get(item_id)
        if emit:
            self._emit(status, item)
        return item

    def _emit(self, event: str, item: ApprovalItem) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, item)
            except Exception:  # a broken UI listener must not undo or block a decision
                log.exception("approval listener failed on %s #%d", event, item.id)
