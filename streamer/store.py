"""SQLite store (WAL): prompt history, and whatever the control plane must not lose on a crash.

One connection guarded by a lock: writes are small and rare (prompt changes, chat decisions), so a
single writer is simpler than a pool and never sees SQLITE_BUSY between our own threads. Each write
commits at once (autocommit), so a hard kill loses at most the statement in flight.
Modules that need tables call `ensure_schema` with their own CREATE TABLE IF NOT EXISTS statements.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamer.control.prompts import PromptState

_CORE_SCHEMA = """
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


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self.ensure_schema(_CORE_SCHEMA)

    def ensure_schema(self, script: str) -> None:
        """Run idempotent DDL (CREATE ... IF NOT EXISTS)."""
        with self._lock:
            self._conn.executescript(script)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one write; returns lastrowid."""
        with self._lock:
            cur = self._conn.execute(sql, params)
            return int(cur.lastrowid or 0)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(sql, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def record_prompt(self, state: PromptState) -> None:
        self.execute(
            "INSERT INTO prompt_history (version, text, source, author, reason, enabled, strength, changed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                state.version,
                state.text,
                state.source,
                state.author,
                state.reason,
                int(state.enabled),
                state.strength,
                state.changed_at,
            ),
        )

    def prompt_history(self, limit: int = 50) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM prompt_history ORDER BY id DESC LIMIT ?", (limit,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
