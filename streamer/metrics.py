"""Per-stage timings, fps in/out, drops, output gaps and glass-to-glass latency, for the status line,
the dashboard and Prometheus (/metrics).

Thread-safe: the capture, engine and output threads record; the asyncio loop reads snapshots.
Percentiles come from a bounded window of recent samples, so memory never grows.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable

from streamer.frames import now


def percentile(samples: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the samples; 0.0 for none."""
    values = sorted(samples)
    if not values:
        return 0.0
    rank = max(0, min(len(values) - 1, round(q / 100.0 * (len(values) - 1))))
    return values[rank]


_COUNTER_HELP = {
    "drops_input": "Camera frames replaced by a newer one before the engine took them (the model is slower than the camera).",
    "drops_output": "Transformed frames dropped because the output queue was full.",
    "repeats": "Output ticks that repeated the last frame because no new one was ready.",
}
_SINK_DROPS_HELP = "Frames this sink took but never delivered (its encoder process was a whole queue behind)."


def sink_drops(counters: dict[str, int]) -> int:
    """Frames every sink together dropped (the `drops_sink_<name>` counters)."""
    return sum(v for k, v in counters.items() if k.startswith("drops_sink_"))


class RateMeter:
    """Events per second over the last `span` seconds."""

    def __init__(self, span: float = 2.0) -> None:
        self._times: collections.deque[float] = collections.deque()
        self._span = span

    def tick(self, t: float) -> None:
        self._times.append(t)
        self._trim(t)

    def rate(self, t: float) -> float:
        self._trim(t)
        if len(self._times) < 2:
            return 0.0
        elapsed = t - self._times[0]
        return (len(self._times) - 1) / elapsed if elapsed > 0 else 0.0

    def _trim(self, t: float) -> None:
        while self._times and t - self._times[0] > self._span:
            self._times.popleft()


class OutputGaps:
    """Time between consecutive hand-offs to the sinks: a stall detector readers need not reset.

    Keeps the longest gap since start, and per wall-clock second the longest gap that ended in it (and
    exactly when it ended) for the last RECENT_S seconds, so anyone polling now and then (a dashboard,
    `streamer soak`) sees every stall and can place it in time, without one reader's read hiding it
    from another.
    """

    RECENT_S = 60

    def __init__(self) -> None:
        self._last: float | None = None
        self.max_s = 0.0
        self._per_second: collections.deque[list[float]] = collections.deque(maxlen=self.RECENT_S)

    def handoff(self, t: float, wall: float) -> None:
        """A frame was handed to the sinks at monotonic time t (wall: the same instant, time.time())."""
        last, self._last = self._last, t
        if last is None:
            return
        gap = t - last
        self.max_s = max(self.max_s, gap)
        second = float(int(wall))
        if self._per_second and self._per_second[-1][0] == second:
            if gap > self._per_second[-1][1]:
                self._per_second[-1][1:] = [gap, wall]
        else:
            self._per_second.append([second, gap, wall])

    def recent(self) -> list[list[float]]:
        """[[wall time the gap ended, gap in s], ...]: the longest gap of each of the last RECENT_S seconds
        with hand-offs, oldest first."""
        return [[end, gap] for _, gap, end in self._per_second]


