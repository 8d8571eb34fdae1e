"""A local fake of Twitch (OAuth, Helix, EventSub websocket) that speaks the real wire formats.

The real TwitchIO client is pointed at it by patching `twitchio.http.Route.BASE` / `Route.ID_BASE`
and `twitchio.eventsub.websockets.WSS` (`FakeTwitch.patch_twitchio`), or, in a daemon started as a
child process, through STREAMER_TWITCH_API_BASE (`FakeTwitch.daemon_env`). Payloads are complete,
field for field as in dev.twitch.tv's reference: TwitchIO swallows a KeyError from a missing field
inside its listener and the command then silently never fires, so a partial fake would hide bugs.

Test hooks (`chat`, `vote`, `finish_poll`, `redeem`, `session_reconnect`, `drop_sessions`, `expire_token`) inject
what a real channel would produce; `sent`, `polls`, `redemptions` record what the client did.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _err(status: int, message: str) -> web.Response:
    reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    return web.json_response({"error": reason.get(status, "Error"), "status": status, "message": message}, status=status)


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
class FakeTwitch:
    """One fake Twitch with a broadcaster, a bot and any number of chatters."""

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

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_post("/oauth2/device", self._device)
        app.router.add_get("/oauth2/validate", self._validate)
        app.router.add_post("/oauth2/revoke", self._revoke)
        app.router.add_get("/ws", self._websocket)
        app.router.add_route("*", "/helix/{path:.*}", self._helix)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for s in list(self.sessions.values()):
            if s.open:
                await s.ws.close()
        if self._runner:
            await self._runner.cleanup()

    def patch_twitchio(self, monkeypatch: Any) -> None:
        """Point this process's TwitchIO at the fake (a daemon in another process: `daemon_env`)."""
        from streamer.control.twitch.endpoints import overrides

        for target, attribute, value in overrides(self.base):
            monkeypatch.setattr(target, attribute, value)

    def daemon_env(self) -> dict[str, str]:
        """The environment that points a daemon started as a child process at this fake."""
        from streamer.control.twitch.endpoints import ENV

        return {ENV: self.base, "TWITCH_CLIENT_SECRET": self.client_secret}

    # ------------------------------------------------------------------ OAuth

    async def _params(self, request: web.Request) -> dict[str, str]:
        # TwitchIO sends OAuth parameters in the query string; other clients send a form body. Twitch takes both.
        params = dict(request.query)
        if request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _token(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p.get("client_id") != self.client_id:
            return _err(400, "invalid client")
        grant = p.get("grant_type")
        if grant == "client_credentials":
            if p.get("client_secret") != self.client_secret:
                return _err(403, "invalid client secret")
            tok = self.issue_token(None, [])
            return web.json_response({"access_token": tok.access, "expires_in": 5011271, "token_type": "bearer"})
        if grant == "refresh_token":
            if p.get("client_secret", self.client_secret) != self.client_secret:
                return _err(403, "invalid client secret")
            old_access = self.refresh_index.pop(p.get("refresh_token", ""), None)
            if old_access is None:
                return _err(400, "Invalid refresh token")
            old = self.tokens.pop(old_access)
            tok = self.issue_token(old.user_id, old.scopes)
            self.refreshes += 1
            return web.json_response(
                {"access_token": tok.access, "refresh_token": tok.refresh, "expires_in": 14124, "scope": tok.scopes,
                 "token_type": "bearer"}
            )
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            entry = self.device_codes.get(p.get("device_code", ""))
            if entry is None:
                return _err(400, "invalid device code")
            if entry["user_id"] is None:
                return _err(400, "authorization_pending")
            del self.device_codes[p["device_code"]]
            tok = self.issue_token(entry["user_id"], entry["scopes"])
            return web.json_response(
                {"access_token": tok.access, "expires_in": 14124, "refresh_token": tok.refresh, "scope": tok.scopes,
                 "token_type": "bearer"}
            )
        return _err(400, "unsupported grant type")

    async def _device(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p.get("client_id") != self.client_id:
            return _err(400, "invalid client")
        device_code = secrets.token_hex(20)
        user_code = secrets.token_hex(4).upper()
        scopes = p.get("scopes", "").replace("+", " ").split()
        self.device_codes[device_code] = {"user_code": user_code, "scopes": scopes, "user_id": None}
        return web.json_response(
            {"device_code": device_code, "expires_in": 1800, "interval": 1, "user_code": user_code,
             "verification_uri": f"https://www.twitch.tv/activate?public=true&device-code={user_code}"}
        )

    def approve_device(self, user_code: str, user_id: str) -> None:
        """What the person does in the browser: approve the code as this user."""
        for entry in self.device_codes.values():
            if entry["user_code"] == user_code:
                entry["user_id"] = user_id
                return
        raise KeyError(user_code)

    async def _validate(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        tok = self.tokens.get(auth.removeprefix("OAuth ").removeprefix("Bearer "))
        if tok is None or not tok.valid:
            return _err(401, "invalid access token")
        body: dict[str, Any] = {"client_id": self.client_id, "scopes": tok.scopes, "expires_in": 14124}
        if tok.user_id is not None:
            body.update({"login": self.users[tok.user_id].login, "user_id": tok.user_id})
        return web.json_response(body)

    async def _revoke(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        self.tokens.pop(p.get("token", ""), None)
        return web.Response(status=200)

    # ------------------------------------------------------------------ Helix

    def _auth(self, request: web.Request) -> Token | web.Response:
        if request.headers.get("Client-ID", request.headers.get("Client-Id")) != self.client_id:
            return _err(401, "Client ID and OAuth token do not match")
        tok = self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if tok is None or not tok.valid:
            return _err(401, "Invalid OAuth token")
        return tok

    async def _helix(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"].rstrip("/")
        tok = self._auth(request)
        if isinstance(tok, web.Response):
            self.requests.append((request.method, path, tok.status))
            return tok
        handler = getattr(self, "_h_" + request.method.lower() + "_" + path.replace("/", "_"), None)
        resp = _err(404, f"no such endpoint {path}") if handler is None else await handler(request, tok)
        self.requests.append((request.method, path, resp.status))
        return resp

    async def _h_get_users(self, request: web.Request, tok: Token) -> web.Response:
        ids = request.query.getall("id", [])
        logins = request.query.getall("login", [])
        if not ids and not logins and tok.user_id:
            ids = [tok.user_id]
        data = [u.helix() for u in self.users.values() if u.id in ids or u.login in logins]
        return web.json_response({"data": data})

    def _need(self, tok: Token, user_id: str, *scopes: str) -> web.Response | None:
        if tok.user_id != user_id:
            return _err(401, "The ID in broadcaster_id must match the user ID found in the request's OAuth token.")
        if not any(s in tok.scopes for s in scopes):
            return _err(401, f"Missing scope: {scopes[0]}")
        return None

    async def _h_post_eventsub_subscriptions(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        transport = body.get("transport", {})
        session = self.sessions.get(transport.get("session_id", ""))
        if transport.get("method") != "websocket" or session is None or not session.open:
            return _err(400, "websocket transport session does not exist or has already disconnected")
        if tok.user_id is None:
            return _err(400, "websocket transport cannot be used with an app access token")
        cond = body.get("condition", {})
        kind = body.get("type", "")
        required = {
            "channel.chat.message": (cond.get("user_id"), ("user:read:chat",)),
            "channel.poll.begin": (cond.get("broadcaster_user_id"), ("channel:read:polls", "channel:manage:polls")),
            "channel.poll.progress": (cond.get("broadcaster_user_id"), ("channel:read:polls", "channel:manage:polls")),
            "channel.poll.end": (cond.get("broadcaster_user_id"), ("channel:read:polls", "channel:manage:polls")),
            "channel.channel_points_custom_reward_redemption.add": (
                cond.get("broadcaster_user_id"), ("channel:read:redemptions", "channel:manage:redemptions")),
        }
        if kind not in required:
            return _err(400, f"unsupported subscription type {kind}")
        user, scopes = required[kind]
        if (problem := self._need(tok, str(user), *scopes)) is not None:
            return problem
        for sub in self.subscriptions.values():
            if sub["type"] == kind and sub["condition"] == cond and sub["transport"]["session_id"] == session.id:
                return _err(409, f"subscription already exists id={sub['id']}")
        sub = {
            "id": str(uuid.uuid4()), "status": "enabled", "type": kind, "version": body.get("version", "1"),
            "condition": cond, "created_at": _now(),
            "transport": {"method": "websocket", "session_id": session.id, "connected_at": _now()}, "cost": 0,
        }
        self.subscriptions[sub["id"]] = sub
        self._wake()
        return web.json_response({"data": [sub], "total": len(self.subscriptions), "total_cost": 0,
                                  "max_total_cost": 10}, status=202)

    async def _h_get_eventsub_subscriptions(self, request: web.Request, tok: Token) -> web.Response:
        data = list(self.subscriptions.values())
        return web.json_response({"data": data, "total": len(data), "total_cost": 0, "max_total_cost": 10,
                                  "pagination": {}})

    async def _h_delete_eventsub_subscriptions(self, request: web.Request, tok: Token) -> web.Response:
        if self.subscriptions.pop(request.query.get("id", ""), None) is None:
            return _err(404, "subscription not found")
        return web.Response(status=204)

    async def _h_post_chat_messages(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        if (problem := self._need(tok, str(body.get("sender_id")), "user:write:chat")) is not None:
            return problem
        text = body.get("message", "")
        if not 1 <= len(text) <= 500:
            return _err(400, "The message is too long")
        self.sent.append(body)
        self.sent_times.append(time.monotonic())
        self._wake()
        return web.json_response({"data": [{"message_id": str(uuid.uuid4()), "is_sent": True, "drop_reason": None}]})

    # polls

    def _poll_body(self, poll: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in poll.items() if not k.startswith("_")}

    async def _h_post_polls(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        bid = str(body.get("broadcaster_id"))
        if (problem := self._need(tok, bid, "channel:manage:polls")) is not None:
            return problem
        owner = self.users[bid]
        if owner.broadcaster_type not in ("affiliate", "partner"):
            return _err(403, "The broadcaster must be a partner or affiliate to run polls.")
        title, choices, duration = body.get("title", ""), body.get("choices", []), body.get("duration", 0)
        if not (1 <= len(title) <= 60 and 2 <= len(choices) <= 5 and 15 <= duration <= 1800
                and all(1 <= len(c.get("title", "")) <= 25 for c in choices)):
            return _err(400, "Invalid poll")
        if any(p["status"] == "ACTIVE" for p in self.polls.values()):
            return _err(400, "The broadcaster already has an active poll.")
        poll = {
            "id": str(uuid.uuid4()), "broadcaster_id": bid, "broadcaster_name": owner.login.capitalize(),
            "broadcaster_login": owner.login, "title": title,
            "choices": [{"id": str(uuid.uuid4()), "title": c["title"], "votes": 0, "channel_points_votes": 0,
                         "bits_votes": 0} for c in choices],
            "bits_voting_enabled": False, "bits_per_vote": 0,
            "channel_points_voting_enabled": bool(body.get("channel_points_voting_enabled", False)),
            "channel_points_per_vote": int(body.get("channel_points_per_vote", 0) or 0),
            "status": "ACTIVE", "duration": duration, "started_at": _now(), "ended_at": None,
        }
        self.polls[poll["id"]] = poll
        await self._poll_event("channel.poll.begin", poll)
        return web.json_response({"data": [self._poll_body(poll)]})

    async def _h_patch_polls(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        if (problem := self._need(tok, str(body.get("broadcaster_id")), "channel:manage:polls")) is not None:
            return problem
        poll = self.polls.get(body.get("id", ""))
        if poll is None:
            return _err(404, "poll not found")
        if poll["status"] != "ACTIVE" or body.get("status") not in ("TERMINATED", "ARCHIVED"):
            return _err(400, "poll is not active or status is invalid")
        await self._end_poll(poll, body["status"])
        return web.json_response({"data": [self._poll_body(poll)]})

    async def _poll_event(self, kind: str, poll: dict[str, Any]) -> None:
        event: dict[str, Any] = {
            "id": poll["id"], "broadcaster_user_id": poll["broadcaster_id"],
            "broadcaster_user_login": poll["broadcaster_login"], "broadcaster_user_name": poll["broadcaster_name"],
            "title": poll["title"],
            "choices": [{"id": c["id"], "title": c["title"]} for c in poll["choices"]]
            if kind == "channel.poll.begin"
            else [{"id": c["id"], "title": c["title"], "bits_votes": 0, "channel_points_votes": c["channel_points_votes"],
                   "votes": c["votes"]} for c in poll["choices"]],
            "bits_voting": {"is_enabled": False, "amount_per_vote": 0},
            "channel_points_voting": {"is_enabled": poll["channel_points_voting_enabled"],
                                      "amount_per_vote": poll["channel_points_per_vote"]},
            "started_at": poll["started_at"],
        }
        if kind == "channel.poll.end":
            event["status"] = poll["status"].lower()
            event["ended_at"] = poll["ended_at"]
        else:
            start = dt.datetime.strptime(poll["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
            event["ends_at"] = (start + dt.timedelta(seconds=poll["duration"])).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await self.notify(kind, {"broadcaster_user_id": poll["broadcaster_id"]}, event)

    async def _end_poll(self, poll: dict[str, Any], status: str) -> None:
        poll["status"], poll["ended_at"] = status, _now()
        await self._poll_event("channel.poll.end", poll)

    async def vote(self, poll_id: str, choice_index: int, n: int = 1) -> None:
        """Viewers vote in the native poll UI; Twitch sends channel.poll.progress."""
        self.polls[poll_id]["choices"][choice_index]["votes"] += n
        await self._poll_event("channel.poll.progress", self.polls[poll_id])

    async def finish_poll(self, poll_id: str) -> None:
        """The poll's time is up."""
        await self._end_poll(self.polls[poll_id], "COMPLETED")

    # channel points

    def _reward_body(self, r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if not k.startswith("_")}

    async def _h_get_channel_points_custom_rewards(self, request: web.Request, tok: Token) -> web.Response:
        bid = request.query.get("broadcaster_id", "")
        if (problem := self._need(tok, bid, "channel:read:redemptions", "channel:manage:redemptions")) is not None:
            return problem
        only_ours = request.query.get("only_manageable_rewards", "false").lower() == "true"
        data = [self._reward_body(r) for r in self.rewards.values()
                if r["broadcaster_id"] == bid and (not only_ours or r["_client_id"] == self.client_id)]
        return web.json_response({"data": data})

    async def _h_post_channel_points_custom_rewards(self, request: web.Request, tok: Token) -> web.Response:
        bid = request.query.get("broadcaster_id", "")
        if (problem := self._need(tok, bid, "channel:manage:redemptions")) is not None:
            return problem
        owner = self.users[bid]
        if owner.broadcaster_type not in ("affiliate", "partner"):
            return _err(403, "The broadcaster must have partner or affiliate status.")
        body = await request.json()
        if any(r["title"] == body.get("title") for r in self.rewards.values() if r["broadcaster_id"] == bid):
            return _err(400, "CREATE_CUSTOM_REWARD_DUPLICATE_REWARD")
        reward = self.make_reward(bid, body.get("title", ""), int(body.get("cost", 1)), body.get("prompt", ""),
                                  client_id=self.client_id)
        reward["is_user_input_required"] = bool(body.get("is_user_input_required", False))
        reward["global_cooldown_setting"] = {"is_enabled": bool(body.get("is_global_cooldown_enabled", False)),
                                             "global_cooldown_seconds": int(body.get("global_cooldown_seconds", 0))}
        return web.json_response({"data": [self._reward_body(reward)]})

    def make_reward(self, bid: str, title: str, cost: int, prompt: str, *, client_id: str) -> dict[str, Any]:
        owner = self.users[bid]
        reward: dict[str, Any] = {
            "broadcaster_name": owner.login.capitalize(), "broadcaster_login": owner.login, "broadcaster_id": bid,
            "id": str(uuid.uuid4()), "image": None, "background_color": "#9147FF", "is_enabled": True, "cost": cost,
            "title": title, "prompt": prompt, "is_user_input_required": True,
            "max_per_stream_setting": {"is_enabled": False, "max_per_stream": 0},
            "max_per_user_per_stream_setting": {"is_enabled": False, "max_per_user_per_stream": 0},
            "global_cooldown_setting": {"is_enabled": False, "global_cooldown_seconds": 0},
            "is_paused": False, "is_in_stock": True,
            "default_image": {"url_1x": "https://static-cdn.jtvnw.net/custom-reward-images/default-1.png",
                              "url_2x": "https://static-cdn.jtvnw.net/custom-reward-images/default-2.png",
                              "url_4x": "https://static-cdn.jtvnw.net/custom-reward-images/default-4.png"},
            "should_redemptions_skip_request_queue": False, "redemptions_redeemed_current_stream": None,
            "cooldown_expires_at": None, "_client_id": client_id,
        }
        self.rewards[reward["id"]] = reward
        return reward

    async def _h_patch_channel_points_custom_rewards_redemptions(self, request: web.Request, tok: Token) -> web.Response:
        bid = request.query.get("broadcaster_id", "")
        if (problem := self._need(tok, bid, "channel:manage:redemptions")) is not None:
            return problem
        reward = self.rewards.get(request.query.get("reward_id", ""))
        if reward is None:
            return _err(404, "reward not found")
        if reward["_client_id"] != self.client_id:
            return _err(403, "The client ID in the token does not match the client ID that created the reward.")
        red = self.redemptions.get(request.query.get("id", ""))
        if red is None or red["status"] != "UNFULFILLED":
            return _err(404, "No redemptions with status UNFULFILLED were found.")
        status = (await request.json()).get("status")
        if status not in ("CANCELED", "FULFILLED"):
            return _err(400, "invalid status")
        red["status"] = status
        self._wake()
        return web.json_response({"data": [red]})

    async def redeem(self, reward_id: str, user_id: str, text: str) -> str:
        """A viewer redeems the reward; Twitch sends channel.channel_points_custom_reward_redemption.add."""
        reward, user = self.rewards[reward_id], self.users[user_id]
        red = {
            "broadcaster_name": reward["broadcaster_name"], "broadcaster_login": reward["broadcaster_login"],
            "broadcaster_id": reward["broadcaster_id"], "id": str(uuid.uuid4()), "user_id": user.id,
            "user_name": user.login.capitalize(), "user_login": user.login, "user_input": text, "status": "UNFULFILLED",
            "redeemed_at": _now(),
            "reward": {"id": reward["id"], "title": reward["title"], "prompt": reward["prompt"], "cost": reward["cost"]},
        }
        self.redemptions[red["id"]] = red
        event = {
            "id": red["id"], "broadcaster_user_id": red["broadcaster_id"],
            "broadcaster_user_login": red["broadcaster_login"], "broadcaster_user_name": red["broadcaster_name"],
            "user_id": user.id, "user_login": user.login, "user_name": user.login.capitalize(), "user_input": text,
            "status": "unfulfilled", "reward": red["reward"], "redeemed_at": red["redeemed_at"],
        }
        await self.notify("channel.channel_points_custom_reward_redemption.add",
                          {"broadcaster_user_id": reward["broadcaster_id"]}, event)
        return str(red["id"])

    # ------------------------------------------------------------------ chat

    def chat_event(self, broadcaster_id: str, user_id: str, text: str, badges: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        owner, user = self.users[broadcaster_id], self.users[user_id]
        return {
            "broadcaster_user_id": owner.id, "broadcaster_user_login": owner.login,
            "broadcaster_user_name": owner.login.capitalize(),
            "source_broadcaster_user_id": None, "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None,
            "chatter_user_id": user.id, "chatter_user_login": user.login, "chatter_user_name": user.login.capitalize(),
            "message_id": str(uuid.uuid4()), "source_message_id": None, "is_source_only": None,
            "message": {"text": text, "fragments": [
                {"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}]},
            "color": "#00FF7F",
            "badges": [{"set_id": b, "id": "1", "info": ""} for b in badges],
            "source_badges": None, "message_type": "text", "cheer": None, "reply": None,
            "channel_points_custom_reward_id": None, "channel_points_animation_id": None,
        }

    async def chat(self, broadcaster_id: str, user_id: str, text: str, badges: list[str] = ()) -> None:  # type: ignore[assignment]
        """A chatter writes in the broadcaster's chat (badges: "moderator", "broadcaster", "vip", "subscriber")."""
        await self.notify("channel.chat.message", {"broadcaster_user_id": broadcaster_id},
                          self.chat_event(broadcaster_id, user_id, text, badges))

    # ------------------------------------------------------------------ EventSub websocket

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = Session(id=f"AgoQ{uuid.uuid4().hex}", ws=ws)
        timeout = max(10, min(600, int(request.query.get("keepalive_timeout_seconds", "10"))))
        old_id = request.query.get("reconnect_from")
        self.sessions[session.id] = session
        await ws.send_str(json.dumps({
            "metadata": self._meta("session_welcome"),
            "payload": {"session": {"id": session.id, "status": "connected", "connected_at": _now(),
                                    "keepalive_timeout_seconds": timeout, "reconnect_url": None,
                                    "recovery_url": None}},
        }))
        if old_id and old_id in self.sessions:
            # Twitch moves the old session's subscriptions to the new one, then closes the old connection.
            for sub in self.subscriptions.values():
                if sub["transport"]["session_id"] == old_id:
                    sub["transport"]["session_id"] = session.id
            old = self.sessions[old_id]
            old.open = False
            await old.ws.close(code=4004, message=b"reconnected")
        self._wake()
        keepalive = asyncio.create_task(self._keepalive(session, min(timeout, self.keepalive_s)))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:  # clients must never send: Twitch closes with 4001
                    await ws.close(code=4001, message=b"client sent inbound traffic")
        finally:
            keepalive.cancel()
            session.open = False
            for sub in self.subscriptions.values():
                if sub["transport"]["session_id"] == session.id:
                    sub["status"] = "websocket_disconnected"
        return ws

    async def _keepalive(self, session: Session, every: float) -> None:
        while session.open:
            await asyncio.sleep(every)
            if session.open and not session.ws.closed:
                await session.ws.send_str(json.dumps({"metadata": self._meta("session_keepalive"), "payload": {}}))

    def _meta(self, kind: str, sub: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = {"message_id": str(uuid.uuid4()), "message_type": kind, "message_timestamp": _now()}
        if sub is not None:
            meta.update({"subscription_type": sub["type"], "subscription_version": sub["version"]})
        return meta

    async def notify(self, kind: str, match: dict[str, str], event: dict[str, Any]) -> int:
        """Send a notification to every live subscription of this type whose condition matches; returns the count."""
        delivered = 0
        for sub in list(self.subscriptions.values()):
            if sub["type"] != kind or sub["status"] != "enabled":
                continue
            if any(sub["condition"].get(k) != v for k, v in match.items()):
                continue
            session = self.sessions.get(sub["transport"]["session_id"])
            if session is None or not session.open or session.ws.closed:
                continue
            await session.ws.send_str(json.dumps({"metadata": self._meta("notification", sub),
                                                  "payload": {"subscription": sub, "event": event}}))
            delivered += 1
        return delivered

    async def session_reconnect(self, session_id: str) -> None:
        """Twitch is about to drop this edge server: it asks the client to connect to reconnect_url."""
        session = self.sessions[session_id]
        await session.ws.send_str(json.dumps({
            "metadata": self._meta("session_reconnect"),
            "payload": {"session": {"id": session_id, "status": "reconnecting", "keepalive_timeout_seconds": None,
                                    "reconnect_url": f"ws://127.0.0.1:{self.port}/ws?reconnect_from={session_id}",
                                    "connected_at": _now(), "recovery_url": None}},
        }))

    async def drop_sessions(self, code: int = 4000) -> int:
        """Close every open EventSub websocket as a failing Twitch edge does (4000: internal server
        error), without a reconnect message; returns how many were closed."""
        dropped = 0
        for session in list(self.sessions.values()):
            if session.open and not session.ws.closed:
                session.open = False
                await session.ws.close(code=code, message=b"internal server error")
                dropped += 1
        return dropped

    def live_sessions(self) -> list[str]:
        return [s.id for s in self.sessions.values() if s.open and not s.ws.closed]

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
