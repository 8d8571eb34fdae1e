"""The fake's EventSub WebSocket (eventsub.wss.twitch.tv/ws): sessions and the messages sent on them.

One connection is one session: a welcome with its id, keepalives, notifications for the
subscriptions bound to it, and Twitch's two ways of ending it: a `session_reconnect` that moves the
subscriptions to a new connection, and a bare close as a failing edge does (`drop_sessions`).
`notify` is how every feature (chat, polls, channel points) delivers its events, so it lives here,
next to the message envelope (`_meta`) it shares with the session messages.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from streamer.testing.fake_twitch.state import FakeTwitchState, Session, twitch_time


class EventSubSessions(FakeTwitchState):
    """GET /ws, plus the test hooks that act on live sessions."""

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = Session(id=f"AgoQ{uuid.uuid4().hex}", ws=ws)
        timeout = max(10, min(600, int(request.query.get("keepalive_timeout_seconds", "10"))))
        old_id = request.query.get("reconnect_from")
        self.sessions[session.id] = session
        await ws.send_str(
            json.dumps(
                {
                    "metadata": self._meta("session_welcome"),
                    "payload": {
                        "session": {
                            "id": session.id,
                            "status": "connected",
                            "connected_at": twitch_time(),
                            "keepalive_timeout_seconds": timeout,
                            "reconnect_url": None,
                            "recovery_url": None,
                        }
                    },
                }
            )
        )
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
        meta = {"message_id": str(uuid.uuid4()), "message_type": kind, "message_timestamp": twitch_time()}
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
            await session.ws.send_str(
                json.dumps(
                    {"metadata": self._meta("notification", sub), "payload": {"subscription": sub, "event": event}}
                )
            )
            delivered += 1
        return delivered

    async def session_reconnect(self, session_id: str) -> None:
        """Twitch is about to drop this edge server: it asks the client to connect to reconnect_url."""
        session = self.sessions[session_id]
        await session.ws.send_str(
            json.dumps(
                {
                    "metadata": self._meta("session_reconnect"),
                    "payload": {
                        "session": {
                            "id": session_id,
                            "status": "reconnecting",
                            "keepalive_timeout_seconds": None,
                            "reconnect_url": f"ws://127.0.0.1:{self.port}/ws?reconnect_from={session_id}",
                            "connected_at": twitch_time(),
                            "recovery_url": None,
                        }
                    },
                }
            )
        )

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
