"""The chat commands: each one reads top to bottom here, from the chat word to the control plane call.

Every command word, its least role and its per-chatter and channel-wide cooldowns come from
`[twitch]` config, so the commands are built at runtime as TwitchIO `Command`s with a role guard and
a cooldown guard (moderators and the broadcaster are exempt from cooldowns). A handler receives a
`Chat` (who asked, the text after the word, how to answer) and calls the control plane itself:
audience text only ever reaches the model through `governor.propose`. Refusals for role and
cooldown are counted in the metrics and, with `twitch.reply_on_refusal`, answered briefly in chat,
throttled by `refusals.RefusalReplies` (a flood of "you can't" replies would itself be spam).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamer.control.policy.approvals import ApprovalError
from streamer.control.policy.poll_spec import PollError, PollSpec
from streamer.control.twitch.chat_outbox import clip
from streamer.control.twitch.link import TwitchLink
from streamer.control.twitch.polls import PollsUnsupported
from streamer.control.twitch.refusals import Refusal

if TYPE_CHECKING:
    from twitchio.ext import commands

    from streamer.control.policy.governor import Proposal

log = logging.getLogger(__name__)

SOURCE = "twitch"  # the source the governor and the audit log name for chat commands
ROLE_RANK = {"everyone": 0, "subscriber": 1, "vip": 2, "moderator": 3, "broadcaster": 4}
POLL_TITLE = "What should the stream look like?"


def chatter_rank(chatter: object) -> int:
    """The chatter's highest role (a PartialUser without badges counts as everyone)."""
    if getattr(chatter, "broadcaster", False):
        return ROLE_RANK["broadcaster"]
    if getattr(chatter, "moderator", False) or getattr(chatter, "lead_moderator", False):
        return ROLE_RANK["moderator"]
    if getattr(chatter, "vip", False):
        return ROLE_RANK["vip"]
    if getattr(chatter, "subscriber", False) or getattr(chatter, "founder", False):
        return ROLE_RANK["subscriber"]
    return ROLE_RANK["everyone"]


@dataclass(frozen=True, slots=True)
class Chat:
    """What a command handler receives: who sent the command, the text after its word, and the link it
    answers through (whose `control` is the control plane it acts on)."""

    link: TwitchLink
    chatter_id: str
    chatter_name: str
    rank: int  # ROLE_RANK of the chatter's highest role
    message_id: str | None
    text: str

    @classmethod
    def of(cls, link: TwitchLink, ctx: commands.Context[Any], text: str) -> Chat:
        """From TwitchIO's command context (the only place that reads it)."""
        return cls(link, str(ctx.chatter.id), ctx.chatter.name or "", chatter_rank(ctx.chatter),
                   getattr(ctx.message, "id", None), text)

    def reply(self, answer: str) -> None:
        self.link.reply(self.chatter_name, self.message_id, answer)

    def meta(self) -> dict[str, Any]:
        """Handed to the governor with a proposal, and back to its listeners."""
        return {"user_id": self.chatter_id, "message_id": self.message_id, "rank": self.rank}


def parse_poll(text: str, default_s: int) -> tuple[list[str], int]:
    """'a | b | c 90' -> (['a', 'b', 'c'], 90); a trailing number on the last choice is the length."""
    seconds = default_s
    m = re.search(r"\s(\d{1,4})\s*$", " " + text)
    if m and "|" in text[: m.start()]:
        seconds = int(m.group(1))
        text = text[: m.start() - 1] if m.start() > 0 else ""
    options = [o.strip() for o in text.split("|")]
    return [o for o in options if o], seconds


def describe(p: Proposal) -> str:
    """A short chat answer for a governor outcome (never echoes a blocked term)."""
    if p.status == "applied":
        return f"prompt is now: {clip(p.text, 200)}"
    if p.status == "queued":
        return f"waiting for a mod (#{p.id})" if p.id else "waiting for a mod"
    return f"not used: {p.reason or p.status}"


# ---------------------------------------------------------------------------- the commands


