"""What the fake Twitch knows, and the wire-level helpers every part of it shares.

`FakeTwitchState` is the one dataclass that holds users, tokens, EventSub sessions and subscriptions,
polls, rewards, redemptions and the records the tests read (`sent`, `requests`, `refreshes`); the
route and websocket mixins in this package all act on it. It lives apart from them so that each
mixin reads and writes the same fields without importing another, and so that the test-side
waiting (`wait_for`, woken by `_wake` whenever the fake changes) is written once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def twitch_time() -> str:
    """Now, as Twitch writes timestamps (RFC 3339, UTC, microseconds)."""
    return dt.datetime.now(dt.UTC).strftime(TIME_FORMAT)


def error_response(status: int, message: str) -> web.Response:
    """An error as Helix and OAuth send it: the status, its reason phrase and a message."""
    reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    return web.json_response(
        {"error": reason.get(status, "Error"), "status": status, "message": message}, status=status
    )


@dataclass
class FakeUser:
    id: str
    login: str
    broadcaster_type: str = ""  # "", "affiliate" or "partner"

    def helix(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "login": self.login,
            "display_name": self.login.capitalize(),
            "type": "",
            "broadcaster_type": self.broadcaster_type,
            "description": "",
            "profile_image_url": f"https://static-cdn.jtvnw.net/jtv_user_pictures/{self.login}-profile_image-300x300.png",
            "offline_image_url": "",
            "view_count": 0,
            "created_at": "2016-12-14T20:32:28Z",
        }


@dataclass
class Token:
    access: str
    refresh: str
    user_id: str | None  # None = app token
    scopes: list[str]
    valid: bool = True


@dataclass
class Session:
    id: str
    ws: web.WebSocketResponse
    open: bool = True


@dataclass
class FakeTwitchState:
    """One fake Twitch's data: a broadcaster, a bot and any number of chatters, and what they did."""

    client_id: str = "fakeclientid0000000000000000000"
    client_secret: str = "fakeclientsecret00000000000000"
    keepalive_s: float = 10.0
    users: dict[str, FakeUser] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    refresh_index: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    sent_times: list[float] = field(default_factory=list)
    polls: dict[str, dict[str, Any]] = field(default_factory=dict)
    rewards: dict[str, dict[str, Any]] = field(default_factory=dict)
    redemptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    device_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    refreshes: int = 0
    _runner: web.AppRunner | None = None
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)

    # ------------------------------------------------------------------ setup

    def add_user(self, user_id: str, login: str, broadcaster_type: str = "") -> FakeUser:
        self.users[user_id] = FakeUser(user_id, login, broadcaster_type)
        return self.users[user_id]

    def issue_token(self, user_id: str | None, scopes: list[str]) -> Token:
        tok = Token(access=secrets.token_hex(15), refresh=secrets.token_hex(25), user_id=user_id, scopes=list(scopes))
        self.tokens[tok.access] = tok
        self.refresh_index[tok.refresh] = tok.access
        return tok

    def expire_token(self, access: str) -> None:
        """The next request with this token gets 401 "Invalid OAuth token" (it must be refreshed)."""
        self.tokens[access].valid = False

    def user_token(self, user_id: str) -> Token:
        return next(t for t in self.tokens.values() if t.user_id == user_id and t.valid)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ waiting

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until predicate() is true, woken by fake-side changes (with a short poll as a safety net)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not reached in time")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout=min(left, 0.05))
            except TimeoutError:
                pass
