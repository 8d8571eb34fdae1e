"""Twitch as a daemon component: TwitchIO 3 bot (EventSub chat in, Helix replies out) that reconnects itself.

Wiring: chat commands (commands.py) call the control plane (governor, approvals, polls, kill switch);
native polls (polls.py) and the channel-points reward (rewards.py) use the broadcaster's token;
replies go through the rate-limited ChatOutbox; the TwitchLink (link.py) keeps all of that across
reconnects. Tokens come from the Store (auth.py), never from TwitchIO's token file, and every
refreshed pair is written back at once.

The video never waits on Twitch: everything here runs on the asyncio loop, handlers only touch the
PromptBus (a lock-protected swap) and SQLite, and the bot is rebuilt with backoff when it fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from streamer import config as config_mod
from streamer.control.twitch.auth import (
    BOT_SCOPES,
    StoredToken,
    TokenStore,
    install_redaction,
    redaction,
)
from streamer.control.twitch.chat_outbox import ChatOutbox
from streamer.control.twitch.commands import install_commands, on_command_error
from streamer.control.twitch.endpoints import EndpointError, apply_local_api
from streamer.control.twitch.link import TwitchLink
from streamer.doctor import Check

if TYPE_CHECKING:
    from streamer.app import AppContext
    from streamer.config import Settings, TwitchSettings

log = logging.getLogger(__name__)


class TwitchUnavailable(RuntimeError):
    """Twitch cannot be used as configured (missing login, secret, ...); the message says how to fix it."""


def make_bot(settings: TwitchSettings, secret: str, tokens: TokenStore, link: TwitchLink) -> Any:
    """A TwitchIO commands.Bot subclass instance; TwitchIO is imported here so `doctor` works without it."""
    import twitchio
    from twitchio import eventsub
    from twitchio.ext import commands

    class StreamerBot(commands.Bot):
        """Loads and saves tokens through the Store; hands commands, poll events and redemptions on."""

        def __init__(self) -> None:
            super().__init__(client_id=settings.client_id, client_secret=secret, bot_id=settings.bot_id,
                             owner_id=settings.owner_id, prefix=settings.prefix, case_insensitive=True)
            self.link = link

        async def load_tokens(self, path: str | None = None) -> None:
            for stored in tokens.all(settings.client_id):
                try:
                    await self.add_token(stored.access_token, stored.refresh_token)
                except twitchio.InvalidTokenException:
                    # The exception text carries the token itself: never log it.
                    log.error("the stored Twitch token of %s no longer works: run `streamer twitch login --as %s`",
                              stored.login, stored.role.split("+")[-1])

        async def add_token(self, token: str, refresh: str) -> Any:
            redaction().add(token, refresh)
            resp = await super().add_token(token, refresh)
            if resp.user_id:
                tokens.update(resp.user_id, self.tokens[resp.user_id]["token"], self.tokens[resp.user_id]["refresh"],
                              resp.scopes)
            return resp

        async def save_tokens(self, path: str | None = None) -> None:
            for user_id, data in dict(self.tokens).items():
                tokens.update(user_id, data["token"], data["refresh"])

        async def event_token_refreshed(self, payload: Any) -> None:
            redaction().add(payload.token, payload.refresh_token)
            tokens.update(payload.user_id, payload.token, payload.refresh_token, payload.scopes.selected)
            log.info("Twitch token of user %s refreshed and stored", payload.user_id)

        async def setup_hook(self) -> None:
            if settings.bot_id not in self.tokens:
                raise TwitchUnavailable("the bot account is not logged in: run `streamer twitch login --as bot`")
            await self.subscribe_websocket(
                eventsub.ChatMessageSubscription(broadcaster_user_id=settings.owner_id, user_id=settings.bot_id),
                token_for=settings.bot_id,
            )
            if settings.owner_id in self.tokens:
                subs: list[Any] = []
                if settings.polls != "chat":
                    subs += [eventsub.ChannelPollBeginSubscription(broadcaster_user_id=settings.owner_id),
                             eventsub.ChannelPollProgressSubscription(broadcaster_user_id=settings.owner_id),
                             eventsub.ChannelPollEndSubscription(broadcaster_user_id=settings.owner_id)]
                if settings.reward_enabled:
                    subs.append(eventsub.ChannelPointsRedeemAddSubscription(broadcaster_user_id=settings.owner_id))
                for sub in subs:
                    try:
                        await self.subscribe_websocket(sub, token_for=settings.owner_id)
                    except twitchio.HTTPException as e:
                        log.warning("Twitch refused the %s subscription (%s); log the broadcaster in again with "
                                    "`streamer twitch login --as broadcaster`", sub.type, e.status)
            else:
                log.warning("the broadcaster is not logged in: native polls and channel points are off "
                            "(`streamer twitch login --as broadcaster`)")
            install_commands(self, self.link)
            await self.link.attach(self)

        async def event_ready(self) -> None:
            log.info("Twitch connected: bot %s in channel %s", settings.bot_id, settings.owner_id)
            self.link.ready.set()

        async def event_message(self, payload: Any) -> None:
            self.link.count("twitch_chat_messages")
            await super().event_message(payload)

        async def event_command_error(self, payload: commands.CommandErrorPayload) -> None:
            on_command_error(self.link, payload)

        async def event_custom_redemption_add(self, payload: Any) -> None:
            await self.link.rewards.on_redemption(payload)

        async def event_poll_begin(self, payload: Any) -> None:
            self.link.polls.on_event("begin", payload)

        async def event_poll_progress(self, payload: Any) -> None:
            self.link.polls.on_event("progress", payload)

        async def event_poll_end(self, payload: Any) -> None:
            self.link.polls.on_event("end", payload)

        async def event_error(self, payload: Any) -> None:
            log.error("Twitch event handler %s failed: %s: %s", getattr(payload.listener, "__qualname__", "?"),
                      type(payload.error).__name__, payload.error)

    return StreamerBot()


class TwitchComponent:
    """Runs the bot and the chat outbox; rebuilds the bot with backoff when Twitch is unreachable."""

    name = "twitch"

    def __init__(self, settings: Settings, link: TwitchLink, tokens: TokenStore, secret: str) -> None:
        self.settings = settings
        self.tw = settings.twitch
        self.link = link
        self.tokens = tokens
        self.secret = secret
        self.bot: Any = None

    async def _run_bot(self) -> None:
        self.bot = make_bot(self.tw, self.secret, self.tokens, self.link)
        try:
            await self.bot.start(with_adapter=False, load_tokens=True, save_tokens=True)
        finally:
            self.link.ready.clear()
            self.link.detach()
            await self.bot.close()

    async def run(self) -> None:
        install_redaction(self.secret)
        delay = self.tw.reconnect_initial_s
        last_error = ""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.link.outbox.run(), name="twitch-outbox")
            tg.create_task(self.link.housekeeping(), name="twitch-housekeeping")
            while True:
                try:
                    await self._run_bot()
                    error = "the Twitch client stopped"
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    error = f"{type(e).__name__}: {redaction().scrub(str(e))[:300]}"
                if error != last_error:  # say it once, not every retry
                    log.error("Twitch unavailable (%s); retrying with backoff up to %.0f s", error, self.tw.reconnect_max_s)
                    last_error = error
                else:
                    log.debug("Twitch still unavailable (%s); retry in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.tw.reconnect_max_s)


def build(ctx: AppContext) -> TwitchComponent | None:
    """The daemon's Twitch component, or None when `twitch.enabled` is false."""
    tw = ctx.settings.twitch
    if not tw.enabled:
        return None
    secret = config_mod.secret("twitch_client_secret")
    if not secret:
        log.error("Twitch is enabled but TWITCH_CLIENT_SECRET is not set: Twitch control is off (see docs/twitch.md)")
        return None
    try:
        import twitchio  # noqa: F401
    except ImportError:
        log.error("Twitch is enabled but twitchio is not installed: pip install 'streamer[twitch]'")
        return None
    try:
        apply_local_api()  # STREAMER_TWITCH_API_BASE: a local fake Twitch (tests, `streamer soak`)
    except EndpointError as e:
        log.error("Twitch control is off: %s", e)
        return None
    tokens = TokenStore(ctx.store)
    link = TwitchLink(ctx.settings, ctx.control, ctx.store, metrics=ctx.metrics,
                      outbox=ChatOutbox(lambda text, reply: link.send_chat(text, reply),
                                        per_window=100 if tw.bot_is_moderator or tw.bot_id == tw.owner_id else 20,
                                        max_queue=tw.outbox_max,
                                        on_drop=lambda n: ctx.metrics.count("twitch_outbox_dropped", n)))
    return TwitchComponent(ctx.settings, link, tokens, secret)


