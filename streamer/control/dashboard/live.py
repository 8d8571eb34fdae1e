"""WebSocket hub that pushes the live state (prompt, poll, approval queue, metrics) to pages.

Read-only by design: pages (the dashboard and OBS overlays) only receive; every change goes
through the token-checked HTTP API. Changes arrive from other threads (PromptBus listeners run on
the thread that changed the prompt), so `notify()` only hops onto the loop; the hub also re-reads
the state every `poll_interval` and pushes when it differs, so a part that has no listener hook
still shows up within a fraction of a second. A client that cannot take a message within a second is
dropped rather than allowed to hold up the others (a stuck browser source must not delay the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0


class LiveHub:
    """Fan-out of `{"type": "state", ...}` on change and `{"type": "metrics", ...}` every `metrics_interval`.

    state_fn / metrics_fn: cheap, thread-safe readers returning JSON-serialisable dicts.
    A client connecting with `?metrics=0` (the overlays) gets state messages only.
    """

    def __init__(
        self,
        state_fn: Callable[[], dict[str, Any]],
        metrics_fn: Callable[[], dict[str, Any]],
        *,
        metrics_interval: float = 1.0,
        poll_interval: float = 0.5,
        max_clients: int = 32,
    ) -> None:
        self._state_fn = state_fn
        self._metrics_fn = metrics_fn
        self.metrics_interval = metrics_interval
        self.poll_interval = poll_interval
        self.max_clients = max_clients
        self._clients: dict[web.WebSocketResponse, bool] = {}  # ws -> wants metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty = asyncio.Event()
        self._last_state = ""

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def notify(self, *_args: Any) -> None:
        """Something changed: push soon. Safe from any thread; usable directly as a listener."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop shutting down
                loop.call_soon_threadsafe(self._dirty.set)

    def state_message(self, state: dict[str, Any] | None = None) -> str:
        """server_time lets pages turn absolute end times (a poll's ends_at) into countdowns without
        trusting the browser's clock; it is left out of change detection."""
        state = self._state_fn() if state is None else state
        return json.dumps({"type": "state", **state, "server_time": time.time()}, separators=(",", ":"))

    def metrics_message(self) -> str:
        return json.dumps({"type": "metrics", **self._metrics_fn()}, separators=(",", ":"))

    async def run(self) -> None:
        """Push loop; runs until cancelled."""
        self._loop = asyncio.get_running_loop()
        loop = self._loop
        next_metrics = loop.time()
        while True:
            timeout = min(self.poll_interval, max(0.0, next_metrics - loop.time()))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands while
            # the event fires, and the component would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._dirty.wait()
            self._dirty.clear()
            if not self._clients:
                next_metrics = loop.time() + self.metrics_interval
                continue
            try:
                state = self._state_fn()
                key = json.dumps(state, sort_keys=True)
            except Exception:  # a broken reader must not stop the metrics or later states
                log.exception("could not read the live state")
                state, key = None, self._last_state
            if state is not None and key != self._last_state:
                self._last_state = key
                await self._broadcast(self.state_message(state), metrics_only=False)
            if loop.time() >= next_metrics:
                next_metrics = loop.time() + self.metrics_interval
                try:
                    await self._broadcast(self.metrics_message(), metrics_only=True)
                except Exception:
                    log.exception("could not read the metrics")

    async def _broadcast(self, message: str, *, metrics_only: bool) -> None:
        targets = [ws for ws, wants_metrics in self._clients.items() if wants_metrics or not metrics_only]
        results = await asyncio.gather(*(self._send(ws, message) for ws in targets))
        for ws, ok in zip(targets, results, strict=True):
            if not ok:
                self._clients.pop(ws, None)
                with contextlib.suppress(Exception):
                    await ws.close(code=1011, message=b"too slow")

    @staticmethod
    async def _send(ws: web.WebSocketResponse, message: str) -> bool:
        if ws.closed:
            return False
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await ws.send_str(message)
            return True
        except (TimeoutError, ConnectionError, RuntimeError):
            return False

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws: sends the current state at once, then every change. Incoming messages are ignored."""
        if len(self._clients) >= self.max_clients:
            raise web.HTTPServiceUnavailable(text=f"at most {self.max_clients} live connections")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
        await ws.prepare(request)
        self._clients[ws] = request.query.get("metrics", "1") != "0"
        try:
            await self._send(ws, self.state_message())
            if self._clients[ws]:
                await self._send(ws, self.metrics_message())
            async for msg in ws:  # keep the connection open; pages never send commands here
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._clients.pop(ws, None)
        return ws

    async def close(self) -> None:
        """Close every connection (server shutdown), so the runner need not wait for them."""
        clients, self._clients = list(self._clients), {}
        for ws in clients:
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutting down")
