"""A real OBS Studio, headless under Xvfb (recipe: /work/shared/design/io.md), for the OBS tests and the soak.

Each instance gets its own HOME (so the streamer's own OBS profile is never touched), a global.ini
that enables the websocket with a password (the --websocket_* flags do not enable the server), its own
X display (`xvfb-run -a` from a random start) and a free TCP port. `stop()` kills it by its PID (as a
crash would); `--disable-shutdown-check` keeps that from triggering the safe-mode prompt on the next start.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamer.config import ObsSettings
from streamer.control.obs.conn import ObsError, ObsSession, connect

INSTALL_HINT = "run `.ci/system-deps.sh` as root (apt-get install obs-studio obs-plugins xvfb xauth)"
PASSWORD = "streamer-test-pw-7f3a"

GLOBAL_INI = """[General]
FirstRun=true

[OBSWebSocket]
FirstLoad=false
ServerEnabled=true
ServerPort={port}
AlertsEnabled=false
AuthRequired=true
ServerPassword={password}
"""


PROFILE_INI = """[General]
Name=Untitled

[Video]
BaseCX={width}
BaseCY={height}
OutputCX={width}
OutputCY={height}
FPSType=0
FPSCommon={fps}
"""


def missing_tools() -> list[str]:
    """What is missing to start a headless OBS here (empty: it can run)."""
    return [tool for tool in ("obs", "xvfb-run") if shutil.which(tool) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ObsInstance:
    """One headless OBS. `restart()` keeps HOME and port (what a streamer restarting OBS does)."""

    def __init__(
        self, home: Path, port: int | None = None, password: str = PASSWORD, canvas: tuple[int, int, int] | None = None
    ) -> None:
        """canvas: (width, height, fps) of OBS's video mix; None keeps OBS's default (1920x1080 at 30 fps,
        about a fifth of a core in software GL; 320x180 at 10 fps takes a twentieth)."""
        self.home = home
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "obs-stdout.log"
        cfg = home / ".config" / "obs-studio"
        cfg.mkdir(parents=True, exist_ok=True)
        (cfg / "global.ini").write_text(GLOBAL_INI.format(port=self.port, password=password))
        if canvas is not None:
            profile = cfg / "basic" / "profiles" / "Untitled"
            profile.mkdir(parents=True, exist_ok=True)
            (profile / "basic.ini").write_text(PROFILE_INI.format(width=canvas[0], height=canvas[1], fps=canvas[2]))

    def settings(self, **overrides: Any) -> ObsSettings:
        return replace(
            ObsSettings(
                enabled=True, port=self.port, connect_timeout_s=5.0, reconnect_initial_s=0.2, reconnect_max_s=1.0
            ),
            **overrides,
        )

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "HOME": str(self.home), "QT_QPA_PLATFORM": "xcb", "LIBGL_ALWAYS_SOFTWARE": "1"}
        env.pop("WAYLAND_DISPLAY", None)
        cmd = [
            "xvfb-run",
            "-a",
            "-n",
            str(random.randint(100, 4000)),
            "-s",
            "-screen 0 1280x720x24",
            "obs",
            "--minimize-to-tray",
            "--disable-shutdown-check",
            "--disable-updater",
            "--multi",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"OBS exited with {self.proc.returncode} before its websocket opened:\n{self.log_tail()}"
                )
            try:
                session = connect(self.settings(connect_timeout_s=2.0), self.password)
            except ObsError as e:
                last = str(e)
                time.sleep(0.3)
                continue
            session.close()
            return
        self.stop()
        raise RuntimeError(f"OBS websocket not up after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def connect(self) -> ObsSession:
        return connect(self.settings(), self.password)

    def obs_pid(self) -> int | None:
        """PID of the obs process itself (a child of xvfb-run)."""
        if self.proc is None:
            return None
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.proc.pid and comm == "obs":
                return int(stat.parent.name)
        return None

    def stop(self) -> None:
        """Kill OBS by its PID (as a crash would), then let xvfb-run take its Xvfb down."""
        if self.proc is None:
            return
        pid = self.obs_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # xvfb-run stuck: end the group we started
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no OBS log)"
