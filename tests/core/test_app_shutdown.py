"""Shutdown never waits for a model load: SIGTERM while the model is still loading exits at once, cleanly
(exit 0, no abort from tearing torch down under the loader thread), with the recording finalised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[2]

# The daemon's own CLI, with the model builder replaced by a load that keeps torch busy forever.
SCRIPT = """
import sys, torch
import streamer.model.builder as builder

def never_ready(settings):
    print("model load started", flush=True)
    a = torch.randn(512, 512)
    while True:  # torch work on the loader thread, as a real (slow) load does
        a = a @ a
        a = a / a.norm()

builder.build_model_transform = never_ready
from streamer.cli import console_main
sys.exit(console_main())
"""


def test_sigterm_during_a_model_load_exits_at_once_and_cleanly(tmp_path: Path) -> None:
    cfg = tmp_path / "streamer.toml"
    cfg.write_text(f"""
[video]
width = 160
height = 96
fps = 20.0
[sinks]
enabled = ["null"]
[engine]
transform = "model"
[store]
path = "{tmp_path / 'streamer.db'}"
[dashboard]
enabled = false
""")
    rec = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "run", "--config", str(cfg), "--record", str(rec), "--no-console"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not (
            any("model load started" in x for x in lines) and any(" fps |" in x for x in lines)
        ):
            time.sleep(0.1)
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        reader.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert took < 5.0, f"shutdown took {took:.1f} s\n{out}"
    assert "terminate called" not in out and "Fatal Python error" not in out, out
    assert "shutting down without waiting for it" in out and "stopped after" in out, out
    with av.open(str(rec)) as c:  # the recording was finalised before the exit
        assert sum(1 for _ in c.decode(c.streams.video[0])) >= 10
