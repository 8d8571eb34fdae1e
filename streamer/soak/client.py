"""The soak's HTTP client for the daemon's dashboard: the live state, /healthz, and token-checked POSTs.

Every call has a short timeout and answers None instead of raising when the daemon is down or slow:
the soak keeps measuring through every fault, including the ones that take the daemon away.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

TIMEOUT_S = 3.0


class DashboardClient:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DashboardClient:
        # a pool per soak: the flood fault opens its own connections, so probes are never queued behind it
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S), connector=aiohttp.TCPConnector(limit=8)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with DashboardClient(...)`"
        return self._session

    async def get_json(self, path: str) -> tuple[int, Any] | None:
        """(status, JSON body) or None when the daemon did not answer in time."""
        try:
            async with self.session.get(self.base + path) as r:
                return r.status, await r.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def state(self) -> dict[str, Any] | None:
        answer = await self.get_json("/api/state")
        return answer[1] if answer is not None and answer[0] == 200 and isinstance(answer[1], dict) else None

    async def metrics(self) -> dict[str, Any] | None:
        state = await self.state()
        return state.get("metrics") if state else None

    async def counter(self, name: str) -> int | None:
        m = await self.metrics()
        return None if m is None else int(m.get("counters", {}).get(name, 0))

    async def healthy(self) -> bool:
        """/healthz answers 200: the pipeline runs and the model is not standing in for passthrough."""
        answer = await self.get_json("/healthz")
        return answer is not None and answer[0] == 200

    async def post(
        self, path: str, body: dict[str, Any] | None = None, *, timeout_s: float = TIMEOUT_S
    ) -> tuple[int | None, Any]:
        """(status, JSON body); (None, why) when the daemon did not answer within `timeout_s`."""
        headers = {"X-Streamer-Token": self.token}
        try:
            async with self.session.post(
                self.base + path, json=body or {}, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as r:
                try:
                    return r.status, await r.json(content_type=None)
                except ValueError:
                    return r.status, None
        except (TimeoutError, aiohttp.ClientError) as e:
            return None, type(e).__name__


async def wait_until(check: Any, timeout: float, every: float = 0.2) -> float | None:
    """Await `check()` until it is true; the seconds it took, or None after `timeout`."""
    t0 = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        await asyncio.sleep(every)