async def cmd_ai(chat: Chat) -> None:
    tw = chat.link.tw
    if not chat.text.strip():
        chat.reply(f"usage: {tw.prefix}{tw.commands.ai} <what the stream should look like>")
        return
    governor = chat.link.control.governor
    chat.reply(describe(governor.propose(chat.text, source=SOURCE, author=chat.chatter_name, meta=chat.meta())))


async def cmd_style(chat: Chat) -> None:
    """A curated look by name; moderation maps the name to the streamer's preset prompt."""
    governor = chat.link.control.governor
    presets = governor.moderation.presets()
    wanted = chat.text.strip().casefold()
    match = next((name for name in presets if name.casefold() == wanted), None)
    if match is None:
        chat.reply(f"not used: unknown style; try one of: {', '.join(sorted(presets)) or 'none configured'}")
        return
    p = governor.propose(match, source=SOURCE, author=chat.chatter_name, meta={**chat.meta(), "preset": match})
    chat.reply(describe(p))


async def cmd_vote(chat: Chat) -> None:
    try:
        chat.link.control.polls.vote(chat.chatter_id, chat.text.strip())
    except PollError as e:
        chat.reply(str(e))


async def cmd_aiqueue(chat: Chat) -> None:
    """Numbers and names only: a request's text reaches chat (and the stream) once a moderator approved it,
    never while it waits (moderators read it where it was typed)."""
    control = chat.link.control
    items = control.approvals.pending()
    if not items:
        chat.reply("nothing waits for approval")
        return
    name = control.moderation.public_name
    listed = ", ".join(f"#{i.id} ({name(i.author)})" for i in items[:8])
    chat.reply(f"{len(items)} waiting: {listed}" + (" …" if len(items) > 8 else ""))


async def cmd_approve(chat: Chat) -> None:
    """Moderation checks the text again first: one it refuses now is answered as refused, never approved."""
    try:
        item = chat.link.control.approvals.approve(chat.text.strip().lstrip("#"), by=chat.chatter_name)
    except ApprovalError as e:
        chat.reply(f"not used: {e}")
    else:
        chat.reply(f"#{item.id} approved" if item.status == "approved"
                   else f"not used: #{item.id} was refused by moderation ({item.reason})")
    await chat.link.rewards.settle()


async def cmd_deny(chat: Chat) -> None:
    ref, _, reason = chat.text.strip().partition(" ")
    try:
        item = chat.link.control.approvals.deny(ref.lstrip("#"), by=chat.chatter_name, reason=reason.strip())
    except ApprovalError as e:
        chat.reply(f"not used: {e}")
    else:
        chat.reply(f"#{item.id} denied")
    await chat.link.rewards.settle()


async def cmd_poll(chat: Chat) -> None:
    """A native Twitch poll when the channel can run one; with `twitch.polls = "auto"` chat votes
    (!vote) from the first time Twitch refuses."""
    tw, polls = chat.link.tw, chat.link.control.polls
    options, seconds = parse_poll(chat.text, tw.poll_seconds)
    if len(options) < 2:
        chat.reply(f"usage: {tw.prefix}{tw.commands.poll} option a | option b [| ...] [seconds]")
        return
    try:
        spec = PollSpec(POLL_TITLE, tuple(options), seconds)
        try:
            snap = await polls.start(spec, by=chat.chatter_name)
        except PollsUnsupported as e:
            if tw.polls != "auto":
                chat.reply(str(e))
                return
            log.warning("%s: using chat votes from now on", e)
            polls.set_default_backend(None)
            snap = await polls.start(spec, by=chat.chatter_name, backend="chat")
    except (ValueError, PollError) as e:
        chat.reply(str(e))
        return
    choices = " ".join(f"[{i + 1}] {c}" for i, c in enumerate(snap.choices))
    where = "vote with !vote <number>" if snap.backend == "chat" else "vote in the poll above the chat"
    chat.link.say(f"POLL ({snap.seconds} s): {choices} -- {where}")


async def cmd_aioff(chat: Chat) -> None:
    chat.link.control.governor.kill(chat.chatter_name, source=SOURCE)
    chat.reply("AI off (camera passes through)")


async def cmd_aion(chat: Chat) -> None:
    chat.link.control.governor.revive(chat.chatter_name, source=SOURCE)
    chat.reply("AI on")


