"""SQLite store (WAL): one file for whatever the daemon must not lose on a crash.

One connection guarded by a lock: writes are small and rare (prompt changes, chat decisions), so a
single writer is simpler than a pool and never sees SQLITE_BUSY between our own threads. Each write
commits at once (autocommit), so a hard kill loses at most the statement in flight.
Another process may hold the write lock for a while (the sqlite3 shell, a script, `streamer twitch
login`): a write then waits up to BUSY_TIMEOUT_S for it instead of failing after SQLite's default 5 s
(which lost chat proposals and audit rows in the soak), and a wait longer than a second is logged.
While it waits, its caller waits (the control plane's event loop); the video does not, because
SQLite releases the GIL while it waits.
The store knows no tables: each module that keeps rows owns its schema and SQL and calls
`ensure_schema` with its CREATE TABLE IF NOT EXISTS statements (streamer.prompts owns prompt_history,
for example).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's lock before it fails
SLOW_WRITE_S = 1.0  # a write that waited longer than this is logged (someone else held the lock)


class Store:
    """One SQLite connection (WAL, autocommit) shared by every thread, behind a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                     timeout=BUSY_TIMEOUT_S)
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
            t0 = time.monotonic()
            cur = self._conn.execute(sql, params)
            waited = time.monotonic() - t0
        if waited > SLOW_WRITE_S:
            log.warning("store: a write waited %.1f s for another process's lock on %s", waited, self.path)
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
