"""Chat commands and the glue between the Twitch bot and the control plane.

Every command word, its least role and its per-chatter and channel-wide cooldowns come from
`[twitch]` config, so the commands are built at runtime as TwitchIO `Command`s with a role guard and
cooldown buckets (moderators and the broadcaster are exempt from cooldowns). Audience text only ever
reaches the model through the governor (`PlaneAdapter.propose`). Refusals for role and cooldown are
counted in the metrics and, with `twitch.reply_on_refusal`, answered briefly in chat, throttled by
`twitch_refusals.RefusalReplies` (a flood of "you can't" replies would itself be spam).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from streamer.control.twitch.chat_outbox import ChatOutbox, clip
from streamer.control.twitch.polls import TwitchPollBackend
from streamer.control.twitch.refusals import Refusal, RefusalReplies
from streamer.control.twitch.rewards import RewardService
from streamer.control.twitch_plane import Outcome, PlaneAdapter
from streamer.store import Store

log = logging.getLogger(__name__)

ROLE_RANK = {"everyone": 0, "subscriber": 1, "vip": 2, "moderator": 3, "broadcaster": 4}
POLL_TITLE = "What should the stream look like?"


def chatter_rank(chatter: Any) -> int:
    if getattr(chatter, "broadcaster", False):
        return ROLE_RANK["broadcaster"]
    if getattr(chatter, "moderator", False) or getattr(chatter, "lead_moderator", False):
        return ROLE_RANK["moderator"]
    if getattr(chatter, "vip", False):
        return ROLE_RANK["vip"]
    if getattr(chatter, "subscriber", False) or getattr(chatter, "founder", False):
        return ROLE_RANK["subscriber"]
    return ROLE_RANK["everyone"]


def parse_poll(text: str, default_s: int) -> tuple[list[str], int]:
    """'a | b | c 90' -> (['a', 'b', 'c'], 90); a trailing number on the last choice is the length."""
    seconds = default_s
    m = re.search(r"\s(\d{1,4})\s*$", " " + text)
    if m and "|" in text[: m.start()]:
        seconds = int(m.group(1))
        text = text[: m.start() - 1] if m.start() > 0 else ""
    options = [o.strip() for o in text.split("|")]
    return [o for o in options if o], seconds


def describe(outcome: Outcome) -> str:
    """A short chat answer for a governor/approvals outcome (never echoes a blocked term)."""
    if outcome.status == "applied":
        return f"prompt is now: {clip(outcome.text, 200)}"
    if outcome.status == "queued":
        return f"waiting for a mod (#{outcome.id})" if outcome.id else "waiting for a mod"
    if outcome.status == "approved":
        return f"#{outcome.id} approved"
    if outcome.status == "denied":
        return f"#{outcome.id} denied"
    return f"not used: {outcome.reason or outcome.status}"


class TwitchLink:
    """Owns what outlives one bot connection: outbox, poll backend, reward service, command table."""

    def __init__(self, settings: Any, control: Any, store: Store, *, metrics: Any = None,
                 outbox: ChatOutbox | None = None) -> None:
        self.settings = settings
        self.tw = settings.twitch
        self.plane = PlaneAdapter(control)
        self.metrics = metrics
        self.outbox = outbox or ChatOutbox(self.send_chat, max_queue=self.tw.outbox_max)
        self.polls = TwitchPollBackend(self.tw.owner_id, self.plane.polls)
        self.rewards = RewardService(settings, store, self.plane)
        self.refusals = RefusalReplies(lambda key: float(getattr(self.tw.user_cooldowns_s, key)))
        self.ready = asyncio.Event()
        self.bot: Any = None
        self.plane.install_poll_backend(self.polls, use_native=self.tw.polls != "chat")
        self.plane.on_poll_result(self.say)

    # ------------------------------------------------------------------ bot lifecycle

    async def attach(self, bot: Any) -> None:
        """Called from the bot's setup_hook once chat is subscribed."""
        self.bot = bot
        self.polls.attach(bot)
        install_commands(bot, self)
        self.rewards.reconcile()
        await self.rewards.attach(bot)

    def detach(self) -> None:
        self.bot = None
        self.polls.detach()
        self.rewards.detach()

    def count(self, name: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.count(name, n)

    async def send_chat(self, text: str, reply_to: str | None) -> None:
        """The outbox's sender: Helix Send Chat Message as the bot (waits while Twitch is down)."""
        await asyncio.wait_for(self.ready.wait(), timeout=60)
        owner = self.bot.create_partialuser(self.tw.owner_id)
        await owner.send_message(text, sender=self.tw.bot_id, token_for=self.tw.bot_id, reply_to_message_id=reply_to)

    def reply(self, ctx: Any, text: str) -> None:
        if self.tw.replies:
            self.outbox.post(f"@{ctx.chatter.name} {text}", reply_to=getattr(ctx.message, "id", None))

    def say(self, text: str) -> None:
        if self.tw.replies:
            self.outbox.post(text)

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

    # ------------------------------------------------------------------ events

    def command_error(self, payload: Any) -> None:
        from twitchio.ext import commands

        e, ctx = payload.exception, payload.context
        if isinstance(e, commands.CommandNotFound):
            return
        if isinstance(e, commands.CommandOnCooldown):  # a GuardFailure subclass: test it first
            self.count("twitch_command_cooldown")
            self._answer_refusal(ctx, e)
            return
        if isinstance(e, commands.GuardFailure):
            self.count("twitch_command_forbidden")
            self._answer_refusal(ctx, e)
            return
        if isinstance(e, commands.MissingRequiredArgument | commands.ConversionError | commands.BadArgument):
            self.reply(ctx, f"usage: {self.tw.prefix}{ctx.command.name}{ctx.command.signature or ''}")
            return
        original = getattr(e, "original", e)
        log.error("Twitch command %s failed: %s: %s", getattr(ctx.command, "name", "?"), type(original).__name__, original)

    def _answer_refusal(self, ctx: Any, e: Exception) -> None:
        refusal = getattr(e, "refusal", None)
        if not (self.tw.reply_on_refusal and self.tw.replies and isinstance(refusal, Refusal)):
            return
        if self.refusals.allow(str(ctx.chatter.id), refusal):
            self.reply(ctx, refusal.text())
        else:
            self.count("twitch_refusal_replies_skipped")

    async def redemption(self, payload: Any) -> None:
        await self.rewards.on_redemption(payload)

    def poll_event(self, kind: str, payload: Any) -> None:
        self.polls.on_event(kind, payload)


# ---------------------------------------------------------------------------- commands


Handler = Callable[[TwitchLink, Any, str], Awaitable[None]]


async def cmd_ai(link: TwitchLink, ctx: Any, text: str) -> None:
    if not text.strip():
        link.reply(ctx, f"usage: {link.tw.prefix}{link.tw.commands.ai} <what the stream should look like>")
        return
    outcome = link.plane.propose(text, author=ctx.chatter.name, meta=_meta(ctx))
    link.reply(ctx, describe(outcome))


async def cmd_style(link: TwitchLink, ctx: Any, text: str) -> None:
    outcome = link.plane.style(text.strip(), author=ctx.chatter.name, meta=_meta(ctx))
    link.reply(ctx, describe(outcome))


async def cmd_vote(link: TwitchLink, ctx: Any, text: str) -> None:
    ok, message = link.plane.vote(ctx.chatter.id, text.strip())
    if not ok:
        link.reply(ctx, message)


async def cmd_aiqueue(link: TwitchLink, ctx: Any, text: str) -> None:
    items = link.plane.pending()
    if not items:
        link.reply(ctx, "nothing waits for approval")
        return
    link.reply(ctx, "waiting: " + "; ".join(f"#{i} {clip(t, 60)} ({a})" for i, t, a in items[:8]))


async def cmd_approve(link: TwitchLink, ctx: Any, text: str) -> None:
    link.reply(ctx, describe(link.plane.approve(text.strip().lstrip("#"), by=ctx.chatter.name)))
    await link.rewards.settle()


async def cmd_deny(link: TwitchLink, ctx: Any, text: str) -> None:
    item, _, reason = text.strip().partition(" ")
    link.reply(ctx, describe(link.plane.deny(item.lstrip("#"), by=ctx.chatter.name, reason=reason.strip())))
    await link.rewards.settle()


async def cmd_poll(link: TwitchLink, ctx: Any, text: str) -> None:
    options, seconds = parse_poll(text, link.tw.poll_seconds)
    if len(options) < 2:
        link.reply(ctx, f"usage: {link.tw.prefix}{link.tw.commands.poll} option a | option b [| ...] [seconds]")
        return
    ok, message = await link.plane.start_poll(POLL_TITLE, options, seconds, by=ctx.chatter.name,
                                              fallback=link.tw.polls == "auto")
    if ok:
        link.say(message)
    else:
        link.reply(ctx, message)


async def cmd_aioff(link: TwitchLink, ctx: Any, text: str) -> None:
    link.plane.kill(by=ctx.chatter.name)
    link.reply(ctx, "AI off (camera passes through)")


async def cmd_aion(link: TwitchLink, ctx: Any, text: str) -> None:
    link.plane.revive(by=ctx.chatter.name)
    link.reply(ctx, "AI on")


async def cmd_strength(link: TwitchLink, ctx: Any, text: str) -> None:
    try:
        value = float(text.strip())
        if not 0.0 <= value <= 1.0:
            raise ValueError
    except ValueError:
        link.reply(ctx, f"usage: {link.tw.prefix}{link.tw.commands.strength} <a number from 0 to 1>")
        return
    link.plane.set_strength(value, by=ctx.chatter.name)
    link.reply(ctx, f"strength {value:g}")


HANDLERS: dict[str, Handler] = {
    "ai": cmd_ai, "style": cmd_style, "vote": cmd_vote, "aiqueue": cmd_aiqueue, "approve": cmd_approve,
    "deny": cmd_deny, "poll": cmd_poll, "aioff": cmd_aioff, "aion": cmd_aion, "strength": cmd_strength,
}


def _meta(ctx: Any) -> dict[str, Any]:
    return {"user_id": ctx.chatter.id, "message_id": getattr(ctx.message, "id", None),
            "rank": chatter_rank(ctx.chatter)}


def _exempt(ctx: Any) -> bool:
    return chatter_rank(ctx.chatter) >= ROLE_RANK["moderator"]


class CooldownGate:
    """Per-chatter and channel-wide cooldown of one command, taken together: a use refused by one of
    them does not use up the other (TwitchIO's separate buckets would charge the first one)."""

    def __init__(self, user_s: float, global_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.user_s, self.global_s = user_s, global_s
        self._clock = clock
        self._last_global = -float("inf")
        self._last_user: dict[str, float] = {}

    def take(self, chatter_id: str) -> float:
        """0 and the use is recorded, or the seconds left before this chatter may use it."""
        now = self._clock()
        wait = max(self._last_global + self.global_s - now,
                   self._last_user.get(chatter_id, -float("inf")) + self.user_s - now)
        if wait > 0:
            return wait
        self._last_global = now
        if self.user_s > 0:
            if len(self._last_user) > 10_000:  # forget chatters whose cooldown is long over
                self._last_user = {k: t for k, t in self._last_user.items() if t + self.user_s > now}
            self._last_user[chatter_id] = now
        return 0.0


def make_command(link: TwitchLink, key: str) -> Any:
    """The TwitchIO Command for one config key, with its role guard and cooldown buckets."""
    from twitchio.ext import commands

    tw = link.tw
    word: str = getattr(tw.commands, key)
    role: str = getattr(tw.roles, key)
    needed = ROLE_RANK[role]
    handler = HANDLERS[key]

    async def callback(ctx: commands.Context, *, text: str = "") -> None:
        link.count("twitch_commands")
        await handler(link, ctx, text)

    def role_guard(ctx: commands.Context) -> bool:
        if chatter_rank(ctx.chatter) >= needed:
            return True
        e = commands.GuardFailure(f"{tw.prefix}{word} needs the role {role}", guard=role_guard)
        e.refusal = Refusal(key, f"{tw.prefix}{word}", role=role)  # type: ignore[attr-defined]
        raise e

    gate = CooldownGate(getattr(tw.user_cooldowns_s, key), getattr(tw.global_cooldowns_s, key))

    def cooldown_guard(ctx: commands.Context) -> bool:
        if _exempt(ctx):
            return True
        remaining = gate.take(str(ctx.chatter.id))
        if remaining > 0:
            e = commands.CommandOnCooldown(f"{tw.prefix}{word} is on cooldown for {remaining:.0f} s",
                                           cooldown=None, remaining=remaining)  # type: ignore[arg-type]
            e.refusal = Refusal(key, f"{tw.prefix}{word}", remaining_s=remaining)  # type: ignore[attr-defined]
            raise e
        return True

    # Role first: a refused command must not use up anyone's cooldown.
    callback.__command_guards__ = [role_guard, cooldown_guard]  # type: ignore[attr-defined]
    callback.__doc__ = f"!{word} ({key})"
    return commands.Command(callback, name=word)


def install_commands(bot: Any, link: TwitchLink) -> list[str]:
    """Add every enabled command (config word != "") to the bot; returns the words."""
    words = []
    for key in HANDLERS:
        if getattr(link.tw.commands, key):
            cmd = make_command(link, key)
            if bot.get_command(cmd.name) is None:
                bot.add_command(cmd)
            words.append(cmd.name)
    return words
