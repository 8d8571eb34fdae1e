"""The daemon under test and what it talks to: its generated config, its process, the network sender.

The daemon is the real `python -m streamer run`, started as a child process with a config written
here (pattern or network source -> the embedded tiny model -> network + record sinks, dashboard on,
Twitch against the soak's fake, OBS when one runs) and an environment that points Twitch at the fake
(STREAMER_TWITCH_API_BASE), fixes the dashboard token and turns on the model-step fault trigger
(STREAMER_FAULT_INJECT, streamer/fault_inject.py). Each start is one "incarnation" with its own log.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from streamer.fault_inject import ENV as FAULT_ENV

OWNER, BOT = "1000", "2000"  # the fake channel's broadcaster and bot accounts
VIEWER_BASE = 5000  # chatters are 5000, 5001, ...
VIEWERS = 400
COMMANDS = ("ai", "style", "vote", "aiqueue", "approve", "deny", "poll", "aioff", "aion", "strength")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Layout:
    """Where one soak keeps its files, and the ports it uses."""

    out: Path
    dashboard_port: int
    source_port: int
    sink_port: int

    @classmethod
    def create(cls, out: Path) -> Layout:
        out.mkdir(parents=True, exist_ok=True)
        layout = cls(out, free_port(), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM))
        for folder in (layout.recordings, layout.logs):
            folder.mkdir(exist_ok=True)
        layout.faults.mkdir(mode=0o700, exist_ok=True)
        os.chmod(layout.faults, 0o700)  # the daemon refuses a trigger folder others may write to
        return layout

    @property
    def config(self) -> Path:
        return self.out / "streamer.toml"

    @property
    def store(self) -> Path:
        return self.out / "streamer.db"

    @property
    def recordings(self) -> Path:
        return self.out / "recordings"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def faults(self) -> Path:
        return self.out / "faults"

    @property
    def source_url(self) -> str:
        return f"udp://127.0.0.1:{self.source_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


def daemon_config(
    layout: Layout, *, width: int, height: int, fps: float, source: str, client_id: str, obs_port: int | None
) -> dict[str, Any]:
    """The daemon's settings for a soak: small enough for 2 CPU cores, every control path switched on,
    and short retry delays so that recovery is measured, not the backoff ceilings."""
    zero = dict.fromkeys(COMMANDS, 0.0)
    return {
        "video": {"width": width, "height": height, "fps": fps},
        "source": {
            "kind": source,
            "url": layout.source_url if source == "network" else "",
            "timeout_s": 1.0,
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 1.0,
        },
        "sinks": {
            "enabled": ["network", "record"],
            "network": {"url": f"udp://127.0.0.1:{layout.sink_port}?pkt_size=1316", "bitrate_kbps": 500},
            "record": {"path": str(layout.recordings / "soak-{time}.mp4"), "preset": "ultrafast"},
        },
        "engine": {"transform": "model", "retry_model_after_s": 2.0},
        # its own prompt-embedding cache: thousands of soak prompts must not land in the user's cache
        "model": {"preset": "tiny", "width": width, "height": height, "cache_dir": str(layout.out / "prompt-cache")},
        "prompt": {"initial": "soak start", "console": False},
        "metrics": {"status_interval_s": 10.0},
        "store": {"path": str(layout.store)},
        # approval mode: chat proposals wait in the store until the soak approves them on the dashboard
        "moderation": {"mode": "approval", "min_change_interval_s": 0.0, "approval_max_age_s": 0.0},
        "twitch": {
            "enabled": True,
            "client_id": client_id,
            "bot_id": BOT,
            "owner_id": OWNER,
            "polls": "chat",
            "reward_enabled": False,
            "bot_is_moderator": True,
            "reconnect_initial_s": 0.5,
            "reconnect_max_s": 2.0,
            "user_cooldowns_s": zero,
            "global_cooldowns_s": zero,
        },
        "obs": {
            "enabled": obs_port is not None,
            "port": obs_port or 4455,
            "connect_timeout_s": 2.0,
            "reconnect_initial_s": 0.5,
            "reconnect_max_s": 2.0,
        },
        "dashboard": {"enabled": True, "port": layout.dashboard_port},
    }


def write_config(layout: Layout, settings: dict[str, Any]) -> Path:
    from streamer import config

    config.from_dict(settings, str(layout.config))  # refuse a bad soak config here, not in the child
    layout.config.write_text(tomlkit.dumps(settings))
    return layout.config


def seed_twitch_tokens(layout: Layout, fake: Any) -> None:
    """Log the bot and the broadcaster in, as `streamer twitch login` would, with tokens from the fake."""
    from streamer.control.twitch.auth import BOT_SCOPES, BROADCASTER_SCOPES, TokenStore
    from streamer.store import Store

    store = Store(layout.store)
    try:
        tokens = TokenStore(store)
        for uid, login, role, scopes in [
            (BOT, "aibot", "bot", BOT_SCOPES),
            (OWNER, "streamer", "broadcaster", BROADCASTER_SCOPES),
        ]:
            tok = fake.issue_token(uid, list(scopes))
            tokens.save(
                user_id=uid,
                login=login,
                role=role,
                access=tok.access,
                refresh=tok.refresh,
                scopes=scopes,
                client_id=fake.client_id,
            )
    finally:
        store.close()


def children_of(pid: int) -> list[int]:
    """The direct children of a process (its encoder processes, for the daemon)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return kids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class ChildProcess:
    """One program the soak starts, SIGKILLs and restarts; each start logs to logs/<name>-<n>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path, cwd: Path) -> None:
        self.name, self.argv, self.env, self.logs, self.cwd = name, argv, env, logs, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0  # monotonic

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            # its own session: a signal meant for the soak (Ctrl-C) reaches the soak, which stops this cleanly
            self.proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def kill(self) -> list[int]:
        """SIGKILL the process alone (as a crash or the OOM killer would); returns its children then."""
        if self.proc is None:
            return []
        kids = children_of(self.proc.pid)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return kids

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started (a sender and its encoder process)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def daemon_process(layout: Layout, fake_env: dict[str, str], obs_password: str | None) -> tuple[ChildProcess, str]:
    """The daemon as a ChildProcess, and the dashboard token it will accept."""
    token = secrets.token_urlsafe(24)
    env = {**fake_env, FAULT_ENV: str(layout.faults), "STREAMER_DASHBOARD_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    if obs_password is not None:
        env["OBS_WEBSOCKET_PASSWORD"] = obs_password
    argv = [sys.executable, "-m", "streamer", "run", "--config", str(layout.config), "--no-console"]
    return ChildProcess("daemon", argv, env, layout.logs, layout.out), token


def sender_process(layout: Layout, width: int, height: int, fps: float) -> ChildProcess:
    """The network source's far end (streamer/soak/sender.py)."""
    argv = [
        sys.executable,
        "-m",
        "streamer.soak.sender",
        f"{layout.source_url}?pkt_size=1316",
        str(width),
        str(height),
        str(fps),
    ]
    return ChildProcess("sender", argv, {}, layout.logs, layout.out)
