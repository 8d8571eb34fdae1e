"""Twitch login for a headless daemon: device-code flow, tokens kept in the daemon's SQLite Store.

`streamer twitch login --as bot|broadcaster` prints a code and a URL; the person approves it in any
browser, and the tokens land in the Store (table `twitch_tokens`), not in TwitchIO's
`.tio.tokens.json` (which a hard kill can lose). The daemon's bot loads them from there and writes
every refreshed pair back at once. Tokens and the client secret are never printed or logged:
`install_redaction()` scrubs them from every TwitchIO log line, because TwitchIO puts the OAuth
query string (client_secret, refresh_token) into its HTTPException messages.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from streamer import config as config_mod
from streamer.store import Store

log = logging.getLogger(__name__)

BOT_SCOPES = ("user:read:chat", "user:write:chat", "user:bot")
BROADCASTER_SCOPES = (
    "channel:bot",
    "channel:manage:polls",
    "channel:read:polls",
    "channel:read:redemptions",
    "channel:manage:redemptions",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS twitch_tokens (
    user_id TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    role TEXT NOT NULL,
    access_token TEXT NOT NULL,
    refresh_token TEXT NOT NULL,
    scopes TEXT NOT NULL,
    client_id TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class StoredToken:
    user_id: str
    login: str
    role: str  # "bot", "broadcaster" or "bot+broadcaster"
    access_token: str
    refresh_token: str
    scopes: tuple[str, ...]
    client_id: str

    def __repr__(self) -> str:  # never show the secrets, even in a traceback's locals
        return f"StoredToken(user_id={self.user_id!r}, login={self.login!r}, role={self.role!r}, scopes={self.scopes})"


class TokenStore:
    """User tokens in the Store, keyed by Twitch user id."""

    def __init__(self, store: Store) -> None:
        self._store = store
        store.ensure_schema(_SCHEMA)

    def save(self, *, user_id: str, login: str, role: str, access: str, refresh: str, scopes: list[str] | tuple[str, ...],
             client_id: str) -> None:
        redaction().add(access, refresh)
        self._store.execute(
            "INSERT INTO twitch_tokens (user_id, login, role, access_token, refresh_token, scopes, client_id, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET login=excluded.login,"
            " role=excluded.role, access_token=excluded.access_token, refresh_token=excluded.refresh_token,"
            " scopes=excluded.scopes, client_id=excluded.client_id, updated_at=excluded.updated_at",
            (user_id, login, role, access, refresh, " ".join(scopes), client_id, time.time()),
        )

    def update(self, user_id: str, access: str, refresh: str, scopes: list[str] | tuple[str, ...] | None = None) -> bool:
        """Write a refreshed pair; False when this user was never logged in here."""
        redaction().add(access, refresh)
        if not self._store.query("SELECT 1 FROM twitch_tokens WHERE user_id = ?", (user_id,)):
            return False
        if scopes is None:
            self._store.execute(
                "UPDATE twitch_tokens SET access_token=?, refresh_token=?, updated_at=? WHERE user_id=?",
                (access, refresh, time.time(), user_id),
            )
        else:
            self._store.execute(
                "UPDATE twitch_tokens SET access_token=?, refresh_token=?, scopes=?, updated_at=? WHERE user_id=?",
                (access, refresh, " ".join(scopes), time.time(), user_id),
            )
        return True

    def all(self, client_id: str | None = None) -> list[StoredToken]:
        rows = self._store.query("SELECT * FROM twitch_tokens ORDER BY user_id")
        tokens = [
            StoredToken(r["user_id"], r["login"], r["role"], r["access_token"], r["refresh_token"],
                        tuple(r["scopes"].split()), r["client_id"])
            for r in rows
        ]
        for t in tokens:
            redaction().add(t.access_token, t.refresh_token)
        return [t for t in tokens if client_id is None or t.client_id == client_id]

    def get(self, user_id: str) -> StoredToken | None:
        return next((t for t in self.all() if t.user_id == user_id), None)

    def remove(self, user_id: str) -> None:
        self._store.execute("DELETE FROM twitch_tokens WHERE user_id = ?", (user_id,))


# --------------------------------------------------------------------------- redaction


class _Redactor(logging.Filter):
    """Replaces known secrets and OAuth query parameters in log records before any handler sees them."""

    _PARAMS = re.compile(r"((?:client_secret|refresh_token|access_token|device_code|code|token)=)[^&\s'\"]+", re.I)
    _QUOTED = re.compile(r"(token: |Bearer |OAuth )\"?[A-Za-z0-9]{8,}\"?")

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, *values: str | None) -> None:
        self._secrets.update(v for v in values if v and len(v) >= 6)

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "<redacted>")
        text = self._PARAMS.sub(r"\1<redacted>", text)
        return self._QUOTED.sub(r"\1<redacted>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = self.scrub(message), None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, self.scrub(text)
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


_REDACTOR = _Redactor()


def redaction() -> _Redactor:
    return _REDACTOR


def install_redaction(secret: str | None = None) -> None:
    """Attach the redactor to every TwitchIO logger and ours (a logger filter only sees its own records)."""
    import twitchio  # noqa: F401  (loads its modules so their loggers exist)
    import twitchio.ext.commands  # noqa: F401

    _REDACTOR.add(secret)
    names = [n for n in logging.root.manager.loggerDict if n.startswith(("twitchio", "streamer.control"))]
    for name in names + ["twitchio", __name__, "streamer.control.twitch.component"]:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


# --------------------------------------------------------------------------- device-code flow


class LoginError(RuntimeError):
    """The device-code flow failed; the message says why and what to do."""


def _id_base() -> str:
    from twitchio.http import Route  # tests point Route.ID_BASE at a local fake

    return Route.ID_BASE


async def _post_form(session: aiohttp.ClientSession, url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=form) as resp:
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = {"message": (await resp.text())[:200]}
        return resp.status, body if isinstance(body, dict) else {}


async def device_login(
    client_id: str,
    scopes: tuple[str, ...],
    *,
    show: Any = print,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Run Twitch's device-code grant; returns {access_token, refresh_token, scopes, user_id, login}."""
    base = _id_base()
    async with aiohttp.ClientSession() as session:
        status, start = await _post_form(session, f"{base}oauth2/device", {"client_id": client_id, "scopes": " ".join(scopes)})
        if status != 200:
            raise LoginError(f"Twitch refused to start a device login ({status}: {start.get('message', '')}); "
                             "check twitch.client_id and that the app's client type allows device login")
        show(f"Open {start['verification_uri']} and enter the code {start['user_code']} (valid {start['expires_in'] // 60} min).")
        interval = max(1.0, float(start.get("interval", 5)))
        deadline = time.monotonic() + min(timeout_s, float(start.get("expires_in", timeout_s)))
        form = {"client_id": client_id, "scopes": " ".join(scopes), "device_code": start["device_code"],
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}
        while True:
            if time.monotonic() > deadline:
                raise LoginError("the code expired before it was approved; run the login again")
            await asyncio.sleep(interval)
            status, body = await _post_form(session, f"{base}oauth2/token", form)
            if status == 200:
                break
            message = str(body.get("message", "")).lower()
            if message == "authorization_pending":
                continue
            if message == "slow_down":
                interval += 5
                continue
            raise LoginError(f"login was not completed: {message or status}")
        redaction().add(body["access_token"], body["refresh_token"])
        async with session.get(f"{base}oauth2/validate", headers={"Authorization": f"OAuth {body['access_token']}"}) as resp:
            if resp.status != 200:
                raise LoginError(f"Twitch did not accept the new token ({resp.status})")
            info = await resp.json()
    return {"access_token": body["access_token"], "refresh_token": body["refresh_token"],
            "scopes": list(info.get("scopes") or body.get("scope") or []), "user_id": str(info["user_id"]),
            "login": str(info["login"])}


