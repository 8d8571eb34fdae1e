"""Native Twitch polls for the PollManager: Helix Create/End Poll with the broadcaster's token,
EventSub `channel.poll.begin/progress/end` turned into tallies.

Twitch only lets Affiliates and Partners run polls, one at a time, with a title of at most 60
characters, 2-5 choices of at most 25 characters and 15-1800 seconds. TwitchIO checks those limits
only after the HTTP call, so `validate()` checks them first. When Twitch answers that the channel
cannot run polls, `PollsUnsupported` tells the PollManager to fall back to chat votes (!vote).
"""

from __future__ import annotations

import logging
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


class TwitchPollBackend:
    """The PollManager's NativePollBackend over Helix; EventSub poll events feed the manager's tallies."""

    name = "twitch"

    def __init__(self, broadcaster_id: str, manager: Any) -> None:
        self.broadcaster_id = broadcaster_id
        self.manager = manager  # streamer.control.policy.polls.PollManager
        self._bot: Any = None
        self.unsupported = False
        self.choice_ids: dict[str, list[str]] = {}  # platform poll id -> choice ids in spec order

    def attach(self, bot: Any) -> None:
        self._bot = bot

    def detach(self) -> None:
        self._bot = None

    @property
    def available(self) -> bool:
        return self._bot is not None and not self.unsupported and self.broadcaster_id in self._bot.tokens

    async def create(self, spec: Any) -> str:
        """Create the poll; raises ValueError (bad poll), PollsUnsupported (use chat votes) or the HTTP error."""
        import twitchio

        title, choices, seconds = spec.title, list(spec.choices), int(spec.seconds)
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
        self.choice_ids[poll.id] = [c.id for c in poll.choices]
        log.info("native poll %s started: %s %s (%d s)", poll.id, title, choices, seconds)
        return str(poll.id)

    async def end(self, poll_id: str, *, cancel: bool) -> None:
        """End early: TERMINATED keeps the results visible, ARCHIVED (cancel) hides them."""
        if self._bot is None:
            raise PollsUnsupported("Twitch is not connected")
        owner = self._bot.create_partialuser(self.broadcaster_id)
        await owner.end_poll(id=poll_id, status="ARCHIVED" if cancel else "TERMINATED")

    def on_event(self, kind: str, payload: Any) -> None:
        """EventSub channel.poll.begin/progress/end -> the manager's on_progress / on_end (votes in spec order)."""
        ids = self.choice_ids.get(payload.id) or [c.id for c in payload.choices]
        by_id = {c.id: int(c.votes or 0) for c in payload.choices}
        votes = [by_id.get(cid, 0) for cid in ids]
        if kind == "progress":
            self.manager.on_progress(votes, poll_id=payload.id)
        elif kind == "end":
            self.choice_ids.pop(payload.id, None)
            if getattr(payload, "status", "completed") == "archived":
                return  # cancelled (ARCHIVED): the manager closed it already, without a winner
            self.manager.on_end(votes, poll_id=payload.id)
