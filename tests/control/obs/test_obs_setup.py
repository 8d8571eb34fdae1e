"""Against a real headless OBS: password auth, `streamer obs setup` idempotence and repair, the doctor
checks, and the network return path (the daemon's network sink -> udp MPEG-TS -> OBS media source)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from obs_harness import PASSWORD, ObsInstance, running_obs

from streamer import config
from streamer.control.obs.conn import ObsAuthError, connect
from streamer.control.obs.controller import doctor_checks, setup_command
from streamer.control.obs.setup import retire_input, run_setup

pytestmark = pytest.mark.obs


@pytest.fixture(scope="module")
def obs_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObsInstance]:
    yield from running_obs(tmp_path_factory)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, obs: ObsInstance, scene: str, udp_port: int) -> Path:
    path.write_text(
        f"""
[sinks]
enabled = ["network"]
[sinks.network]
url = "udp://127.0.0.1:{udp_port}?pkt_size=1316"
[obs]
enabled = true
port = {obs.port}
scene = "{scene}"
ai_input = "{scene} video"
prompt_input = "{scene} prompt"
""",
        encoding="utf-8",
    )
    return path


def screenshot(obs: ObsInstance, source: str, width: int, height: int) -> np.ndarray:
    session = obs.connect()
    try:
        data = session.request("GetSourceScreenshot", {
            "sourceName": source, "imageFormat": "png", "imageWidth": width, "imageHeight": height,
        })
    finally:
        session.close()
    png = base64.b64decode(data["imageData"].split(",", 1)[1])
    with av.open(io.BytesIO(png), format="png_pipe") as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_connects_with_password_and_reports_versions(obs_instance: ObsInstance) -> None:
    session = connect(obs_instance.settings(), PASSWORD)
    try:
        v = session.request("GetVersion")
    finally:
        session.close()
    assert v["obsVersion"].split(".")[0].isdigit() and int(v["obsVersion"].split(".")[0]) >= 28
    assert v["obsWebSocketVersion"].startswith("5.")


@pytest.mark.parametrize("password, hint", [("not-the-password", "was refused"), ("", "set OBS_WEBSOCKET_PASSWORD")])
def test_wrong_or_missing_password_fails_clearly(obs_instance: ObsInstance, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture, password: str, hint: str) -> None:
    monkeypatch.delenv("OBS_WEBSOCKET_PASSWORD", raising=False)
    caplog.set_level("DEBUG")
    with pytest.raises(ObsAuthError, match=hint) as err:
        connect(obs_instance.settings(), password)
    assert f"ws://127.0.0.1:{obs_instance.port}" in str(err.value)
    assert PASSWORD not in caplog.text and (not password or password not in caplog.text)


def test_setup_creates_then_reports_unchanged_then_repairs(
    obs_instance: ObsInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", PASSWORD)
    udp_port = free_udp_port()
    cfg = write_config(tmp_path / "streamer.toml", obs_instance, "Setup Test", udp_port)
    args = argparse.Namespace(config=str(cfg))

    assert setup_command(args) == 0
    first = capsys.readouterr().out
    assert "scene 'Setup Test': created" in first
    assert "input 'Setup Test video' (ffmpeg_source): created" in first
    assert "input 'Setup Test prompt' (text_ft2_source_v2): created" in first
    assert "skipped: this OBS has no browser source" in first

    session = obs_instance.connect()
    try:
        video = session.request("GetInputSettings", {"inputName": "Setup Test video"})
        assert video["inputKind"] == "ffmpeg_source"
        s = video["inputSettings"]
        assert s["input"] == f"udp://127.0.0.1:{udp_port}"  # the sink's URL without sender-only options
        assert (s["buffering_mb"], s["input_format"], s["is_local_file"]) == (0, "mpegts", False)
        items = session.request("GetSceneItemList", {"sceneName": "Setup Test"})["sceneItems"]
        assert {i["sourceName"] for i in items} == {"Setup Test video", "Setup Test prompt"}
    finally:
        session.close()

    assert setup_command(args) == 0
    second = capsys.readouterr().out
    assert ": created" not in second and ": changed" not in second and ": added" not in second
    assert second.strip().endswith("obs setup: unchanged")

    # someone turned buffering back on and moved the text to another scene: setup repairs exactly that
    # (it stays an input only while some scene holds it: OBS drops an input with its last scene item)
    session = obs_instance.connect()
    try:
        session.request("SetInputSettings", {"inputName": "Setup Test video", "inputSettings": {"buffering_mb": 2}})
        session.request("CreateScene", {"sceneName": "Setup Other"})
        session.request("CreateSceneItem", {"sceneName": "Setup Other", "sourceName": "Setup Test prompt"})
        item = session.request("GetSceneItemId", {"sceneName": "Setup Test", "sourceName": "Setup Test prompt"})
        session.request("RemoveSceneItem", {"sceneName": "Setup Test", "sceneItemId": item["sceneItemId"]})
    finally:
        session.close()
    assert setup_command(args) == 0
    third = capsys.readouterr().out
    assert "input 'Setup Test video' (ffmpeg_source): changed buffering_mb" in third
    assert "input 'Setup Test prompt' (text_ft2_source_v2): added to scene 'Setup Test'" in third, third
    assert "obs setup: 2 change(s)" in third


def test_setup_without_obs_or_password_says_why(obs_instance: ObsInstance, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OBS_WEBSOCKET_PASSWORD", raising=False)
    cfg = write_config(tmp_path / "s.toml", obs_instance, "Nope", free_udp_port())
    assert setup_command(argparse.Namespace(config=str(cfg))) == 1
    assert "set OBS_WEBSOCKET_PASSWORD" in capsys.readouterr().out


def test_doctor_fails_with_the_fix_until_setup_ran(obs_instance: ObsInstance, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", PASSWORD)
    cfg = write_config(tmp_path / "d.toml", obs_instance, "Doctor Test", free_udp_port())
    settings = config.load(cfg)
    before = {c.name: c for c in doctor_checks(settings)}
    assert before["obs connection"].status == "OK"
    assert "OBS " in before["obs version"].detail and "obs-websocket 5." in before["obs version"].detail
    assert before["obs scene"].status == "FAIL" and "streamer obs setup" in before["obs scene"].fix
    assert before["obs input 'Doctor Test video'"].status == "FAIL"
    assert setup_command(argparse.Namespace(config=str(cfg))) == 0
    after = list(doctor_checks(settings))
    assert [c for c in after if c.status != "OK"] == []

    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", "wrong")
    bad = list(doctor_checks(settings))
    assert bad[0].status == "FAIL" and "refused" in bad[0].detail and "OBS_WEBSOCKET_PASSWORD" in bad[0].fix


def test_network_sink_frames_show_up_in_obs(obs_instance: ObsInstance, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's real network sink sends stamped frames; OBS's media source shows them, live."""
    from streamer.frames import Frame
    from streamer.sinks.network import NetworkSink
    from streamer.sources.pattern import read_stamp, stamp_index

    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", PASSWORD)
    cfg = write_config(tmp_path / "n.toml", obs_instance, "Return Test", free_udp_port())
    assert setup_command(argparse.Namespace(config=str(cfg))) == 0
    settings = config.load(cfg)
    width, height, fps = 320, 180, 30.0
    sink = NetworkSink(settings)
    sink.open(width, height, fps)
    sent: list[int] = []
    colour = np.array([200, 40, 40], np.uint8)
    stop = threading.Event()

    def send() -> None:
        index = 0
        while not stop.is_set():
            pixels = np.empty((height, width, 3), np.uint8)
            pixels[:] = colour
            stamp_index(pixels, index)
            sink.write(Frame(pixels=pixels, capture_time=time.monotonic(), index=index, pts=index))
            sent.append(index)
            index += 1
            time.sleep(1 / fps)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        def stamp_when(pred: object, timeout: float = 20.0) -> tuple[int, np.ndarray]:
            deadline = time.monotonic() + timeout
            last: tuple[int | None, np.ndarray | None] = (None, None)
            while time.monotonic() < deadline:
                img = screenshot(obs_instance, settings.obs.ai_input, width, height)
                stamp = read_stamp(img)
                last = (stamp, img)
                if stamp is not None and pred(stamp, img):  # type: ignore[operator]
                    return stamp, img
                time.sleep(0.2)
            pytest.fail(f"OBS never showed the expected frame (last stamp {last[0]}, mean colour "
                        f"{None if last[1] is None else last[1].reshape(-1, 3).mean(0)}):\n{obs_instance.log_tail()}")

        first, img = stamp_when(lambda s, i: True)
        centre = img[height // 2:, width // 2:].reshape(-1, 3).mean(0)
        assert np.abs(centre - colour).max() < 40, f"OBS shows {centre}, the sink sent {colour}"
        assert first <= sent[-1]
        # live, not a stale frame: later screenshots show later stamps and the new colour
        colour = np.array([30, 60, 210], np.uint8)
        later, img = stamp_when(lambda s, i: s > first + 15 and i[height // 2:, width // 2:, 2].mean() > 150)
        assert sent[-1] - later < 2 * fps, "OBS shows frames more than 2 s old"
    finally:
        stop.set()
        sender.join(timeout=5)
        sink.close()


def test_setup_virtualcam_path_needs_a_device(obs_instance: ObsInstance) -> None:
    from streamer.control.obs.setup import SetupError

    settings = replace(config.Settings(), obs=obs_instance.settings(return_path="virtualcam", scene="Cam Test"))
    session = obs_instance.connect()
    try:
        with pytest.raises(SetupError, match="obs.return_device"):
            run_setup(session, settings, "x", say=lambda _line: None)
        settings = replace(settings, obs=replace(settings.obs, return_device="/dev/video11"))
        report = run_setup(session, settings, "x", say=lambda _line: None)
        assert any("(v4l2_input): created" in line for line in report.lines)
        created = session.request("GetInputSettings", {"inputName": settings.obs.ai_input})["inputSettings"]
        assert created["device_id"] == "/dev/video11" and created["buffering"] is False
    finally:
        session.close()


def test_daemon_with_obs_component_returns_its_frames_and_prompt_to_obs(
    obs_instance: ObsInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole daemon (pattern source -> passthrough -> network sink, OBS component built by the app):
    OBS's media source shows the pattern's stamped frames, advancing, and the text source the prompt."""
    from streamer import app
    from streamer.sources.pattern import read_stamp

    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", PASSWORD)
    monkeypatch.setattr(app, "COMPONENTS", ["streamer.control.obs.controller:build"])
    cfg = write_config(tmp_path / "daemon.toml", obs_instance, "Daemon Test", free_udp_port())
    cfg.write_text(cfg.read_text() + f"""
[video]
width = 320
height = 180
fps = 25.0
[source]
kind = "pattern"
[engine]
transform = "passthrough"
[prompt]
initial = "a daemon prompt"
console = false
[store]
path = "{tmp_path / 'streamer.db'}"
""")
    settings = config.load(cfg)
    assert setup_command(argparse.Namespace(config=str(cfg))) == 0
    session = obs_instance.connect()
    session.request("SetInputSettings", {"inputName": "Daemon Test prompt", "inputSettings": {"text": "stale"}})
    loop = asyncio.new_event_loop()
    daemon = threading.Thread(target=loop.run_forever, daemon=True)
    daemon.start()
    # frames= bounds the run if the test dies; normally it is cancelled (as Ctrl-C would) once checked
    finished = threading.Event()

    async def daemon_main() -> int:
        try:
            return await app.run_daemon(settings, frames=25 * 60, interactive=False)
        finally:
            finished.set()  # after run_daemon's own cleanup (components cancelled, pipeline stopped)

    run = asyncio.run_coroutine_threadsafe(daemon_main(), loop)
    try:
        stamps: list[int] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(stamps) < 2 or stamps[-1] <= stamps[0] + 10):
            stamp = read_stamp(screenshot(obs_instance, "Daemon Test video", 320, 180))
            if stamp is not None:
                stamps.append(stamp)
            time.sleep(0.3)
        assert len(stamps) >= 2 and stamps[-1] > stamps[0] + 10, f"OBS did not show advancing frames: {stamps}"
        text = session.request("GetInputSettings", {"inputName": "Daemon Test prompt"})["inputSettings"]["text"]
        assert text == "a daemon prompt"

        # OBS crashes and comes back: the video never stopped (the stamps kept counting in real time),
        # the controller reconnects and puts the live prompt back, even over a re-run `obs setup`
        session.close()
        killed_at, last_before = time.monotonic(), stamps[-1]
        obs_instance.restart()
        session = obs_instance.connect()
        # OBS autosaved its sources; drop the text so setup recreates it with stale text: only the
        # reconnected controller (on connect, or on InputCreated) can put the live prompt back
        retire_input(session, "Daemon Test prompt", "Daemon Test prompt (dropped)")
        report = run_setup(session, settings, "stale text from setup", say=lambda _line: None)
        assert any("Daemon Test prompt' (text_ft2_source_v2): created" in line for line in report.lines), "\n".join(report.lines)

        def text_now() -> str:
            return str(session.request("GetInputSettings", {"inputName": "Daemon Test prompt"})["inputSettings"]["text"])

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and text_now() != "a daemon prompt":
            time.sleep(0.2)
        assert text_now() == "a daemon prompt", "the controller did not reconnect and restore the prompt"
        stamp, deadline = None, time.monotonic() + 15
        while time.monotonic() < deadline and stamp is None:
            stamp = read_stamp(screenshot(obs_instance, "Daemon Test video", 320, 180))
            time.sleep(0.2)
        assert stamp is not None, "no frames in OBS after its restart"
        elapsed_frames = (time.monotonic() - killed_at) * 25
        assert stamp - last_before > 0.6 * elapsed_frames, f"the pipeline stalled while OBS was away ({last_before} -> {stamp})"
        assert not run.done(), "the daemon stopped early"
    finally:
        session.close()
        run.cancel()
        assert finished.wait(20), "the daemon did not shut down after cancel"
        loop.call_soon_threadsafe(loop.stop)
        daemon.join(timeout=5)


def test_setup_replaces_an_input_of_the_wrong_kind(obs_instance: ObsInstance) -> None:
    base = config.Settings()
    settings = replace(base, sinks=replace(base.sinks, enabled=("network",)),
                       obs=obs_instance.settings(scene="Kind Test", ai_input="Kind Test video", prompt_input="Kind Test prompt"))
    session = obs_instance.connect()
    try:
        session.request("CreateScene", {"sceneName": "Kind Test"})  # not the live scene: removal there is deferred
        session.request("CreateInput", {"sceneName": "Kind Test", "inputName": "Kind Test video",
                                        "inputKind": "color_source_v3", "inputSettings": {}})
        report = run_setup(session, settings, "x", say=lambda _line: None)
        text = "\n".join(report.lines)
        assert "input 'Kind Test video' (ffmpeg_source): removed the old color_source_v3 input of that name" in text
        assert "input 'Kind Test video' (ffmpeg_source): created in scene 'Kind Test'" in text
        kinds = {i["inputName"]: i["inputKind"] for i in session.request("GetInputList")["inputs"]}
        assert kinds["Kind Test video"] == "ffmpeg_source"
        assert run_setup(session, settings, "x", say=lambda _line: None).changes == 0
    finally:
        session.close()
