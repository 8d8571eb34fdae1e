"""Runs the real Twitch component (TwitchIO bot, outbox, polls, rewards) against FakeTwitch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from streamer import config
from streamer.control.twitch import component as twitch
from streamer.control.twitch.auth import BOT_SCOPES, BROADCASTER_SCOPES, TokenStore
from streamer.metrics import Metrics
from streamer.prompts import PromptBus
from streamer.store import Store
from streamer.testing.fake_twitch import FakeTwitch

OWNER, BOT, VIEWER, VIEWER2, MOD, VIP = "1000", "2000", "3001", "3002", "3003", "3004"


class _Harness(SimpleNamespace):
    def __repr__(self) -> str:  # keep assertion messages short (and free of the fake's tokens)
        return "<twitch harness>"


def make_settings(tmp_path: Path, moderation: dict[str, Any] | None = None, **twitch_overrides: Any) -> config.Settings:
    raw: dict[str, Any] = {
        "store": {"path": str(tmp_path / "streamer.db")},
        "moderation": moderation or {},
        "twitch": {"enabled": True, "client_id": FakeTwitch.client_id, "bot_id": BOT, "owner_id": OWNER,
                   **twitch_overrides},
    }
    return config.from_dict(raw)


@contextlib.asynccontextmanager
async def running_twitch(
    monkeypatch: Any,
    tmp_path: Path,
    make_control: Any,
    *,
    affiliate: bool = True,
    broadcaster_login: bool = True,
    moderation: dict[str, Any] | None = None,
    **twitch_overrides: Any,
) -> AsyncIterator[SimpleNamespace]:
    """Yields h with fake, settings, store, bus, control, component, link; the bot is connected and ready."""
    fake = FakeTwitch()
    await fake.start()
    fake.patch_twitchio(monkeypatch)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", fake.client_secret)
    fake.add_user(OWNER, "streamer", "affiliate" if affiliate else "")
    fake.add_user(BOT, "aibot")
    for uid, login in [(VIEWER, "viewer1"), (VIEWER2, "viewer2"), (MOD, "modguy"), (VIP, "vipper")]:
        fake.add_user(uid, login)
    settings = make_settings(tmp_path, moderation, **twitch_overrides)
    store = Store(settings.store.path)
    tokens = TokenStore(store)
    logins = [(BOT, "aibot", "bot", BOT_SCOPES)] + ([(OWNER, "streamer", "broadcaster", BROADCASTER_SCOPES)]
                                                     if broadcaster_login else [])
    for uid, login, role, scopes in logins:
        tok = fake.issue_token(uid, list(scopes))
        tokens.save(user_id=uid, login=login, role=role, access=tok.access, refresh=tok.refresh, scopes=scopes,
                    client_id=fake.client_id)
    bus = PromptBus("initial prompt", store=store)
    control = make_control(settings, store, bus)
    ctx = SimpleNamespace(settings=settings, bus=bus, store=store, metrics=Metrics(100), pipeline=None, control=control)
    component = twitch.build(ctx)
    assert component is not None
    task = asyncio.create_task(component.run())
    h = _Harness(fake=fake, settings=settings, store=store, bus=bus, control=control, component=component,
                        link=component.link, tokens=tokens, metrics=ctx.metrics, task=task)
    try:
        await asyncio.wait_for(component.link.ready.wait(), timeout=10)
        yield h
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await fake.stop()
        store.close()


def run_with_timeout(body: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
    """Run one async test body on a fresh event loop; a hang fails it after timeout_s, not pytest's 300 s."""
    return asyncio.run(asyncio.wait_for(body, timeout=timeout_s))


async def say(h: SimpleNamespace, user: str, text: str, *badges: str) -> None:
    await h.fake.chat(OWNER, user, text, list(badges))


async def settle(h: SimpleNamespace, seconds: float = 0.15) -> None:
    """Let dispatched handler tasks run (TwitchIO dispatches each event as its own task)."""
    await asyncio.sleep(seconds)


def sent_texts(h: SimpleNamespace) -> list[str]:
    return [m["message"] for m in h.fake.sent]


def counter(h: SimpleNamespace, name: str) -> int:
    return int(h.metrics.snapshot()["counters"].get(name, 0))


async def replies_to(h: SimpleNamespace, login: str, n: int = 1) -> list[str]:
    """Wait until the bot has answered @login n times; returns the answers (the outbox may have
    joined several answers into one chat message with " | ")."""
    def mine() -> list[str]:
        return [part for t in sent_texts(h) for part in t.split(" | ") if part.startswith(f"@{login} ")]
    await h.fake.wait_for(lambda: len(mine()) >= n)
    return mine()


def make_control(settings: config.Settings, store: Store, bus: PromptBus) -> Any:
    """The real control plane (moderation, approvals, governor, polls), as the app builds it."""
    from streamer.control.policy.plane import build_control_plane

    return build_control_plane(settings, store, bus)