# --------------------------------------------------------------------------- doctor


def doctor_checks(settings: Settings) -> Iterable[Check]:
    """App id, secret, and per account: the stored login, its scopes as Twitch reports them, the token's state."""
    tw = settings.twitch
    if not tw.enabled:
        yield Check("twitch", "OK", "disabled (twitch.enabled = false)")
        return
    secret = config_mod.secret("twitch_client_secret")
    yield Check("twitch client id", "OK" if tw.client_id else "FAIL", tw.client_id or "twitch.client_id is empty",
                "create an app at https://dev.twitch.tv/console/apps and set twitch.client_id (docs/twitch.md)")
    yield Check("twitch client secret", "OK" if secret else "FAIL",
                "TWITCH_CLIENT_SECRET is set" if secret else "TWITCH_CLIENT_SECRET is not set",
                "export TWITCH_CLIENT_SECRET=<the app's secret> before starting the daemon")
    from streamer.store import Store

    try:
        store = Store(settings.store.path)
    except Exception as e:
        yield Check("twitch tokens", "FAIL", f"cannot open the store {settings.store.path}: {e}", "fix store.path")
        return
    try:
        stored = {t.user_id: t for t in TokenStore(store).all(tw.client_id)}
    finally:
        store.close()
    validated: dict[str, tuple[int, dict[str, Any]] | Exception] = {}  # one call per account (bot may be owner)
    for role, user_id, required in [("bot", tw.bot_id, True), ("broadcaster", tw.owner_id, False)]:
        token = stored.get(user_id)
        if token is None:
            yield Check(f"twitch {role} login", "FAIL" if required else "WARN",
                        f"no stored token for user {user_id or '(unset)'}"
                        + ("" if required else ": native polls and channel points are off"),
                        f"streamer twitch login --as {role}")
            continue
        if user_id not in validated:
            validated[user_id] = _validate(token.access_token)
        yield from _token_checks(role, token, tw, validated[user_id])


