"""Audio sync without OBS: when the offset moves (dead band + hold), what `obs setup` starts from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from streamer.config import Settings
from streamer.control.obs.audio_sync import (
    DAEMON_MS,
    HOLD_S,
    MOVE_MS,
    TINY_CPU_MS,
    OffsetFollower,
    estimated_latency_ms,
    last_latency_ms,
    offset_for,
    record_latency,
)
from streamer.store import Store


def test_the_offset_moves_only_past_the_dead_band_and_after_the_hold():
    f = OffsetFollower(applied_ms=100)
    assert (MOVE_MS, HOLD_S) == (20, 3.0)
    t = 0.0
    for want in (110, 90, 120, 80):  # within ±20 ms: never
        assert f.update(want, t) is None
        t += 1.0
    assert f.update(150, t) is None  # out of the band: starts the hold
    assert f.update(150, t + 2.9) is None
    assert f.update(150, t + 3.0) == 150


def test_jitter_across_the_band_edge_does_not_flap():
    f = OffsetFollower(applied_ms=100)
    moves = []
    for i in range(40):  # 20 s of a p50 hopping between 125 and 115 every half second
        target = f.update(125 if i % 2 == 0 else 115, i * 0.5)
        if target is not None:
            moves.append(target)
            f.applied_ms = target
    assert moves == []
    assert f.update(None, 30.0) is None  # no measurement (path switched): nothing, and the hold restarts


def test_unknown_offset_is_set_by_the_first_steady_measurement():
    f = OffsetFollower(applied_ms=None, hold_s=1.0)
    assert f.update(130, 0.0) is None
    assert f.update(130, 1.0) == 130


def test_setup_starts_from_the_last_measured_latency_of_this_configuration(tmp_path: Path):
    base = Settings()
    settings = replace(base, store=replace(base.store, path=str(tmp_path / "s.db")),
                       obs=replace(base.obs, audio_sync_inputs=("Mic/Aux",), audio_sync_extra_ms=15))  # fmt: skip
    assert last_latency_ms(settings) is None
    assert not (tmp_path / "s.db").exists()  # a setup command does not create the daemon's database
    store = Store(settings.store.path)
    record_latency(store, settings, 123.4)
    other = replace(settings, model=replace(settings.model, width=320))
    record_latency(store, other, 999.0)  # another size: another latency
    store.close()
    assert last_latency_ms(settings) == pytest.approx(123.4)
    assert offset_for(settings, 123.4) == 138  # + obs.audio_sync_extra_ms
    assert offset_for(settings, 50_000) == 20_000  # OBS's upper limit


def test_estimate_for_configurations_never_run():
    base = Settings()
    passthrough = replace(base, engine=replace(base.engine, transform="passthrough"))
    assert estimated_latency_ms(passthrough) == DAEMON_MS
    tiny_cpu = replace(base, model=replace(base.model, device="cpu"))
    assert estimated_latency_ms(tiny_cpu) == DAEMON_MS + TINY_CPU_MS
    # W1 without a visible card: 4-frame chunks at 30 fps wait 50 ms on average, plus a chunk at >= 24 fps
    wan = replace(base, model=replace(base.model, preset="wan-1.3b", width=832, height=480, device="cpu"))
    assert estimated_latency_ms(wan) == pytest.approx(50 + 4 / 24 * 1000 + DAEMON_MS)