async def cmd_strength(chat: Chat) -> None:
    tw = chat.link.tw
    try:
        value = float(chat.text.strip())
        if not 0.0 <= value <= 1.0:
            raise ValueError
    except ValueError:
        chat.reply(f"usage: {tw.prefix}{tw.commands.strength} <a number from 0 to 1>")
        return
    chat.link.control.governor.set_strength(value, chat.chatter_name, source=SOURCE)
    chat.reply(f"strength {value:g}")


Handler = Callable[[Chat], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "ai": cmd_ai, "style": cmd_style, "vote": cmd_vote, "aiqueue": cmd_aiqueue, "approve": cmd_approve,
    "deny": cmd_deny, "poll": cmd_poll, "aioff": cmd_aioff, "aion": cmd_aion, "strength": cmd_strength,
}


# ---------------------------------------------------------------------------- guards and wiring


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


def make_command(link: TwitchLink, key: str) -> commands.Command[Any, ...]:
    """The TwitchIO Command for one config key, with its role guard and cooldown guard."""
    from twitchio.ext import commands

    tw = link.tw
    word: str = getattr(tw.commands, key)
    role: str = getattr(tw.roles, key)
    needed = ROLE_RANK[role]
    handler = HANDLERS[key]

    async def callback(ctx: commands.Context[Any], *, text: str = "") -> None:
        link.count("twitch_commands")
        await handler(Chat.of(link, ctx, text))

    def role_guard(ctx: commands.Context[Any]) -> bool:
        if chatter_rank(ctx.chatter) >= needed:
            return True
        e = commands.GuardFailure(f"{tw.prefix}{word} needs the role {role}", guard=role_guard)
        e.refusal = Refusal(key, f"{tw.prefix}{word}", role=role)  # type: ignore[attr-defined]
        raise e

    gate = CooldownGate(getattr(tw.user_cooldowns_s, key), getattr(tw.global_cooldowns_s, key))

    def cooldown_guard(ctx: commands.Context[Any]) -> bool:
        if chatter_rank(ctx.chatter) >= ROLE_RANK["moderator"]:  # moderators and the broadcaster: exempt
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


def install_commands(bot: commands.Bot, link: TwitchLink) -> list[str]:
    """Add every enabled command (config word != "") to the bot; returns the words."""
    words = []
    for key in HANDLERS:
        if getattr(link.tw.commands, key):
            cmd = make_command(link, key)
            if bot.get_command(cmd.name) is None:
                bot.add_command(cmd)
            words.append(cmd.name)
    return words


def on_command_error(link: TwitchLink, payload: commands.CommandErrorPayload) -> None:
    """The bot's event_command_error: count refusals (and answer them, throttled), show the usage."""
    from twitchio.ext import commands

    e, ctx = payload.exception, payload.context
    if isinstance(e, commands.CommandNotFound):
        return
    if isinstance(e, commands.CommandOnCooldown):  # a GuardFailure subclass: test it first
        link.count("twitch_command_cooldown")
        _answer_refusal(link, ctx, e)
        return
    if isinstance(e, commands.GuardFailure):
        link.count("twitch_command_forbidden")
        _answer_refusal(link, ctx, e)
        return
    if isinstance(e, commands.MissingRequiredArgument | commands.ConversionError | commands.BadArgument):
        command = ctx.command
        name, signature = (command.name, getattr(command, "signature", None)) if command else ("?", None)
        Chat.of(link, ctx, "").reply(f"usage: {link.tw.prefix}{name}{signature or ''}")
        return
    original = getattr(e, "original", e)
    log.error("Twitch command %s failed: %s: %s", getattr(ctx.command, "name", "?"), type(original).__name__, original)


def _answer_refusal(link: TwitchLink, ctx: commands.Context[Any], e: Exception) -> None:
    refusal = getattr(e, "refusal", None)
    if not (link.tw.reply_on_refusal and link.tw.replies and isinstance(refusal, Refusal)):
        return
    if link.refusals.allow(str(ctx.chatter.id), refusal):
        Chat.of(link, ctx, "").reply(refusal.text())
    else:
        link.count("twitch_refusal_replies_skipped")
