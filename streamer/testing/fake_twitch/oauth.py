"""The fake's OAuth server (id.twitch.tv/oauth2): token grants, the device-code flow, validate, revoke.

Kept apart from Helix because it is a different Twitch host with its own conventions: parameters
come in the query string or a form body, tokens are checked against the client secret rather than
sent as a bearer, and a device code stays pending until the test approves it (`approve_device`).
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from streamer.testing.fake_twitch.state import FakeTwitchState, error_response


class OAuthRoutes(FakeTwitchState):
    """POST /oauth2/token, POST /oauth2/device, GET /oauth2/validate, POST /oauth2/revoke."""

    async def _params(self, request: web.Request) -> dict[str, str]:
        # TwitchIO sends OAuth parameters in the query string; other clients send a form body. Twitch takes both.
        params = dict(request.query)
        if request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _token(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p.get("client_id") != self.client_id:
            return error_response(400, "invalid client")
        grant = p.get("grant_type")
        if grant == "client_credentials":
            if p.get("client_secret") != self.client_secret:
                return error_response(403, "invalid client secret")
            tok = self.issue_token(None, [])
            return web.json_response({"access_token": tok.access, "expires_in": 5011271, "token_type": "bearer"})
        if grant == "refresh_token":
            if p.get("client_secret", self.client_secret) != self.client_secret:
                return error_response(403, "invalid client secret")
            old_access = self.refresh_index.pop(p.get("refresh_token", ""), None)
            if old_access is None:
                return error_response(400, "Invalid refresh token")
            old = self.tokens.pop(old_access)
            tok = self.issue_token(old.user_id, old.scopes)
            self.refreshes += 1
            return web.json_response(
                {
                    "access_token": tok.access,
                    "refresh_token": tok.refresh,
                    "expires_in": 14124,
                    "scope": tok.scopes,
                    "token_type": "bearer",
                }
            )
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            entry = self.device_codes.get(p.get("device_code", ""))
            if entry is None:
                return error_response(400, "invalid device code")
            if entry["user_id"] is None:
                return error_response(400, "authorization_pending")
            del self.device_codes[p["device_code"]]
            tok = self.issue_token(entry["user_id"], entry["scopes"])
            return web.json_response(
                {
                    "access_token": tok.access,
                    "expires_in": 14124,
                    "refresh_token": tok.refresh,
                    "scope": tok.scopes,
                    "token_type": "bearer",
                }
            )
        return error_response(400, "unsupported grant type")

    async def _device(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p.get("client_id") != self.client_id:
            return error_response(400, "invalid client")
        device_code = secrets.token_hex(20)
        user_code = secrets.token_hex(4).upper()
        scopes = p.get("scopes", "").replace("+", " ").split()
        self.device_codes[device_code] = {"user_code": user_code, "scopes": scopes, "user_id": None}
        return web.json_response(
            {
                "device_code": device_code,
                "expires_in": 1800,
                "interval": 1,
                "user_code": user_code,
                "verification_uri": f"https://www.twitch.tv/activate?public=true&device-code={user_code}",
            }
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
            return error_response(401, "invalid access token")
        body: dict[str, Any] = {"client_id": self.client_id, "scopes": tok.scopes, "expires_in": 14124}
        if tok.user_id is not None:
            body.update({"login": self.users[tok.user_id].login, "user_id": tok.user_id})
        return web.json_response(body)

    async def _revoke(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        self.tokens.pop(p.get("token", ""), None)
        return web.Response(status=200)
