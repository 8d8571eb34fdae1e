"""The faults the soak injects, one class each: `inject` causes it, `recovered` says when the daemon is
whole again (polled until true). `skip_reason` names why a fault cannot run here (it is logged and
reported, never silently dropped). A fault keeps what it needs between inject and recovered on itself:
the soak runs one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from streamer.fault_inject import MODEL_STEP
from streamer.soak.daemon import BOT, alive, children_of
from streamer.soak.ledger import read_store

if TYPE_CHECKING:
    from streamer.soak.runner import Soak


class Fault:
    name: ClassVar[str]
    what: ClassVar[str]  # one line for the report
    outage: ClassVar[bool] = False  # the output stops by design (the daemon itself is killed)

    def skip_reason(self, soak: Soak) -> str | None:
        return None

    async def inject(self, soak: Soak) -> dict[str, Any]:
        raise NotImplementedError

    async def recovered(self, soak: Soak) -> bool:
        raise NotImplementedError


class SenderRestart(Fault):
    name, what = "sender", "the network source's sender SIGKILLed, restarted 2 s later"
    DOWN_S = 2.0

    def __init__(self) -> None:
        self.mark = 0

    def skip_reason(self, soak: Soak) -> str | None:
        return None if soak.sender is not None else "the source is not the network source (--source pattern)"

    async def inject(self, soak: Soak) -> dict[str, Any]:
        assert soak.sender is not None
        soak.sender.kill_group()
        await asyncio.sleep(self.DOWN_S)
        self.mark = await soak.client.counter("frames_in") or soak.sampler.latest.get("frames_in", 0)
        soak.sender.start()
        return {"down_s": self.DOWN_S}

    async def recovered(self, soak: Soak) -> bool:
        frames_in = await soak.client.counter("frames_in")
        return frames_in is not None and frames_in >= self.mark + 5


class ObsRestart(Fault):
    name, what = "obs", "OBS SIGKILLed and started again (headless, same profile and port)"

    def __init__(self) -> None:
        self.before = 0

    def skip_reason(self, soak: Soak) -> str | None:
        return soak.obs_skipped

    async def inject(self, soak: Soak) -> dict[str, Any]:
        assert soak.obs is not None
        self.before = await soak.client.counter("obs_connections") or 0
        t0 = time.monotonic()
        await asyncio.to_thread(soak.obs.restart)
        return {"obs_start_s": round(time.monotonic() - t0, 2)}

    async def recovered(self, soak: Soak) -> bool:
        return (await soak.client.counter("obs_connections") or 0) > self.before


class TwitchDrop(Fault):
    name, what = "twitch_ws", "the fake Twitch closes every EventSub websocket (code 4000, no reconnect message)"

    def __init__(self) -> None:
        self.probe: str | None = None

    async def inject(self, soak: Soak) -> dict[str, Any]:
        self.probe = None
        return {"closed": await soak.fake.drop_sessions()}

    async def recovered(self, soak: Soak) -> bool:
        """A chat proposal sent after the drop reached the store: chat is back end to end."""
        if self.probe is None:
            text = f"soak probe {time.monotonic():.3f}"
            if await soak.traffic.chat(soak.traffic.viewer(), f"!ai {text}"):
                self.probe = text
                soak.ledger.add("proposal", text)
            return False
        return self.probe in read_store(soak.layout.store).proposals


class TwitchAuth401(Fault):
    name, what = "twitch_401", "the bot's access token revoked: Helix answers 401 until it is refreshed"

    def __init__(self) -> None:
        self.before = 0
        self.t0 = 0.0

    async def inject(self, soak: Soak) -> dict[str, Any]:
        self.before, self.t0 = soak.fake.refreshes, time.monotonic()
        soak.fake.expire_token(soak.fake.user_token(BOT).access)
        await soak.traffic.chat(soak.traffic.viewer(), "!aiqueue")  # a reply needs the bot's token
        return {}

    async def recovered(self, soak: Soak) -> bool:
        """Refreshed, the new pair stored, and the bot has spoken since."""
        fake = soak.fake
        if fake.refreshes <= self.before or not fake.sent_times or fake.sent_times[-1] < self.t0:
            if fake.refreshes > self.before:
                await soak.traffic.chat(soak.traffic.viewer(), "!aiqueue")
            return False
        conn = sqlite3.connect(f"file:{soak.layout.store}?mode=ro", uri=True, timeout=5.0)
        try:
            row = conn.execute("SELECT access_token FROM twitch_tokens WHERE user_id = ?", (BOT,)).fetchone()
        finally:
            conn.close()
        return row is not None and row[0] in fake.tokens and fake.tokens[row[0]].valid


class ModelFault(Fault):
    """A trigger file for the daemon's FaultTrigger (streamer/fault_inject.py)."""

    kind: ClassVar[str]

    def __init__(self) -> None:
        self.before = 0

    async def inject(self, soak: Soak) -> dict[str, Any]:
        self.before = await soak.client.counter("model_failures") or 0
        (soak.layout.faults / f"{MODEL_STEP}.{self.kind}").touch(mode=0o600)
        return {}

    async def recovered(self, soak: Soak) -> bool:
        """The step failed (counted), and the model is back after its retry (/healthz ok again)."""
        failures = await soak.client.counter("model_failures")
        return failures is not None and failures > self.before and await soak.client.healthy()


