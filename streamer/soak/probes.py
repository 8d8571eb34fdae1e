"""What the soak watches once a second: the daemon's counters and output gaps, its RSS and threads, and
the recording's segments.

Output gaps are measured inside the daemon (streamer.metrics.OutputGaps: the time between two frames
handed to the sinks, kept per wall-clock second for the last minute), so a probe that is late by a
few seconds (the daemon's event loop busy during a fault) still sees every stall and when it ended.
RSS and thread count come from /proc of the daemon's pid, the encoder processes' RSS from its children.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamer.soak.client import DashboardClient
from streamer.soak.daemon import ChildProcess, children_of

COUNTERS = ("frames_out", "frames_in", "repeats", "drops_input", "model_failures", "sink_errors", "obs_connections")


@dataclass
class Sample:
    t: float  # seconds since the soak started
    wall: float  # time.time()
    incarnation: int  # which start of the daemon (1, then 2 after a SIGKILL restart, ...)
    up: bool  # the dashboard answered
    counters: dict[str, int]
    rss_mb: float | None
    threads: int | None
    children: int
    children_rss_mb: float
    load1: float  # the machine's 1-minute load average: other work on it shows here


def proc_status(pid: int) -> tuple[float, int] | None:
    """(VmRSS in MiB, thread count) from /proc/PID/status, None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])
    except (KeyError, ValueError, IndexError):
        return None


class Sampler:
    """Polls the daemon every `every_s`; keeps the timeline, the output gaps and the recording segments."""

    def __init__(
        self, client: DashboardClient, daemon: ChildProcess, recordings: Path, t0: float, every_s: float = 1.0
    ) -> None:
        self.client, self.daemon, self.recordings, self.t0, self.every_s = client, daemon, recordings, t0, every_s
        self.samples: list[Sample] = []
        # unix second -> (wall time it ended, ms): the longest gap between two hand-offs ending in that second
        self.gaps: dict[int, tuple[float, float]] = {}
        self.segments: dict[str, float] = {}  # recording file -> wall time it was first seen
        self.latest: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.sample()
            await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - started)))

    async def sample(self) -> Sample:
        metrics = await self.client.metrics()
        counters = {}
        if metrics is not None:
            raw = metrics.get("counters", {})
            counters = {k: int(raw.get(k, 0)) for k in COUNTERS}
            for end, gap_ms in metrics.get("output_gaps", []):
                known = self.gaps.get(int(end))
                if known is None or float(gap_ms) > known[1]:
                    self.gaps[int(end)] = (float(end), float(gap_ms))
            self.latest = counters
        pid = self.daemon.pid
        stats = proc_status(pid) if pid is not None else None
        kids = children_of(pid) if pid is not None else []
        kid_rss = sum(s[0] for s in (proc_status(k) for k in kids) if s is not None)
        now = time.time()
        for path in self.recordings.glob("*.mp4"):
            self.segments.setdefault(path.name, now)
        s = Sample(
            round(time.monotonic() - self.t0, 2),
            now,
            self.daemon.starts,
            metrics is not None,
            counters,
            None if stats is None else round(stats[0], 1),
            None if stats is None else stats[1],
            len(kids),
            round(kid_rss, 1),
            round(os.getloadavg()[0], 2),
        )
        self.samples.append(s)
        return s

    def worst_gap(self, wall_from: float, wall_to: float) -> tuple[float, float | None]:
        """The longest output gap (ms) that ended in [wall_from, wall_to), and when it ended (wall time).
        Each second's longest gap is known, so a shorter one in the same second as a longer gap outside
        the window is not seen: the window's worst is never overstated, and at most understated there."""
        inside = [(gap, end) for end, gap in self.gaps.values() if wall_from <= end < wall_to]
        if not inside:
            return 0.0, None
        return max(inside)

    def segment_at(self, wall: float) -> str | None:
        """The recording file being written at `wall` (the newest one first seen before it)."""
        before = [(seen, name) for name, seen in self.segments.items() if seen <= wall]
        return max(before)[1] if before else None

    def timeline(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.samples]
