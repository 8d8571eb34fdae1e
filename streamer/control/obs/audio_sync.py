"""Keep the microphone in step with the transformed picture: OBS's audio sync offset.

The picture reaches OBS 100-200 ms after the sound (a Wan chunk waits for 4 frames, then the model
runs), so the configured OBS audio inputs (`obs.audio_sync_inputs`, e.g. "Mic/Aux") are delayed by the
picture's glass-to-glass latency plus `obs.audio_sync_extra_ms` (the tap and OBS's return input, which
the daemon cannot measure): obs-websocket v5 `SetInputAudioSyncOffset` (milliseconds).

- `streamer obs setup` sets it once (`setup_offsets`): to the last p50 the daemon measured for this
  configuration (kept in the store while it runs), else to an estimate for the configuration
  (`estimated_latency_ms`), which the running daemon then corrects.
- While the daemon runs, the OBS controller moves it with the metrics' p50 (`AudioSync`): only when the
  p50 is more than MOVE_MS away from the offset for HOLD_S in a row (`OffsetFollower`), so jitter
  around a boundary never makes the audio jump back and forth.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from streamer.config import Settings
from streamer.control.obs.conn import RESOURCE_NOT_FOUND, ObsRequestError, ObsSession
from streamer.metrics import Metrics
from streamer.store import Store

log = logging.getLogger(__name__)

MOVE_MS = 20  # the offset follows the latency only when they differ by more than this
HOLD_S = 3.0  # ... for this long in a row (the p50 of a 600-sample window moves slowly; a blip does not count)
CHECK_EVERY_S = 0.5
RECORD_EVERY_S = 10.0  # how often the running daemon stores its p50 for the next `obs setup`
OBS_RANGE_MS = (-950, 20000)  # what SetInputAudioSyncOffset accepts

# The estimate's parts, from docs/benchmarks.md: the daemon's own capture -> sink hand-off on the
# passthrough path (W5, p50 11.8 ms); the tiny preset per frame on a 2-core CPU (W4 bf16, 45-67 ms) and
# on a GPU (W3: 3.4 ms on an H100; slower cards a few times that). With these, W1 on an H100 comes out at
# 50 (wait) + 44.6 (chunk) + 12 = 107 ms against 111 measured, W4 at 72 ms against 63-88.
DAEMON_MS = 12.0
TINY_CPU_MS = 60.0
TINY_GPU_MS = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS measured_latency (
    config_key TEXT PRIMARY KEY,  -- what the latency depends on (latency_key)
    p50_ms REAL NOT NULL,
    measured_at REAL NOT NULL
);
"""

Request = Callable[[str, dict[str, Any] | None], Awaitable[dict[str, Any] | None]]


def latency_key(settings: Settings) -> str:
    """The settings the glass-to-glass latency depends on (another model or size measures anew)."""
    m = settings.model
    parts: dict[str, Any] = {"transform": settings.engine.transform, "fps": settings.video.fps,
                             "source": settings.source.kind}  # fmt: skip
    if settings.engine.transform == "model":
        parts.update(preset=m.preset, size=[m.width, m.height], steps=m.steps, mode=m.mode, device=m.device)
    return json.dumps(parts, sort_keys=True)


def record_latency(store: Store, settings: Settings, p50_ms: float) -> None:
    store.ensure_schema(SCHEMA)
    store.execute(
        "INSERT INTO measured_latency (config_key, p50_ms, measured_at) VALUES (?, ?, ?) "
        "ON CONFLICT(config_key) DO UPDATE SET p50_ms = excluded.p50_ms, measured_at = excluded.measured_at",
        (latency_key(settings), p50_ms, time.time()),
    )


def last_latency_ms(settings: Settings) -> float | None:
    """The p50 the daemon last measured for this configuration (None when it never ran it)."""
    path = Path(settings.store.path).expanduser()
    if settings.store.path != ":memory:" and not path.is_file():
        return None  # never ran: do not create the daemon's database from a setup command
    store = Store(settings.store.path)
    try:
        store.ensure_schema(SCHEMA)
        rows = store.query("SELECT p50_ms FROM measured_latency WHERE config_key = ?", (latency_key(settings),))
    finally:
        store.close()
    return float(rows[0]["p50_ms"]) if rows else None


def estimated_latency_ms(settings: Settings) -> float:
    """Glass-to-glass p50 expected for the configuration before it ever ran: the mean wait of a frame
    for the rest of its chunk, one chunk of model time, and the daemon's own hand-off."""
    if settings.engine.transform == "passthrough":
        return DAEMON_MS
    import torch

    from streamer.model.gpu_plan import LIVE_FPS, detect_card, frames_per_chunk, predicted_fps, triton_installed

    m = settings.model
    frames = frames_per_chunk(m)
    wait_ms = (frames - 1) / 2 / settings.video.fps * 1000
    on_gpu = m.device.startswith("cuda") or (m.device == "auto" and torch.cuda.is_available())
    if m.preset == "tiny":
        chunk_ms = TINY_GPU_MS if on_gpu else TINY_CPU_MS
    else:
        card = detect_card() if on_gpu else None
        fps = predicted_fps(card, m, fast_path=triton_installed()) if card else 0.0
        chunk_ms = frames / (fps or LIVE_FPS) * 1000  # no card here: a live setting delivers at least LIVE_FPS
    return wait_ms + chunk_ms + DAEMON_MS