class ModelException(ModelFault):
    name, what, kind = "model_exception", "an exception raised inside the model step", "exception"


class ModelOOM(ModelFault):
    name, what, kind = "model_oom", "torch.cuda.OutOfMemoryError raised inside the model step", "oom"


def holder_of(pid: int, path: Path) -> int | None:
    """The child of `pid` that has `path` open (the record sink's encoder process)."""
    target = str(path.resolve())
    for kid in children_of(pid):
        for fd in Path(f"/proc/{kid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if fd.readlink().as_posix() == target:
                    return kid
    return None


class DiskFull(Fault):
    name, what = (
        "disk_full",
        "the recording's file size capped at its current size (RLIMIT_FSIZE on its encoder process)",
    )

    def __init__(self) -> None:
        self.segment = ""
        self.before = 0
        self.sizes: dict[str, int] = {}

    async def inject(self, soak: Soak) -> dict[str, Any]:
        pid = soak.daemon.pid
        segments = sorted(soak.layout.recordings.glob("*.mp4"), key=lambda p: p.stat().st_mtime)
        holder = holder_of(pid, segments[-1]) if pid is not None and segments else None
        if holder is None:
            return {"error": "no encoder process holds the recording open"}
        self.segment, self.sizes = segments[-1].name, {}
        self.before = await soak.client.counter("sink_errors") or 0
        size = segments[-1].stat().st_size
        resource.prlimit(holder, resource.RLIMIT_FSIZE, (size, size))  # the next write past the end: EFBIG
        return {"segment": self.segment, "size": size, "encoder_pid": holder}

    async def recovered(self, soak: Soak) -> bool:
        """The sink failed (counted) and recording goes on in a new segment that grows."""
        if (await soak.client.counter("sink_errors") or 0) <= self.before:
            return False
        newer = [p for p in soak.layout.recordings.glob("*.mp4") if p.name > self.segment]
        for p in newer:
            size, last = p.stat().st_size, self.sizes.get(p.name)
            self.sizes[p.name] = size
            if last is not None and size > last:
                return True
        return False


class SqliteLock(Fault):
    name, what = (
        "sqlite_lock",
        "another process holds BEGIN EXCLUSIVE on the store for 6 s while prompts and chat arrive",
    )
    HOLD_S = 6.0  # longer than SQLite's default 5 s busy timeout, on purpose

    def __init__(self) -> None:
        self.t0 = 0.0
        self.released = False

    async def inject(self, soak: Soak) -> dict[str, Any]:
        self.t0, self.released = time.monotonic(), False
        locked = asyncio.Event()
        release = asyncio.Event()
        holder = asyncio.create_task(
            asyncio.to_thread(self._hold, soak.layout.store, locked, release, asyncio.get_running_loop())
        )
        await locked.wait()
        wait_s = self.HOLD_S + 10.0  # the daemon answers once its write got through: wait for that answer
        sends = [
            soak.traffic.dashboard_prompt("locked", wait_s),
            soak.traffic.chat_proposal(),
            soak.traffic.dashboard_prompt("locked", wait_s),
            soak.traffic.chat_proposal(),
        ]
        results = []
        for send in sends:  # the first at once (it waits the whole hold), the rest spread over it
            results.append(asyncio.create_task(send))
            await asyncio.sleep(self.HOLD_S / len(sends))
        await asyncio.sleep(max(0.0, self.t0 + self.HOLD_S - time.monotonic()))
        release.set()
        await holder
        self.released = True
        taken = [bool(await r) for r in results]
        return {"held_s": round(time.monotonic() - self.t0, 2), "taken_during_lock": sum(taken), "sent": len(taken)}

    @staticmethod
    def _hold(store: Path, locked: asyncio.Event, release: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        conn = sqlite3.connect(store, timeout=30.0, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            loop.call_soon_threadsafe(locked.set)
            while not release.is_set():
                time.sleep(0.02)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    async def recovered(self, soak: Soak) -> bool:
        """Released, and everything the daemon took while it was held is in the store."""
        return self.released and not soak.ledger.missing(before=time.monotonic(), after=self.t0)


class DashboardFlood(Fault):
    name, what = (
        "dashboard_flood",
        "100 requests per second on the dashboard for 5 s (state, health, metrics, pages, token POSTs)",
    )
    RATE, SECONDS = 100, 5.0
    PATHS = ("/api/state", "/healthz", "/metrics", "/overlays/overlay.html", "/api/approvals/list")

    async def inject(self, soak: Soak) -> dict[str, Any]:
        import aiohttp

        statuses: Counter[str] = Counter()
        latencies: list[float] = []
        headers = {"X-Streamer-Token": soak.client.token}

        async def one(session: aiohttp.ClientSession, path: str) -> None:
            t = time.monotonic()
            try:
                if path.startswith("/api/approvals"):
                    async with session.post(soak.client.base + path, json={}, headers=headers) as r:
                        await r.read()
                else:
                    async with session.get(soak.client.base + path) as r:
                        await r.read()
                statuses[str(r.status)] += 1
            except (TimeoutError, aiohttp.ClientError) as e:
                statuses[type(e).__name__] += 1
            latencies.append(time.monotonic() - t)

        timeout = aiohttp.ClientTimeout(total=10.0)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as session:
            tasks, t0 = [], time.monotonic()
            n = int(self.RATE * self.SECONDS)
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / self.RATE - time.monotonic()))
                tasks.append(asyncio.create_task(one(session, self.PATHS[i % len(self.PATHS)])))
            sent_s = time.monotonic() - t0
            await asyncio.gather(*tasks)
        latencies.sort()
        return {
            "requests": n,
            "sent_in_s": round(sent_s, 2),
            "statuses": dict(statuses),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        }

    async def recovered(self, soak: Soak) -> bool:
        return await soak.client.healthy()


class DaemonKill(Fault):
    name, what = "sigkill", "the daemon SIGKILLed and started again (same config and store)"
    outage = True
    QUIET_S = 1.5  # traffic stops this long before the kill, so every item the daemon took can be checked
    SETTLE_S = 10.0

    def __init__(self) -> None:
        self.t_kill = 0.0

    async def inject(self, soak: Soak) -> dict[str, Any]:
        soak.traffic.paused.set()
        try:
            await asyncio.sleep(self.QUIET_S)
            deadline = time.monotonic() + self.SETTLE_S
            while (unstored := soak.ledger.missing(before=time.monotonic())) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            kids = soak.daemon.kill()
            self.t_kill = time.monotonic()
            deadline = time.monotonic() + 5.0
            while (left := [k for k in kids if alive(k)]) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for k in left:  # an encoder process that outlived its parent: a leak, reported
                with contextlib.suppress(ProcessLookupError):
                    os.kill(k, signal.SIGKILL)
            soak.daemon.start()
        finally:
            soak.traffic.paused.clear()
        return {"unstored_before_kill": len(unstored), "children": len(kids), "children_left_behind": len(left)}

    async def recovered(self, soak: Soak) -> bool:
        """The new daemon hands frames to its sinks."""
        frames = await soak.client.counter("frames_out")
        if frames:
            soak.restart_gap_s.append(round(time.monotonic() - self.t_kill, 2))
            return True
        return False


ROTATION: tuple[type[Fault], ...] = (
    SenderRestart,
    ModelException,
    TwitchDrop,
    SqliteLock,
    ObsRestart,
    ModelOOM,
    DashboardFlood,
    TwitchAuth401,
    DiskFull,
    DaemonKill,
)
NAMES = tuple(f.name for f in ROTATION)
