"""The fake's Helix API (api.twitch.tv/helix): authentication, dispatch, users and EventSub subscriptions.

Every Helix request passes `_auth` (Client-Id and a valid bearer token, else 401) and is recorded in
`requests`; `_helix` then finds the handler by name, `_h_<method>_<path with _ for />`, so each
feature module (chat, polls, channel points) adds routes by defining methods. `_need` is the
broadcaster-and-scope check those handlers share. Subscriptions are created here because they are a
Helix call, but they bind to a live session of the EventSub websocket, hence the base class.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from streamer.testing.fake_twitch.eventsub import EventSubSessions
from streamer.testing.fake_twitch.state import Token, error_response, twitch_time


class HelixRoutes(EventSubSessions):
    """/helix/{path}: the dispatcher, GET users and the eventsub/subscriptions routes."""

    def _auth(self, request: web.Request) -> Token | web.Response:
        if request.headers.get("Client-ID", request.headers.get("Client-Id")) != self.client_id:
            return error_response(401, "Client ID and OAuth token do not match")
        tok = self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if tok is None or not tok.valid:
            return error_response(401, "Invalid OAuth token")
        return tok

    async def _helix(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"].rstrip("/")
        tok = self._auth(request)
        if isinstance(tok, web.Response):
            self.requests.append((request.method, path, tok.status))
            return tok
        handler = getattr(self, "_h_" + request.method.lower() + "_" + path.replace("/", "_"), None)
        resp = error_response(404, f"no such endpoint {path}") if handler is None else await handler(request, tok)
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
            return error_response(
                401, "The ID in broadcaster_id must match the user ID found in the request's OAuth token."
            )
        if not any(s in tok.scopes for s in scopes):
            return error_response(401, f"Missing scope: {scopes[0]}")
        return None

    async def _h_post_eventsub_subscriptions(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        transport = body.get("transport", {})
        session = self.sessions.get(transport.get("session_id", ""))
        if transport.get("method") != "websocket" or session is None or not session.open:
            return error_response(400, "websocket transport session does not exist or has already disconnected")
        if tok.user_id is None:
            return error_response(400, "websocket transport cannot be used with an app access token")
        cond = body.get("condition", {})
        kind = body.get("type", "")
        required = {
            "channel.chat.message": (cond.get("user_id"), ("user:read:chat",)),
            "channel.poll.begin": (cond.get("broadcaster_user_id"), ("channel:read:polls", "channel:manage:polls")),
            "channel.poll.progress": (cond.get("broadcaster_user_id"), ("channel:read:polls", "channel:manage:polls")),
            "channel.poll.end": (cond.get("broadcaster_user_id"), ("channel:read:polls", "channel:manage:polls")),
            "channel.channel_points_custom_reward_redemption.add": (
                cond.get("broadcaster_user_id"),
                ("channel:read:redemptions", "channel:manage:redemptions"),
            ),
        }
        if kind not in required:
            return error_response(400, f"unsupported subscription type {kind}")
        user, scopes = required[kind]
        if (problem := self._need(tok, str(user), *scopes)) is not None:
            return problem
        for sub in self.subscriptions.values():
            if sub["type"] == kind and sub["condition"] == cond and sub["transport"]["session_id"] == session.id:
                return error_response(409, f"subscription already exists id={sub['id']}")
        sub = {
            "id": str(uuid.uuid4()),
            "status": "enabled",
            "type": kind,
            "version": body.get("version", "1"),
            "condition": cond,
            "created_at": twitch_time(),
            "transport": {"method": "websocket", "session_id": session.id, "connected_at": twitch_time()},
            "cost": 0,
        }
        self.subscriptions[sub["id"]] = sub
        self._wake()
        return web.json_response(
            {"data": [sub], "total": len(self.subscriptions), "total_cost": 0, "max_total_cost": 10}, status=202
        )

    async def _h_get_eventsub_subscriptions(self, request: web.Request, tok: Token) -> web.Response:
        data = list(self.subscriptions.values())
        return web.json_response(
            {"data": data, "total": len(data), "total_cost": 0, "max_total_cost": 10, "pagination": {}}
        )

    async def _h_delete_eventsub_subscriptions(self, request: web.Request, tok: Token) -> web.Response:
        if self.subscriptions.pop(request.query.get("id", ""), None) is None:
            return error_response(404, "subscription not found")
        return web.Response(status=204)
