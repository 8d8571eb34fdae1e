"""Fixtures shared by the Twitch tests."""

from __future__ import annotations

import functools
from typing import Any

import pytest


@pytest.fixture
def start_twitch(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """`async with start_twitch(**options) as h:` runs the real Twitch component and control plane
    against FakeTwitch (twitch_harness.running_twitch), patched and stored for this test only."""
    # imported here so the control tests that never touch Twitch do not load TwitchIO
    from twitch_harness import make_control, running_twitch

    return functools.partial(running_twitch, monkeypatch, tmp_path, make_control)
