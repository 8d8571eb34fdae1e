"""Native Twitch polls for the PollManager: Helix Create/End Poll with the broadcaster's token,
EventSub `channel.poll.begin/progress/end` turned into tallies.

Twitch only lets Affiliates and Partners run polls, one at a time, with a title of at most 60
characters, 2-5 choices of at most 25 characters and 15-1800 seconds. TwitchIO checks those limits
only after the HTTP call, so `validate()` checks them first. When Twitch answers that the channel
cannot run polls, `PollsUnsupported` tells the PollManager to fall back to chat votes (!vote).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

TITLE_MAX = 60
CHOICE_MAX = 25
MIN_S, MAX_S = 15, 1800


class PollsUnsupported(RuntimeError):
    """This channel cannot run native polls (not Affiliate/Partner, or no broadcaster login)."""


def validate(title: str, choices: list[str], seconds: int) -> None:
    """Raise ValueError with the reason when Twitch would reject this poll."""
    if not 1 <= len(title) <= TITLE_MAX:
        raise ValueError(f"a poll title must be 1-{TITLE_MAX} characters")
    if not 2 <= len(choices) <= 5:
        raise ValueError("a native poll needs 2 to 5 choices")
    for c in choices:
        if not 1 <= len(c) <= CHOICE_MAX:
            raise ValueError(f"each choice must be 1-{CHOICE_MAX} characters: {c[:30]!r}")
    if not MIN_S <= seconds <= MAX_S:
        raise ValueError(f"a native poll lasts {MIN_S}-{MAX_S} seconds")


def _unsupported(e: Any) -> bool:
    message = str(getattr(e, "extra", {}).get("message", "") if isinstance(getattr(e, "extra", None), dict) else "")
    return getattr(e, "status", 0) == 403 or "affiliate" in message.lower() or "partner" in message.lower()


@dataclass
class NativePoll:
    """What Twitch knows about the running poll; `votes` follows the progress events."""

    id: str
    title: str
    choices: list[str]
    choice_ids: list[str]
    votes: list[int] = field(default_factory=list)
    ended: bool = False
    status: str = "active"


# on_update(poll) is called after every begin/progress/end event for the current poll.
PollListener = Callable[[NativePoll], None]


class TwitchPollBackend:
    """Creates and ends polls through Helix and tracks their tallies from EventSub."""

    def __init__(self, broadcaster_id: str) -> None:
        self.broadcaster_id = broadcaster_id
        self._bot: Any = None
        self.current: NativePoll | None = None
        self.unsupported = False
        self._listeners: list[PollListener] = []

    def attach(self, bot: Any) -> None:
        self._bot = bot

    def detach(self) -> None:
        self._bot = None

    @property
    def available(self) -> bool:
        return self._bot is not None and not self.unsupported and self.broadcaster_id in self._bot.tokens

    def add_listener(self, listener: PollListener) -> None:
        self._listeners.append(listener)

    async def start(self, title: str, choices: list[str], seconds: int) -> NativePoll:
        """Create a poll; raises ValueError (bad poll), PollsUnsupported (use chat votes) or the HTTP error."""
        import twitchio

        validate(title, choices, seconds)
        if not self.available:
            raise PollsUnsupported("native polls are not available (no broadcaster login, or not Affiliate/Partner)")
        owner = self._bot.create_partialuser(self.broadcaster_id)
        try:
            poll = await owner.create_poll(title=title, choices=choices, duration=seconds)
        except twitchio.HTTPException as e:
            if _unsupported(e):
                self.unsupported = True
                raise PollsUnsupported(f"Twitch does not allow polls on this channel ({e.status})") from None
            raise
        self.current = NativePoll(poll.id, poll.title, [c.title for c in poll.choices], [c.id for c in poll.choices],
                                  [0] * len(poll.choices))
        log.info("native poll %s started: %s %s (%d s)", poll.id, title, choices, seconds)
        return self.current

    async def end(self, poll_id: str) -> None:
        """End the poll early (it stays visible as TERMINATED); the end event delivers the final tally."""
        if self._bot is None:
            raise PollsUnsupported("Twitch is not connected")
        owner = self._bot.create_partialuser(self.broadcaster_id)
        await owner.end_poll(id=poll_id, status="TERMINATED")

    def on_event(self, kind: str, payload: Any) -> None:
        """EventSub channel.poll.begin/progress/end -> tallies of the current poll."""
        poll = self.current
        if poll is None or payload.id != poll.id:
            if kind == "begin" and poll is None:  # a poll started elsewhere (dashboard, Twitch UI): track it
                self.current = poll = NativePoll(payload.id, payload.title, [c.title for c in payload.choices],
                                                 [c.id for c in payload.choices], [0] * len(payload.choices))
            else:
                return
        by_id = {c.id: int(c.votes or 0) for c in payload.choices}
        poll.votes = [by_id.get(cid, 0) for cid in poll.choice_ids]
        if kind == "end":
            poll.ended, poll.status = True, str(getattr(payload, "status", "completed"))
            self.current = None
        for listener in list(self._listeners):
            try:
                listener(poll)
            except Exception:
                log.exception("poll listener failed")
