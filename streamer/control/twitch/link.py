"""TwitchLink: what outlives one bot connection, and the control plane the chat commands act on.

The bot (component.py) is rebuilt on every reconnect; the link keeps the chat outbox, the native
poll backend, the channel-points reward service and the refusal throttle across those rebuilds, and
announces finished polls in chat. The commands themselves are in commands.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from streamer.control.twitch.chat_outbox import ChatOutbox
from streamer.control.twitch.polls import TwitchPollBackend
from streamer.control.twitch.refusals import RefusalReplies
from streamer.control.twitch.rewards import RewardService

if TYPE_CHECKING:
    from streamer.config import Settings
    from streamer.control.policy.plane import ControlPlane
    from streamer.control.policy.poll_spec import PollSnapshot
    from streamer.metrics import Metrics
    from streamer.store import Store

log = logging.getLogger(__name__)


class TwitchLink:
    """Owns the outbox, poll backend, reward service and refusal throttle; holds the current bot."""

    def __init__(self, settings: Settings, control: ControlPlane | None, store: Store, *,
                 metrics: Metrics | None = None, outbox: ChatOutbox | None = None) -> None:
        if control is None:
            raise RuntimeError("the control plane is missing: Twitch commands need streamer.control.policy.plane")
        self.settings = settings
        self.tw = settings.twitch
        self.control = control
        self.metrics = metrics
        self.outbox = outbox or ChatOutbox(self.send_chat, max_queue=self.tw.outbox_max)
        self.polls = TwitchPollBackend(self.tw.owner_id, control.polls)
        self.rewards = RewardService(settings, store, control)
        self.refusals = RefusalReplies(lambda key: float(getattr(self.tw.user_cooldowns_s, key)))
        self.ready = asyncio.Event()
        self.bot: Any = None  # the TwitchIO bot while connected (built in component.make_bot)
        control.polls.set_default_backend(self.polls if self.tw.polls != "chat" else None)
        control.polls.add_listener(self._announce_poll)

    # ------------------------------------------------------------------ bot lifecycle

    async def attach(self, bot: Any) -> None:
        """Called from the bot's setup_hook once chat is subscribed and the commands are installed."""
        self.bot = bot
        self.polls.attach(bot)
        self.rewards.reconcile()
        await self.rewards.attach(bot)

    def detach(self) -> None:
        self.bot = None
        self.polls.detach()
        self.rewards.detach()

    def count(self, name: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.count(name, n)

    # ------------------------------------------------------------------ chat out

    async def send_chat(self, text: str, reply_to: str | None) -> None:
        """The outbox's sender: Helix Send Chat Message as the bot (waits while Twitch is down)."""
        await asyncio.wait_for(self.ready.wait(), timeout=60)
        owner = self.bot.create_partialuser(self.tw.owner_id)
        await owner.send_message(text, sender=self.tw.bot_id, token_for=self.tw.bot_id, reply_to_message_id=reply_to)

    def reply(self, chatter_name: str, message_id: str | None, text: str) -> None:
        """Answer one chatter, as a reply to their message (nothing when `twitch.replies` is off)."""
        if self.tw.replies:
            self.outbox.post(f"@{chatter_name} {text}", reply_to=message_id)

    def say(self, text: str) -> None:
        """A line for the whole chat (nothing when `twitch.replies` is off)."""
        if self.tw.replies:
            self.outbox.post(text)

    def _announce_poll(self, snap: PollSnapshot) -> None:
        """Every finished poll: its winner, or why there is none."""
        if snap.status == "running":
            return
        if snap.winner is None:
            self.say(f"poll over: {snap.result}")
        else:
            self.say(f"poll over: [{snap.winner + 1}] {snap.winner_text} wins ({snap.votes[snap.winner]} of "
                     f"{snap.total} votes) -- {snap.result}")

    async def housekeeping(self) -> None:
        """Settle channel-point redemptions as soon as a decision lands (and every few seconds to retry)."""
        while True:
            try:
                await asyncio.wait_for(self.rewards.decided.wait(), timeout=5.0)
            except TimeoutError:
                pass
            try:
                await self.rewards.settle()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("settling channel-point redemptions failed (%s); will retry", type(e).__name__)
