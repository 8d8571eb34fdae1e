"""A local fake of Twitch (OAuth, Helix, EventSub websocket) that speaks the real wire formats.

The real TwitchIO client is pointed at it by patching `twitchio.http.Route.BASE` / `Route.ID_BASE`
and `twitchio.eventsub.websockets.WSS` (`FakeTwitch.patch_twitchio`), or, in a daemon started as a
child process, through STREAMER_TWITCH_API_BASE (`FakeTwitch.daemon_env`). Payloads are complete,
field for field as in dev.twitch.tv's reference: TwitchIO swallows a KeyError from a missing field
inside its listener and the command then silently never fires, so a partial fake would hide bugs.

Test hooks (`chat`, `vote`, `finish_poll`, `redeem`, `session_reconnect`, `drop_sessions`, `expire_token`) inject
what a real channel would produce; `sent`, `polls`, `redemptions` record what the client did.

The package is split by responsibility: `state` (the data and the shared helpers), `oauth`, `helix`
(authentication, dispatch, users, EventSub subscriptions), `eventsub` (the websocket sessions and
`notify`), and one module per feature with its routes, events and hooks: `chat`, `polls`,
`channel_points`. `FakeTwitch` below puts them together and runs them as one aiohttp server.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamer.testing.fake_twitch.channel_points import ChannelPointRoutes
from streamer.testing.fake_twitch.chat import ChatRoutes
from streamer.testing.fake_twitch.oauth import OAuthRoutes
from streamer.testing.fake_twitch.polls import PollRoutes
from streamer.testing.fake_twitch.state import FakeUser, Session, Token

__all__ = ["FakeTwitch", "FakeUser", "Session", "Token"]


class FakeTwitch(OAuthRoutes, ChatRoutes, PollRoutes, ChannelPointRoutes):
    """One fake Twitch with a broadcaster, a bot and any number of chatters."""

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
