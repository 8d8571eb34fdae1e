"""The bot's own chat messages: queued, batched and sent within Twitch's rate limits.

Twitch ignores a bot for 30 minutes when it sends more than 20 messages per 30 s (100 when it is a
moderator or the broadcaster), and rejects messages over 500 characters. Command handlers call
`post()`, which never blocks and never waits on Twitch; one task (`run()`) drains the queue. When
replies pile up (a flood of commands), several are joined into one message, so the channel gets the
answers without the bot going over its budget. The queue is bounded: beyond `max_queue` the
oldest replies are dropped (and counted), because a reply that arrives minutes late is noise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_CHARS = 500
WINDOW_S = 30.0
_SEPARATOR = " | "
# Keep a little under Twitch's window: clocks differ and the server counts on arrival.
_MARGIN_S = 1.0

Send = Callable[[str, str | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    text: str
    reply_to: str | None = None


def clip(text: str, limit: int = MAX_CHARS) -> str:
    """One line of at most `limit` characters (Twitch collapses whitespace anyway)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatOutbox:
    """Bounded queue of chat messages drained by `run()` at most `per_window` sends per 30 s."""

    def __init__(
        self,
        send: Send,
        *,
        per_window: int = 20,
        max_queue: int = 50,
        window_s: float = WINDOW_S,
        on_drop: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_window < 1:
            raise ValueError("per_window must be >= 1")
        self._send = send
        self.per_window = per_window
        self.window_s = window_s
        self._queue: deque[Outgoing] = deque()
        self._max_queue = max_queue
        self._sent_at: deque[float] = deque()
        self._wake = asyncio.Event()
        self._on_drop = on_drop
        self._clock = clock
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def __len__(self) -> int:
        return len(self._queue)

    def post(self, text: str, *, reply_to: str | None = None) -> None:
        """Queue a message (clipped to 500 chars); returns at once."""
        text = clip(text)
        if not text:
            return
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            if self._on_drop:
                self._on_drop(1)
        self._queue.append(Outgoing(text, reply_to))
        self._wake.set()

    def _next_batch(self) -> Outgoing:
        """The head message alone, or, when more wait, as many as fit in one message (replies become mentions)."""
        first = self._queue.popleft()
        if not self._queue:
            return first
        text = first.text
        while self._queue and len(text) + len(_SEPARATOR) + len(self._queue[0].text) <= MAX_CHARS:
            text += _SEPARATOR + self._queue.popleft().text
        return Outgoing(text, None if text != first.text else first.reply_to)

    def _wait_s(self) -> float:
        now = self._clock()
        while self._sent_at and now - self._sent_at[0] >= self.window_s + _MARGIN_S:
            self._sent_at.popleft()
        if len(self._sent_at) < self.per_window:
            return 0.0
        return self._sent_at[0] + self.window_s + _MARGIN_S - now

    async def run(self) -> None:
        """Drain forever (cancel to stop). Send failures are logged and dropped, never retried in a loop."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._wait_s()
            if wait > 0:  # sleep until the window frees a slot (a new post re-checks sooner)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            msg = self._next_batch()
            self._sent_at.append(self._clock())
            try:
                await self._send(msg.text, msg.reply_to)
                self.sent += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Twitch said no (rate, ban, network): drop this one, keep going
                self.failed += 1
                log.warning("chat message not sent (%s: %s)", type(e).__name__, getattr(e, "status", "") or e)
