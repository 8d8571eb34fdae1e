"""Native Twitch polls for the PollManager: Helix Create/End Poll with the broadcaster's token,
EventSub `channel.poll.begin/progress/end` turned into tallies.

Twitch only lets Affiliates and Partners run polls, one at a time, within the limits that
policy/poll_spec.py holds; every poll arrives here as a `PollSpec`, already checked against them
(TwitchIO would only find out from the HTTP error). When Twitch answers that the channel cannot
run polls, `PollsUnsupported` tells the caller to fall back to chat votes (!vote).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamer.control.policy.poll_spec import PollSpec
    from streamer.control.policy.polls import PollManager

log = logging.getLogger(__name__)


class PollsUnsupported(RuntimeError):
    """This channel cannot run native polls (not Affiliate/Partner, or no broadcaster login)."""


def _unsupported(e: Any) -> bool:
    message = str(getattr(e, "extra", {}).get("message", "") if isinstance(getattr(e, "extra", None), dict) else "")
    return getattr(e, "status", 0) == 403 or "affiliate" in message.lower() or "partner" in message.lower()


class TwitchPollBackend:
    """The PollManager's NativePollBackend over Helix; EventSub poll events feed the manager's tallies."""

    name = "twitch"

    def __init__(self, broadcaster_id: str, manager: PollManager) -> None:
        self.broadcaster_id = broadcaster_id
        self.manager = manager
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

    async def create(self, spec: PollSpec) -> str:
        """Create the poll; raises PollsUnsupported (use chat votes) or the HTTP error."""
        import twitchio

        title, choices, seconds = spec.title, list(spec.choices), spec.seconds
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
