"""The store under another process's write lock: a write waits for it (up to BUSY_TIMEOUT_S, not SQLite's
default 5 s, which lost chat proposals in the soak), says so in the log, and never holds the GIL while it
waits (the video threads keep running)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from streamer.store import BUSY_TIMEOUT_S, Store


def test_a_write_waits_out_another_writers_lock_without_blocking_other_threads(tmp_path, caplog):
    store = Store(tmp_path / "s.db")
    store.ensure_schema("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    assert store.query("PRAGMA busy_timeout")[0][0] == BUSY_TIMEOUT_S * 1000 > 5000
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(1.5, lambda: other.execute("ROLLBACK"))
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:  # stands in for the output thread
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    released.start()
    ticker.start()
    try:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="streamer.store"):
            store.execute("INSERT INTO t VALUES (1)")
        waited = time.monotonic() - t0
    finally:
        stop.set()
        ticker.join()
        released.join()
        other.close()
    assert 1.3 < waited < 5.0
    assert store.query("SELECT x FROM t")[0][0] == 1
    assert "waited" in caplog.text and "lock" in caplog.text
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.2  # SQLite let go of the GIL
    store.close()
