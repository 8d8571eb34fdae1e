"""OBS controller and setup logic without an OBS: the daemon side keeps going when OBS is absent,
config validation, URL and platform rules, and obsws-python's password logging kept quiet."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest

from streamer import config
from streamer.config import ConfigError, Settings
from streamer.control.obs.conn import ObsError, connect
from streamer.control.obs.controller import ObsController, doctor_checks, prompt_display
from streamer.control.obs.setup import obs_platform, overlay_url, receive_url, return_path
from streamer.prompts import PromptBus, PromptState


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@dataclass
class Ctx:
    settings: Settings
    bus: PromptBus
    pipeline: Any = None
    store: Any = None
    metrics: Any = None
    control: Any = None


def test_controller_waits_for_obs_with_backoff_and_one_warning(caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", "secret-pw-123")
    obs = replace(Settings().obs, enabled=True, port=closed_port(), reconnect_initial_s=0.05, reconnect_max_s=0.2)
    ctx = Ctx(replace(Settings(), obs=obs), PromptBus("p"))
    controller = ObsController(ctx)  # type: ignore[arg-type]
    attempts: list[float] = []
    real_open = controller._open

    def counting_open() -> Any:
        attempts.append(time.monotonic())
        return real_open()

    controller._open = counting_open  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG)

    async def main() -> float:
        task = asyncio.create_task(controller.run())
        gap, last = 0.0, time.monotonic()
        for _ in range(60):  # ~1.2 s of the loop staying responsive while OBS is absent
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gap, last = max(gap, now - last), now
            ctx.bus.set("prompt while OBS is away", source="test", author="t")  # must not block or raise
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return gap

    gap = asyncio.run(main())
    assert gap < 0.5  # generous: CI shares its cores; the hang test below is the sharp one
    assert not controller.connected and "cannot connect" in controller.status()
    assert len(attempts) >= 3
    delays = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert delays[-1] > delays[0]  # exponential backoff, capped at reconnect_max_s
    warnings = [r for r in caplog.records if r.name == "streamer.control.obs.controller" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "secret-pw-123" not in caplog.text  # obsws-python logs the password at INFO unless silenced


def test_an_obs_that_never_answers_does_not_block_the_loop() -> None:
    """A websocket peer that accepts TCP but never answers (a hung OBS): each attempt waits out
    obs.connect_timeout_s on the controller's thread, never on the event loop."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever reads or replies
        obs = replace(Settings().obs, enabled=True, port=silent.getsockname()[1], connect_timeout_s=1.5,
                      reconnect_initial_s=0.05, reconnect_max_s=0.1)
        controller = ObsController(Ctx(replace(Settings(), obs=obs), PromptBus("p")))  # type: ignore[arg-type]

        async def main() -> float:
            task = asyncio.create_task(controller.run())
            gap, last = 0.0, time.monotonic()
            for _ in range(100):  # 2 s: spans at least one full connect timeout
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gap, last = max(gap, now - last), now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return gap

        gap = asyncio.run(main())
    assert gap < 1.0, f"the loop stalled {gap:.2f} s behind a hung OBS"
    assert "timed out" in controller.status() or "Timeout" in controller.status(), controller.status()


def test_connect_error_says_how_to_enable_the_websocket() -> None:
    with pytest.raises(ObsError, match="Enable WebSocket server"):
        connect(replace(Settings().obs, port=closed_port(), connect_timeout_s=1.0), "pw")


def test_doctor_without_obs() -> None:
    assert [c.status for c in doctor_checks(Settings())] == ["OK"]  # disabled
    s = replace(Settings(), obs=replace(Settings().obs, enabled=True, port=closed_port(), connect_timeout_s=1.0))
    (check,) = doctor_checks(s)
    assert check.status == "FAIL" and "WebSocket" in check.fix


def test_prompt_display_and_urls() -> None:
    assert prompt_display(PromptState(text="a castle"), 200) == "a castle"
    assert prompt_display(PromptState(text="a castle", enabled=False), 200) == "AI off"
    # the streamer's own text too: no hidden characters, clipped to the box
    assert prompt_display(PromptState(text="a \u202ecastle\u200b\n on a hill"), 200) == "a castle on a hill"
    assert prompt_display(PromptState(text="x" * 300), 50) == "x" * 49 + "…"
    assert receive_url("udp://127.0.0.1:5600?pkt_size=1316") == "udp://127.0.0.1:5600"
    assert obs_platform({"platform": "debian"}) == "linux"
    assert obs_platform({"platform": "windows"}) == "windows"
    assert obs_platform({"platform": "macos"}) == "macos"
    s = Settings()
    assert return_path(s) == "virtualcam"  # default sinks: virtualcam + record
    assert return_path(replace(s, sinks=replace(s.sinks, enabled=("network", "virtualcam")))) == "network"
    dash = replace(s, dashboard=replace(s.dashboard, host="0.0.0.0", port=9000))
    assert overlay_url(dash) == "http://127.0.0.1:9000/overlays/overlay.html"


@pytest.mark.parametrize("table, key", [
    ({"port": 0}, "obs.port"),
    ({"reconnect_initial_s": 5.0, "reconnect_max_s": 1.0}, "obs.reconnect_max_s"),
    ({"scene": " "}, "obs.scene"),
    ({"return_path": "ndi"}, "obs.return_path"),
    ({"return_url": "localhost:5600"}, "obs.return_url"),
    ({"active_scenes": "Game"}, "obs.active_scenes"),
])
def test_obs_config_errors_name_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.from_dict({"obs": table}, "t.toml")
