"""Poll data: PollSpec (checked against Twitch's limits before any HTTP call), PollSnapshot, the tie-break.

The limits below are Twitch's (Helix Create Poll) and this is the one place that states them: the
config check of `twitch.poll_seconds` and the native poll backend import them. TwitchIO only learns
of a violation from the HTTP error, so every poll (native or chat-vote) is validated here first,
with a message fit for a chat reply.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

TITLE_MAX = 60  # characters
CHOICE_MAX = 25  # characters per choice
CHOICES_MIN, CHOICES_MAX = 2, 5
SECONDS_MIN, SECONDS_MAX = 15, 1800


PollStatus = Literal["running", "ended", "cancelled"]


class PollSpecError(ValueError):
    """The poll's title, choices or length break a rule; the message says which and how."""


class PollError(RuntimeError):
    """A poll action that does not fit the current state (none running, one already running, bad vote)."""


def _no_controls(text: str, what: str) -> None:
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text):
        raise PollSpecError(f"{what} contains control or invisible characters")


@dataclass(frozen=True)
class PollSpec:
    """title: <= TITLE_MAX chars; choices: CHOICES_MIN to CHOICES_MAX distinct texts of <= CHOICE_MAX chars;
    seconds: SECONDS_MIN to SECONDS_MAX (whole seconds). Surrounding whitespace is stripped; anything
    else wrong raises PollSpecError."""

    title: str
    choices: tuple[str, ...]
    seconds: int

    def __post_init__(self) -> None:
        if not isinstance(self.title, str):
            raise PollSpecError("the poll title must be text")
        title = " ".join(self.title.split())
        if not title:
            raise PollSpecError("the poll needs a title")
        if len(title) > TITLE_MAX:
            raise PollSpecError(f"the poll title is {len(title)} characters; Twitch allows at most {TITLE_MAX}")
        _no_controls(title, "the poll title")
        if isinstance(self.choices, str) or not isinstance(self.choices, list | tuple):
            raise PollSpecError("the choices must be a list of texts")
        if not all(isinstance(c, str) for c in self.choices):
            raise PollSpecError("every choice must be text")
        choices = tuple(" ".join(c.split()) for c in self.choices)
        if not CHOICES_MIN <= len(choices) <= CHOICES_MAX:
            raise PollSpecError(f"a poll needs {CHOICES_MIN} to {CHOICES_MAX} choices; got {len(choices)}")
        for i, c in enumerate(choices, 1):
            if not c:
                raise PollSpecError(f"choice {i} is empty")
            if len(c) > CHOICE_MAX:
                raise PollSpecError(f"choice {i} is {len(c)} characters; Twitch allows at most {CHOICE_MAX}")
            _no_controls(c, f"choice {i}")
        if len({c.casefold() for c in choices}) != len(choices):
            raise PollSpecError("two choices are the same")
        seconds: object = self.seconds  # JSON and TOML callers may pass anything
        if isinstance(seconds, float) and seconds.is_integer():
            seconds = int(seconds)
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise PollSpecError(f"the poll length must be whole seconds; got {self.seconds!r}")
        if not SECONDS_MIN <= seconds <= SECONDS_MAX:
            raise PollSpecError(f"a poll lasts {SECONDS_MIN} to {SECONDS_MAX} seconds; got {seconds}")
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "choices", choices)
        object.__setattr__(self, "seconds", seconds)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> PollSpec:
        """From JSON-like data: title, choices (or options), seconds (or duration_s)."""
        if not isinstance(m, Mapping):
            raise PollSpecError("a poll must be given as title, choices and seconds")
        choices = m.get("choices", m.get("options"))
        seconds = m.get("seconds", m.get("duration_s"))
        if choices is None or seconds is None or "title" not in m:
            raise PollSpecError("a poll needs 'title', 'choices' and 'seconds'")
        return cls(m["title"], tuple(choices) if isinstance(choices, list) else choices, seconds)


@dataclass(frozen=True)
class PollSnapshot:
    """A poll as the overlay and dashboard show it. winner is a 0-based index (None: no winner)."""

    id: int
    title: str
    choices: tuple[str, ...]
    votes: tuple[int, ...]
    seconds: int
    backend: str
    status: PollStatus
    started_by: str
    started_at: float
    ends_at: float
    seconds_left: float
    winner: int | None = None
    winner_text: str = ""
    result: str = ""
    platform_id: str = ""

    @property
    def total(self) -> int:
        return sum(self.votes)

    def view(self) -> dict[str, Any]:
        """JSON-friendly overlay data."""
        return {
            "id": self.id, "title": self.title, "status": self.status, "backend": self.backend,
            "choices": [{"number": i + 1, "text": c, "votes": v} for i, (c, v) in enumerate(zip(self.choices, self.votes, strict=True))],
            "total": self.total, "seconds_left": round(self.seconds_left, 1), "ends_at": self.ends_at,
            "winner": self.winner, "winner_text": self.winner_text, "result": self.result,
        }


def winner_of(votes: Sequence[int], reached: Sequence[int]) -> int | None:
    """Most votes; ties: earliest to reach that count, then the lowest index. None without votes."""
    if not votes or max(votes) <= 0:
        return None
    top = max(votes)
    return min((i for i, v in enumerate(votes) if v == top), key=lambda i: (reached[i], i))