class Metrics:
    def __init__(self, window: int = 600) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._stages: dict[str, collections.deque[float]] = {}
        self._latency: collections.deque[float] = collections.deque(maxlen=window)
        self._counters: dict[str, int] = collections.defaultdict(int)
        self._rates = {"in": RateMeter(), "out": RateMeter(), "engine": RateMeter()}
        self._gaps = OutputGaps()
        self.info: dict[str, str] = {}  # free-form status: transform path, device, warnings

    def observe(self, stage: str, seconds: float) -> None:
        with self._lock:
            samples = self._stages.get(stage)
            if samples is None:
                samples = self._stages[stage] = collections.deque(maxlen=self._window)
            samples.append(seconds)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def tick(self, which: str) -> None:
        """One frame passed point `which` ('in', 'engine', 'out')."""
        with self._lock:
            self._rates[which].tick(now())

    def handoff(self) -> None:
        """A frame was handed to the sinks now (the output thread, once per tick): feeds the gap detector."""
        with self._lock:
            self._gaps.handoff(now(), time.time())

    def clear_latency(self) -> None:
        """Forget latency samples: called when the engine switches path (passthrough <-> model), so
        p50/p99 describe the path running now instead of a mix of both."""
        with self._lock:
            self._latency.clear()

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency.append(seconds)

    def snapshot(self) -> dict:
        t = now()
        with self._lock:
            latency = list(self._latency)
            return {
                "fps_in": round(self._rates["in"].rate(t), 2),
                "fps_engine": round(self._rates["engine"].rate(t), 2),
                "fps_out": round(self._rates["out"].rate(t), 2),
                "latency_p50_ms": round(percentile(latency, 50) * 1000, 1),
                "latency_p99_ms": round(percentile(latency, 99) * 1000, 1),
                "stages": {
                    name: {
                        "p50_ms": round(percentile(s, 50) * 1000, 2),
                        "p99_ms": round(percentile(s, 99) * 1000, 2),
                    }
                    for name, s in self._stages.items()
                },
                "counters": dict(self._counters),
                "info": dict(self.info),
                "output_gap_max_ms": round(self._gaps.max_s * 1000, 1),
                # [wall time it ended, gap (ms)]: the longest of each of the last OutputGaps.RECENT_S seconds
                "output_gaps": [[round(end, 3), round(gap * 1000, 1)] for end, gap in self._gaps.recent()],
            }

    def status_line(self) -> str:
        s = self.snapshot()
        c = s["counters"]
        engine = s["stages"].get("engine", {}).get("p50_ms", 0.0)
        parts = [
            f"in {s['fps_in']:5.1f} fps",
            f"out {s['fps_out']:5.1f} fps",
            f"engine {engine:6.1f} ms",
            f"latency p50 {s['latency_p50_ms']:6.1f} / p99 {s['latency_p99_ms']:6.1f} ms",
            f"drops {c.get('drops_input', 0)}",
            f"repeats {c.get('repeats', 0)}",
        ]
        lost = sink_drops(c) + c.get("drops_output", 0)
        if lost:  # frames the stream itself lost (input drops are only a camera faster than the model)
            parts.append(f"output drops {lost}")
        if s["info"].get("transform"):
            parts.append(s["info"]["transform"])
        return " | ".join(parts)

    def prometheus_text(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        s = self.snapshot()
        lines: list[str] = []

        def gauge(name: str, help_text: str, value: float, labels: str = "") -> None:
            if not any(line.startswith(f"# TYPE {name} ") for line in lines):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name}{labels} {value}")

        gauge("streamer_fps_in", "Input frames per second.", s["fps_in"])
        gauge("streamer_fps_out", "Output frames per second handed to the sinks.", s["fps_out"])
        gauge("streamer_fps_engine", "Frames per second through the transform.", s["fps_engine"])
        gauge("streamer_latency_seconds", "Glass-to-glass latency (capture to sink hand-off).", s["latency_p50_ms"] / 1000, '{quantile="0.5"}')
        gauge("streamer_latency_seconds", "Glass-to-glass latency (capture to sink hand-off).", s["latency_p99_ms"] / 1000, '{quantile="0.99"}')
        gauge("streamer_output_gap_max_seconds", "Longest time between two frames handed to the sinks since start.",
              s["output_gap_max_ms"] / 1000)
        recent = max((gap for _, gap in s["output_gaps"]), default=0.0)
        gauge("streamer_output_gap_recent_max_seconds",
              f"Longest time between two frames handed to the sinks in the last {OutputGaps.RECENT_S} s.", recent / 1000)
        for stage, v in sorted(s["stages"].items()):
            gauge("streamer_stage_seconds", "Per-stage time.", v["p50_ms"] / 1000, f'{{stage="{stage}",quantile="0.5"}}')
            gauge("streamer_stage_seconds", "Per-stage time.", v["p99_ms"] / 1000, f'{{stage="{stage}",quantile="0.99"}}')
        for name, value in sorted(s["counters"].items()):
            help_text = _COUNTER_HELP.get(name) or (_SINK_DROPS_HELP if name.startswith("drops_sink_") else "")
            if help_text:
                lines.append(f"# HELP streamer_{name}_total {help_text}")
            lines.append(f"# TYPE streamer_{name}_total counter")
            lines.append(f"streamer_{name}_total {value}")
        return "\n".join(lines) + "\n"