def offset_for(settings: Settings, latency_ms: float) -> int:
    low, high = OBS_RANGE_MS
    return max(low, min(high, round(latency_ms + settings.obs.audio_sync_extra_ms)))


def setup_offsets(session: ObsSession, settings: Settings, say: Callable[[str], None] = print) -> int:
    """`streamer obs setup`'s part: set every obs.audio_sync_inputs input's offset, read it back.
    Returns the number of inputs changed. Raises SetupError naming an input OBS does not have."""
    from streamer.control.obs.setup import SetupError

    inputs = settings.obs.audio_sync_inputs
    if not inputs:
        return 0
    measured = last_latency_ms(settings)
    latency = measured if measured is not None else estimated_latency_ms(settings)
    why = (f"last measured latency p50 {measured:.0f} ms" if measured is not None
           else f"estimated latency {latency:.0f} ms (not measured yet: the running daemon corrects it)")  # fmt: skip
    if settings.obs.audio_sync_extra_ms:
        why += f" + {settings.obs.audio_sync_extra_ms} ms obs.audio_sync_extra_ms"
    want = offset_for(settings, latency)
    changes = 0
    for name in inputs:
        try:
            have = session.request("GetInputAudioSyncOffset", {"inputName": name})["inputAudioSyncOffset"]
        except ObsRequestError as e:
            if e.code != RESOURCE_NOT_FOUND:
                raise
            names = [i["inputName"] for i in session.request("GetInputList").get("inputs", [])]
            raise SetupError(f"obs.audio_sync_inputs names '{name}', which this OBS does not have "
                             f"(its inputs: {', '.join(names) or 'none'})") from None  # fmt: skip
        if have == want:
            say(f"audio sync '{name}': unchanged at {want} ms ({why})")
            continue
        session.request("SetInputAudioSyncOffset", {"inputName": name, "inputAudioSyncOffset": want})
        got = session.request("GetInputAudioSyncOffset", {"inputName": name})["inputAudioSyncOffset"]
        if got != want:
            raise SetupError(f"OBS kept the audio sync offset of '{name}' at {got} ms after it was set to {want}")
        say(f"audio sync '{name}': {have} -> {want} ms ({why})")
        changes += 1
    return changes


class OffsetFollower:
    """When to move the offset: a dead band of `move_ms` around the applied value, and a change must
    last `hold_s` before it counts. Pure (the caller passes the clock), so it is tested without OBS."""

    def __init__(self, applied_ms: int | None, move_ms: float = MOVE_MS, hold_s: float = HOLD_S) -> None:
        self.applied_ms = applied_ms  # None: unknown (the inputs disagree): the first measurement sets it
        self.move_ms = move_ms
        self.hold_s = hold_s
        self._since: float | None = None  # when the wanted value first left the dead band

    def update(self, want_ms: int | None, now: float) -> int | None:
        """`want_ms` from the latest p50 (None: no measurement); returns the offset to set now, or None."""
        if want_ms is None:
            self._since = None
            return None
        if self.applied_ms is not None and abs(want_ms - self.applied_ms) <= self.move_ms:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        if now - self._since < self.hold_s:
            return None
        self._since = None
        return want_ms


class AudioSync:
    """The OBS controller's part: on connect read OBS's offsets; then, every CHECK_EVERY_S, follow the
    metrics' p50 and store it (for the next `obs setup`) while the configured path runs."""

    def __init__(self, settings: Settings, metrics: Metrics, store: Store | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.follower = OffsetFollower(None)
        self._inputs: list[str] = []
        self._next_check = 0.0
        self._next_record = 0.0

    async def connected(self, request: Request) -> None:
        """OBS (re)connected: start from the offsets it has (a restarted OBS keeps its saved ones)."""
        self._inputs, offsets = [], set()
        for name in self.settings.obs.audio_sync_inputs:
            reply = await request("GetInputAudioSyncOffset", {"inputName": name})
            if reply is not None:  # a missing input was reported by the request itself
                self._inputs.append(name)
                offsets.add(int(reply["inputAudioSyncOffset"]))
        self.follower.applied_ms = offsets.pop() if len(offsets) == 1 else None
        self._next_check = 0.0

    async def tick(self, request: Request, now: float) -> None:
        if now < self._next_check or not self._inputs:
            return
        self._next_check = now + CHECK_EVERY_S
        s = self.metrics.snapshot()
        p50 = float(s["latency_p50_ms"])  # 0.0 until frames went through the current path
        want = offset_for(self.settings, p50) if p50 > 0 else None
        if p50 > 0 and self.store is not None and now >= self._next_record and self._configured_path(s):
            self._next_record = now + RECORD_EVERY_S
            record_latency(self.store, self.settings, p50)
        target = self.follower.update(want, now)
        if target is None:
            return
        for name in self._inputs:
            await request("SetInputAudioSyncOffset", {"inputName": name, "inputAudioSyncOffset": target})
        log.info("OBS audio sync offset %s -> %d ms (glass-to-glass p50 %.0f ms)",
                 self.follower.applied_ms, target, p50)  # fmt: skip
        self.follower.applied_ms = target

    def _configured_path(self, snapshot: dict[str, Any]) -> bool:
        """Whether the p50 describes the configured path, not a passthrough stand-in (kill switch, loading)."""
        running = str(snapshot["info"].get("transform", ""))
        return self.settings.engine.transform == "passthrough" or (bool(running) and not running.startswith("passthrough"))
