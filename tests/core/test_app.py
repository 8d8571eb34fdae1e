"""The daemon end to end through its CLI: pattern -> transform -> record, clean SIGTERM shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av

from streamer.cli import main
from streamer.pipeline import wait_for_loaders

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, transform: str = "passthrough", extra: str = "") -> Path:
    cfg = tmp_path / "streamer.toml"
    cfg.write_text(
        f"""
[video]
width = 160
height = 96
fps = 20.0
[sinks]
enabled = ["virtualcam", "null"]
[engine]
transform = "{transform}"
[model]
width = 64
height = 64
[store]
path = "{tmp_path / 'streamer.db'}"
[dashboard]
enabled = false
{extra}
"""
    )
    return cfg


def probe(path: Path) -> tuple[int, float, tuple[int, int]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        return len(frames), float(frames[-1].time or 0.0), (frames[0].width, frames[0].height)


def test_run_records_a_playable_file_with_the_right_frame_count(tmp_path):
    rec = tmp_path / "out.mp4"
    code = main(["run", "--config", str(write_config(tmp_path)), "--frames", "30", "--record", str(rec), "--no-console"])
    assert code == 0
    count, last_time, size = probe(rec)
    assert count == 30 and size == (160, 96)
    # timestamps follow the paced output clock (wall time on the 1/fps grid; a loaded CI machine may add a tick or two)
    assert 29 / 20.0 - 0.01 <= last_time <= 29 / 20.0 + 0.5


def test_run_with_the_tiny_model_end_to_end(tmp_path):
    """pattern -> tiny model (random weights) -> record, through the CLI (the model may still be loading)."""
    rec = tmp_path / "model.mp4"
    code = main(["run", "--config", str(write_config(tmp_path, "model")), "--frames", "40", "--record", str(rec), "--no-console"])
    assert code == 0  # returned to this in-process caller even when the model was still loading (a slow machine)
    assert wait_for_loaders(120), "the abandoned model load did not end"  # not left running into later tests
    count, _, size = probe(rec)
    assert count == 40 and size == (160, 96)


def test_pattern_through_the_loaded_tiny_model_to_a_recording(tmp_path):
    """The same daemon parts, waiting until the model is loaded, so the recorded frames are model output."""
    from streamer import config
    from streamer.app import build_pipeline
    from streamer.metrics import Metrics
    from streamer.prompts import PromptBus

    settings = config.load(write_config(tmp_path, "model"))
    metrics = Metrics()
    rec = tmp_path / "loaded.mp4"
    pipeline = build_pipeline(settings, PromptBus("a watercolour painting"), metrics, str(rec))
    pipeline.start()
    try:
        deadline = time.monotonic() + 120
        while "RANDOM WEIGHTS" not in pipeline.transform_status() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "tiny" in pipeline.transform_status(), pipeline.transform_status()
        start = metrics.snapshot()["counters"].get("frames_out", 0)
        while metrics.snapshot()["stages"].get("engine") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        pipeline.frame_limit = pipeline.frames_out + 15
        assert pipeline.frames_done.wait(60)
    finally:
        pipeline.stop()
    snap = metrics.snapshot()
    assert snap["counters"]["frames_out"] > start
    assert snap["stages"]["engine"]["p50_ms"] > 0  # the model itself ran (passthrough is timed apart)
    assert "model_failures" not in snap["counters"]
    count, _, size = probe(rec)
    assert count >= 15 and size == (160, 96)


def test_sigterm_shuts_down_cleanly_and_finalises_the_recording(tmp_path):
    rec = tmp_path / "sig.mp4"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "run", "--config", str(write_config(tmp_path)), "--record", str(rec)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(" fps |" in line for line in lines):
            time.sleep(0.1)  # wait for the first status line: the pipeline is running
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=5)
        out = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "shutting down" in out and "stopped after" in out
    assert "virtualcam" in out and "unavailable" in out  # the missing virtual camera was explained once
    count, _, _ = probe(rec)
    assert count >= 10


def test_init_writes_a_config_and_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "s.toml"
    assert main(["init", str(target)]) == 0
    assert "[model]" in target.read_text()
    assert main(["init", str(target)]) == 1
    assert main(["init", str(target), "--force"]) == 0


def test_bad_config_gives_a_clear_error_and_exit_2(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[video]\nfsp = 30\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "video.fsp" in err and "did you mean 'fps'" in err


def test_a_truncated_checkpoint_leaves_passthrough_running_with_a_clear_error(tmp_path):
    from streamer import config
    from streamer.app import build_pipeline
    from streamer.metrics import Metrics
    from streamer.prompts import PromptBus

    bad = tmp_path / "self_forcing.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": ")  # a header cut off mid-way
    cfg = write_config(tmp_path, "model")
    cfg.write_text(cfg.read_text().replace("[model]\n", f'[model]\ncheckpoint = "{bad}"\n'))
    settings = config.load(cfg)
    pipeline = build_pipeline(settings, PromptBus("x"), Metrics(), str(tmp_path / "out.mp4"))
    pipeline.start()
    try:
        deadline = time.monotonic() + 60
        while "failed to load" not in pipeline.transform_status() and time.monotonic() < deadline:
            time.sleep(0.1)
        status = pipeline.transform_status()
        pipeline.frame_limit = pipeline.frames_out + 5
        assert pipeline.frames_done.wait(10), "the stream stopped"
    finally:
        pipeline.stop()
    assert "failed to load" in status and "model.checkpoint" in status and "self_forcing.safetensors" in status, status
