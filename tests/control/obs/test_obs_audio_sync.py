"""Audio sync against a real headless OBS: `streamer obs setup` sets the configured audio inputs' sync
offset (read back with obsws-python's own client), and the running controller moves it with the measured
latency by more than 20 ms, not by less."""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import obsws_python
import pytest
from obs_harness import PASSWORD, ObsInstance, running_obs

from streamer.config import Settings
from streamer.control.obs.audio_sync import estimated_latency_ms, last_latency_ms, record_latency
from streamer.control.obs.conn import ObsSession
from streamer.control.obs.controller import ObsController, doctor_checks, setup_command
from streamer.control.obs.setup import retire_input
from streamer.metrics import Metrics
from streamer.prompts import PromptBus
from streamer.store import Store

pytestmark = pytest.mark.obs
MIC = "Test Mic"  # a PulseAudio input capture: it has an audio sync offset even with no device behind it


@pytest.fixture(scope="module")
def obs_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObsInstance]:
    yield from running_obs(tmp_path_factory)


@pytest.fixture
def mic(obs_instance: ObsInstance) -> Iterator[str]:
    session = obs_instance.connect()
    scene = session.request("GetCurrentProgramScene")["currentProgramSceneName"]
    session.request("CreateInput", {"sceneName": scene, "inputName": MIC, "inputKind": "pulse_input_capture",
                                    "inputSettings": {}, "sceneItemEnabled": True})  # fmt: skip
    try:
        yield MIC
    finally:
        retire_input(session, MIC, f"{MIC} (removed {time.monotonic_ns()})")  # frees the name at once
        session.close()


def read_offset(obs: ObsInstance, name: str) -> int:
    """The offset as OBS reports it, through obsws-python's own typed request (not our session wrapper)."""
    client = obsws_python.ReqClient(host="127.0.0.1", port=obs.port, password=PASSWORD, timeout=5)
    try:
        return int(client.get_input_audio_sync_offset(name).input_audio_sync_offset)
    finally:
        client.base_client.ws.close()


def write_config(tmp_path: Path, obs: ObsInstance, inputs: list[str], extra_ms: int = 0) -> Path:
    path = tmp_path / "streamer.toml"
    path.write_text(f"""
[sinks]
enabled = ["network"]
[store]
path = "{tmp_path / 'streamer.db'}"
[obs]
enabled = true
port = {obs.port}
scene = "Audio Sync Test"
ai_input = "Audio Sync Test video"
prompt_input = "Audio Sync Test prompt"
audio_sync_inputs = {inputs!r}
audio_sync_extra_ms = {extra_ms}
""".replace("'", '"'), encoding="utf-8")  # fmt: skip
    return path


def test_setup_sets_the_offset_to_the_estimate_then_to_the_measured_latency(
    obs_instance: ObsInstance, mic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer import config

    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", PASSWORD)
    assert read_offset(obs_instance, mic) == 0
    cfg = write_config(tmp_path, obs_instance, [mic], extra_ms=10)
    settings = config.load(cfg)
    assert setup_command(argparse.Namespace(config=str(cfg))) == 0
    estimate = round(estimated_latency_ms(settings) + 10)
    assert read_offset(obs_instance, mic) == estimate
    assert f"audio sync '{mic}': 0 -> {estimate} ms (estimated latency" in capsys.readouterr().out

    store = Store(settings.store.path)  # what a running daemon leaves behind
    record_latency(store, settings, 163.6)
    store.close()
    assert setup_command(argparse.Namespace(config=str(cfg))) == 0
    assert read_offset(obs_instance, mic) == 174  # 163.6 measured + 10 extra
    assert "last measured latency p50 164 ms + 10 ms obs.audio_sync_extra_ms" in capsys.readouterr().out
    assert setup_command(argparse.Namespace(config=str(cfg))) == 0
    assert "obs setup: unchanged" in capsys.readouterr().out  # a second run changes nothing
    checks = {c.name: c for c in doctor_checks(settings)}
    assert checks[f"obs audio sync '{mic}'"].status == "OK" and checks[f"obs audio sync '{mic}'"].detail == "offset 174 ms"


def test_setup_names_an_audio_input_obs_does_not_have(
    obs_instance: ObsInstance, mic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", PASSWORD)
    cfg = write_config(tmp_path, obs_instance, ["Mic/Aux"])
    assert setup_command(argparse.Namespace(config=str(cfg))) == 1
    out = capsys.readouterr().out
    assert "obs.audio_sync_inputs names 'Mic/Aux', which this OBS does not have" in out and MIC in out
    from streamer import config

    check = {c.name: c for c in doctor_checks(config.load(cfg))}["obs audio sync 'Mic/Aux'"]
    assert check.status == "FAIL" and "audio_sync_inputs" in check.fix


@dataclass
class Ctx:
    settings: Settings
    bus: PromptBus
    metrics: Metrics
    store: Store
    pipeline: Any = field(default_factory=lambda: type("P", (), {"set_scene_active": lambda self, a: None})())
    control: Any = None


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_the_running_controller_follows_the_latency_by_more_than_20_ms_only(
    obs_instance: ObsInstance, mic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamer import config
    from streamer.control.obs import audio_sync

    monkeypatch.setattr(audio_sync, "RECORD_EVERY_S", 0.5)  # store the p50 often, to see the last one

    settings = config.load(write_config(tmp_path, obs_instance, [mic]))
    settings = replace(settings, obs=replace(settings.obs, reconnect_initial_s=0.2))
    metrics, store = Metrics(), Store(settings.store.path)
    metrics.info["transform"] = "model tiny cpu eager"  # the configured path runs (not a passthrough stand-in)
    ctx = Ctx(settings, PromptBus("first prompt"), metrics, store)
    controller = ObsController(ctx, session_factory=lambda s, **kw: ObsSession(s, PASSWORD, **kw))  # type: ignore[arg-type]
    assert controller.audio_sync is not None
    controller.audio_sync.follower.hold_s = 1.0  # the rule is the same at the default 3 s; the test is faster

    def measure(ms: float) -> None:
        metrics.clear_latency()
        for _ in range(50):
            metrics.latency(ms / 1000)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    task = asyncio.run_coroutine_threadsafe(controller.run(), loop)
    try:
        wait_for(lambda: controller.connected, 20, "the controller to connect")
        measure(100)
        wait_for(lambda: read_offset(obs_instance, mic) == 100, 10, "the offset to follow 100 ms")
        measure(115)  # 15 ms away: inside the dead band
        time.sleep(3.0)  # three times the hold, six checks
        assert read_offset(obs_instance, mic) == 100
        measure(140)  # 40 ms away: moves
        wait_for(lambda: read_offset(obs_instance, mic) == 140, 10, "the offset to follow 140 ms")
        wait_for(lambda: last_latency_ms(settings) == 140.0, 5, "the p50 stored for the next `obs setup`")
    finally:
        task.cancel()
        time.sleep(0.3)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        store.close()
