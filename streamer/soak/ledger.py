"""What the soak sent the daemon that the daemon must keep, and the check that its store still holds it.

An item enters the ledger only once the daemon took it: a dashboard POST answered 200, a chat
message that the fake Twitch delivered to a live EventSub subscription. A send the daemon could not
take (it was down, or Twitch was disconnected) is counted as `unsent`, not as a loss: nobody could
have kept it. The store is read with a connection of its own (read-only, `query_only`), which a
write lock held by another process does not block in WAL mode.
"""

from __future__ import annotations

import collections
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("prompt", "proposal", "approval", "vote", "audit")


@dataclass(frozen=True)
class Item:
    kind: str  # prompt (dashboard), proposal (chat !ai), approval (dashboard), vote (chat !vote), audit (the
    # moderation audit row every prompt and proposal leaves, keyed by the text as sent)
    key: str  # what identifies it in the store
    sent: float  # monotonic time the daemon took it
    expect: str = ""  # the stored value it must have (an approval's status, a vote's choice)


@dataclass
class Stored:
    """The store's rows that ledger items are looked up in."""

    prompts: set[str] = field(default_factory=set)
    proposals: set[str] = field(default_factory=set)
    approvals: dict[str, str] = field(default_factory=dict)  # id -> status
    votes: dict[str, str] = field(default_factory=dict)  # "poll_id/chatter_id" -> choice (0-based)
    audit: set[str] = field(default_factory=set)  # raw texts in the moderation audit log
    rejected: set[str] = field(default_factory=set)  # raw texts moderation refused (they never reach approvals)

    def holds(self, item: Item) -> bool:
        if item.kind == "prompt":
            return item.key in self.prompts
        if item.kind == "proposal":  # kept as an approval, or refused by moderation with the refusal logged
            return item.key in self.proposals or item.key in self.rejected
        if item.kind == "approval":
            return self.approvals.get(item.key) == item.expect
        if item.kind == "audit":
            return item.key in self.audit
        return self.votes.get(item.key) == item.expect


def read_store(path: Path) -> Stored:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        conn.execute("PRAGMA query_only = 1")
        s = Stored()
        s.prompts = {r[0] for r in _rows(conn, "SELECT text FROM prompt_history WHERE source = 'dashboard'")}
        s.proposals = {r[0] for r in _rows(conn, "SELECT text FROM approvals")}
        s.approvals = {str(r[0]): r[1] for r in _rows(conn, "SELECT id, status FROM approvals")}
        s.votes = {
            f"{r[0]}/{r[1]}": str(r[2]) for r in _rows(conn, "SELECT poll_id, chatter_id, choice FROM poll_votes")
        }
        s.audit = {r[0] for r in _rows(conn, "SELECT raw FROM moderation_audit")}
        s.rejected = {r[0] for r in _rows(conn, "SELECT raw FROM moderation_audit WHERE decision = 'rejected'")}
        return s
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    try:
        return list(conn.execute(sql).fetchall())
    except sqlite3.OperationalError as e:  # a table its module has not created yet
        if "no such table" in str(e):
            return []
        raise


class Ledger:
    def __init__(self, store: Path) -> None:
        self.store = store
        self.items: list[Item] = []
        self.unsent: collections.Counter[str] = collections.Counter()  # kind -> sends the daemon could not take
        self.refused: collections.Counter[str] = collections.Counter()  # kind: status -> answers other than success

    def add(self, kind: str, key: str, expect: str = "") -> None:
        self.items.append(Item(kind, key, time.monotonic(), expect))

    def missing(self, before: float, after: float = 0.0) -> list[Item]:
        """The items taken in [after, before) that the store does not hold now."""
        chosen = [i for i in self.items if after <= i.sent < before]
        if not chosen:
            return []
        stored = read_store(self.store)
        return [i for i in chosen if not stored.holds(i)]

    def moderated(self) -> int:
        """Proposals the daemon took whose stored outcome is moderation's refusal (e.g. a counter that
        reached a hate code such as "1488": the blocklist is right to refuse it, and nothing was lost)."""
        stored = read_store(self.store)
        return sum(
            1 for i in self.items if i.kind == "proposal" and i.key not in stored.proposals and i.key in stored.rejected
        )

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(i.kind for i in self.items))