def required_scopes(role: str, tw: TwitchSettings) -> list[tuple[str, ...]]:
    """What the account's token must carry; each entry is met by any one of its scopes (Twitch accepts a
    manage scope wherever the matching read scope is asked for). Features switched off need nothing."""
    if role == "bot":
        return [(s,) for s in BOT_SCOPES]
    need: list[tuple[str, ...]] = [("channel:bot",)]
    if tw.polls != "chat":
        need += [("channel:manage:polls",), ("channel:read:polls", "channel:manage:polls")]
    if tw.reward_enabled:
        need += [("channel:manage:redemptions",), ("channel:read:redemptions", "channel:manage:redemptions")]
    return need


def _missing(need: list[tuple[str, ...]], granted: Iterable[str]) -> list[str]:
    have = set(granted)
    return [alternatives[0] for alternatives in need if not have.intersection(alternatives)]


def _validate(access: str) -> tuple[int, dict[str, Any]] | Exception:
    """GET oauth2/validate for a token: (status, body), or the exception when Twitch cannot be reached."""
    import aiohttp
    from twitchio.http import Route  # tests point Route.ID_BASE at a local fake

    async def validate() -> tuple[int, dict[str, Any]]:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{Route.ID_BASE}oauth2/validate", headers={"Authorization": f"OAuth {access}"}) as r:
                body = (await r.json(content_type=None)) if r.status == 200 else {}
                return r.status, body if isinstance(body, dict) else {}

    try:
        return asyncio.run(validate())
    except Exception as e:  # network, DNS, timeout, a non-JSON answer: Twitch is not usable from here now
        return e


def _token_checks(role: str, token: StoredToken, tw: TwitchSettings, answer: tuple[int, dict[str, Any]] | Exception) -> Iterable[Check]:
    """The scopes Twitch reports for the token (the stored list only when Twitch cannot tell), then the token."""
    fix = f"streamer twitch login --as {role}"
    need = required_scopes(role, tw)
    wanted = " ".join(a[0] for a in need)
    if isinstance(answer, tuple) and answer[0] == 200 and answer[1].get("client_id") == tw.client_id:
        missing = _missing(need, answer[1].get("scopes") or ())
        yield Check(f"twitch {role} scopes", "FAIL" if missing else "OK",
                    f"{token.login}: Twitch says the token lacks {' '.join(missing)}" if missing
                    else f"{token.login}: {wanted} (confirmed by Twitch)", fix)
    else:
        # Not verified (unreachable, expired access token, other app): the stored list is the best guess.
        missing = _missing(need, token.scopes)
        yield Check(f"twitch {role} scopes", "WARN" if missing else "OK",
                    f"{token.login}: the stored list lacks {' '.join(missing)} (not confirmed by Twitch)" if missing
                    else f"{token.login}: {wanted} (stored list; not confirmed by Twitch)", fix)
    yield _validate_check(role, answer, tw.client_id)


def _validate_check(role: str, answer: tuple[int, dict[str, Any]] | Exception, client_id: str) -> Check:
    """What Twitch's validate endpoint said about the token (WARN, not FAIL, when Twitch cannot be reached)."""
    if isinstance(answer, Exception):
        return Check(f"twitch {role} token", "WARN", f"could not reach Twitch to validate it ({type(answer).__name__})",
                     "check the network; the daemon validates again when it connects")
    status, body = answer
    if status == 401:
        # Expired access tokens are refreshed by the daemon; only a dead refresh token needs a new login.
        return Check(f"twitch {role} token", "WARN", "access token expired (the daemon refreshes it on start)",
                     f"if the daemon then reports an invalid token: streamer twitch login --as {role}")
    if status != 200:
        return Check(f"twitch {role} token", "WARN", f"validate answered {status}", "try again later")
    if body.get("client_id") != client_id:
        return Check(f"twitch {role} token", "FAIL", "the token belongs to another app (client id differs)",
                     f"streamer twitch login --as {role}")
    return Check(f"twitch {role} token", "OK", f"valid for {int(body.get('expires_in', 0)) // 60} more minutes")