def scopes_for(role: str, settings: config_mod.TwitchSettings) -> tuple[str, ...]:
    """The scopes a login as `role` asks for; one account that is both bot and broadcaster gets both sets."""
    if settings.bot_id and settings.bot_id == settings.owner_id:
        return BOT_SCOPES + BROADCASTER_SCOPES
    return BOT_SCOPES if role == "bot" else BROADCASTER_SCOPES


def login_command(args: argparse.Namespace) -> int:
    """`streamer twitch login --as bot|broadcaster`."""
    settings = config_mod.load(args.config)
    tw = settings.twitch
    if not tw.client_id:
        print("twitch.client_id is empty: create an app at https://dev.twitch.tv/console/apps (see docs/twitch.md) "
              "and put its client id in the config", file=sys.stderr)
        return 2
    install_redaction(config_mod.secret("twitch_client_secret"))
    role = args.role
    scopes = scopes_for(role, tw)
    print(f"Logging in the {role} account with scopes: {' '.join(scopes)}")
    try:
        result = asyncio.run(device_login(tw.client_id, scopes))
    except (LoginError, aiohttp.ClientError, TimeoutError) as e:
        print(f"login failed: {e}", file=sys.stderr)
        return 1
    expected = tw.bot_id if role == "bot" else tw.owner_id
    if expected and expected != result["user_id"]:
        print(f"this login is {result['login']} (id {result['user_id']}), but twitch.{'bot_id' if role == 'bot' else 'owner_id'}"
              f" is {expected}: log in with the right account, or fix the config", file=sys.stderr)
        return 1
    stored_role = "bot+broadcaster" if tw.bot_id and tw.bot_id == tw.owner_id else role
    store = Store(settings.store.path)
    try:
        TokenStore(store).save(user_id=result["user_id"], login=result["login"], role=stored_role,
                               access=result["access_token"], refresh=result["refresh_token"],
                               scopes=result["scopes"], client_id=tw.client_id)
    finally:
        store.close()
    print(f"logged in as {result['login']} (user id {result['user_id']}); tokens stored in {settings.store.path}")
    if not expected:
        key = "bot_id" if role == "bot" else "owner_id"
        print(f"set twitch.{key} = \"{result['user_id']}\" in your config")
    return 0
