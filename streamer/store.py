"""SQLite store (WAL): one file for whatever the daemon must not lose on a crash.

One connection guarded by a lock: writes are small and rare (prompt changes, chat decisions), so a
single writer is simpler than a pool and never sees SQLITE_BUSY between our own threads. Each write
commits at once (autocommit), so a hard kill loses at most the statement in flight.
The store knows no tables: each module that keeps rows owns its schema and SQL and calls
`ensure_schema` with its CREATE TABLE IF NOT EXISTS statements (streamer.prompts owns prompt_history,
for example).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class Store:
    """One SQLite connection (WAL, autocommit) shared by every thread, behind a lock."""

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

    def close(self) -> None:
        with self._lock:
            self._conn.close()
