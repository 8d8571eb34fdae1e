"""The blocklist terms the streamer adds while live (the dashboard's "Blocked words"), kept in the Store.

They come on top of the shipped list and the config file's `moderation.blocklist_extra`, which are
never changed here, and survive a restart like everything else the daemon must not lose. Dropping a
shipped entry (`moderation.blocklist_allow`) stays a config-file edit: loosening the safety list should
be deliberate, not a click. The terms are one row (a JSON list), so a change is one atomic write.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.store import Store

log = logging.getLogger(__name__)

MAX_TERMS = 500  # far more than a streamer types in; bounds the matcher's size and the stored row
MAX_TERM_CHARS = 100  # the longest shipped phrase has 24

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocklist_runtime (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    terms TEXT NOT NULL,
    changed_at REAL NOT NULL,
    changed_by TEXT NOT NULL
);
"""


def tidy_terms(terms: Iterable[object]) -> tuple[str, ...]:
    """The terms stripped, without blanks and case-insensitive repeats, in their first order. Raises
    ValueError (a message fit for the dashboard) for a non-string, an over-long term or too many."""
    tidy: list[str] = []
    seen: set[str] = set()
    for term in terms:
        if not isinstance(term, str):
            raise ValueError(f"a blocklist term must be text, not {type(term).__name__}")
        term = " ".join(term.split())
        if len(term) > MAX_TERM_CHARS:
            raise ValueError(f"a blocklist term is at most {MAX_TERM_CHARS} characters ({term[:30]!r}… is longer)")
        if term and term.casefold() not in seen:
            seen.add(term.casefold())
            tidy.append(term)
    if len(tidy) > MAX_TERMS:
        raise ValueError(f"at most {MAX_TERMS} blocklist terms can be added while running ({len(tidy)} given)")
    return tuple(tidy)


class RuntimeTerms:
    """Load and save the run-time terms (an empty list without a Store)."""

    def __init__(self, store: Store | None, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        if store is not None:
            store.ensure_schema(_SCHEMA)

    def load(self) -> tuple[str, ...]:
        """The saved terms; a row that is not a list of terms (edited by hand, say) counts as none."""
        if self._store is None:
            return ()
        rows = self._store.query("SELECT terms FROM blocklist_runtime WHERE id = 1")
        if not rows:
            return ()
        try:
            return tidy_terms(json.loads(rows[0]["terms"]))
        except (ValueError, TypeError) as e:
            log.warning("the stored blocklist terms are unreadable (%s); none are applied", e)
            return ()

    def save(self, terms: tuple[str, ...], by: str) -> None:
        if self._store is not None:
            self._store.execute(
                "INSERT OR REPLACE INTO blocklist_runtime (id, terms, changed_at, changed_by) VALUES (1, ?, ?, ?)",
                (json.dumps(list(terms), ensure_ascii=True), self._clock(), by[:100]))


def saved_terms(store_path: str) -> tuple[str, ...]:
    """The terms a daemon using this store file saved, for tools that run beside it (`check-prompt`):
    read-only, and nothing is created where there is no file yet."""
    path = Path(store_path).expanduser()
    if not path.is_file():
        return ()
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT terms FROM blocklist_runtime WHERE id = 1").fetchone()
        return tidy_terms(json.loads(row[0])) if row else ()
    except (sqlite3.Error, ValueError, TypeError) as e:  # no such table yet, not a database, a broken row
        log.debug("no saved blocklist terms in %s: %s", path, e)
        return ()
