"""Short chat answers when a command is refused (role gate or cooldown), without letting them flood chat.

A refused chatter otherwise cannot tell "the bot is down" from "not for me" or "wait". But a refusal
reply is itself spam when someone hammers a command, so each answer is throttled: at most one per
chatter per command per window (the cooldown's remaining time, or for a role refusal the command's
per-chatter cooldown but at least `ROLE_WINDOW_S`), and at most `CHANNEL_PER_WINDOW` refusal answers
channel-wide per 30 s, so real answers keep most of the outbox's 20-per-30 s budget. The answers
name only the command word and the chatter: the chatter's text is never echoed.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# A role cannot change by waiting, so repeating the answer sooner than this only adds noise.
ROLE_WINDOW_S = 60.0
# Refusal answers channel-wide per CHANNEL_WINDOW_S: a quarter of a non-moderator bot's 20 messages.
CHANNEL_PER_WINDOW = 5
CHANNEL_WINDOW_S = 30.0
_MAX_KEYS = 10_000

_ROLE_WORDS = {"subscriber": "subscribers", "vip": "VIPs", "moderator": "moderators",
               "broadcaster": "the broadcaster"}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command did not run; attached to the guard's exception as `exc.refusal`."""

    key: str  # config key of the command ("ai", "poll", ...)
    word: str  # the chat word with prefix, e.g. "!ai"
    role: str | None = None  # least role needed (role refusal)
    remaining_s: float = 0.0  # seconds until the chatter may use it again (cooldown refusal)

    def text(self) -> str:
        if self.role is not None:
            return f"{self.word} is for {_ROLE_WORDS.get(self.role, self.role)}"
        return f"{self.word} again in {max(1, math.ceil(self.remaining_s))} s"


class RefusalReplies:
    """Decides whether a refusal gets an answer now (True) or stays silent (throttled)."""

    def __init__(self, user_cooldown_s: Callable[[str], float], clock: Callable[[], float] = time.monotonic) -> None:
        self._user_cooldown_s = user_cooldown_s
        self._clock = clock
        self._quiet_until: dict[tuple[str, str], float] = {}
        self._answered: deque[float] = deque()

    def _window(self, refusal: Refusal) -> float:
        if refusal.role is not None:
            return max(ROLE_WINDOW_S, self._user_cooldown_s(refusal.key))
        return max(1.0, refusal.remaining_s)

    def allow(self, chatter_id: str, refusal: Refusal) -> bool:
        now = self._clock()
        key = (chatter_id, refusal.key)
        if self._quiet_until.get(key, -math.inf) > now:
            return False
        while self._answered and now - self._answered[0] >= CHANNEL_WINDOW_S:
            self._answered.popleft()
        if len(self._answered) >= CHANNEL_PER_WINDOW:
            return False
        if len(self._quiet_until) >= _MAX_KEYS:  # forget windows that are over
            self._quiet_until = {k: t for k, t in self._quiet_until.items() if t > now}
        self._quiet_until[key] = now + self._window(refusal)
        self._answered.append(now)
        return True
