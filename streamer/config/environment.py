"""What the settings take from outside the config file: secrets and the shipped example.

Secrets are never read from the config file (a file gets shared, pasted, committed): they come from
the environment variables named in SECRET_ENV. `example_path` finds config.example.toml, which
`streamer init` copies and `streamer models pull` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

SECRET_ENV = {
    "twitch_client_secret": "TWITCH_CLIENT_SECRET",
    "obs_password": "OBS_WEBSOCKET_PASSWORD",
    "dashboard_token": "STREAMER_DASHBOARD_TOKEN",
}


def secret(name: str) -> str | None:
    """A secret from its environment variable (never from the config file, never logged)."""
    value = os.environ.get(SECRET_ENV[name], "")
    return value or None


def example_path() -> Path:
    """config.example.toml shipped with the package (repo root in a checkout, package data when installed)."""
    package = Path(__file__).resolve().parent.parent  # streamer/ (this file is streamer/config/environment.py)
    for candidate in (package / "config.example.toml", package.parent / "config.example.toml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("config.example.toml is missing from this installation")
