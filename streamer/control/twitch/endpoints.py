"""Where TwitchIO sends its requests: Twitch itself, or a local fake Twitch (the tests, `streamer soak`).

`STREAMER_TWITCH_API_BASE=http://127.0.0.1:PORT` points OAuth, Helix and the EventSub websocket of
the daemon at that server (streamer/testing/fake_twitch/ speaks the same wire formats). Only a
loopback address is honoured: the daemon sends its tokens to whatever this names, so the variable can
never send them off this machine, and a value that is not loopback turns Twitch off with an error
instead of being followed. Not a config key on purpose: nobody sets it by editing streamer.toml.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ENV = "STREAMER_TWITCH_API_BASE"


class EndpointError(ValueError):
    """STREAMER_TWITCH_API_BASE is set to something other than an http:// loopback address."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_api_base(environ: dict[str, str] | None = None) -> str | None:
    """The checked `http://host:port` of a local fake Twitch, or None when the variable is unset."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or not _loopback(parts.hostname):
        raise EndpointError(
            f"{ENV}={raw[:80]!r} is not an http://127.0.0.1:PORT address; "
            "only a local fake Twitch on this machine may be named there"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}:{port}"


def overrides(base: str) -> list[tuple[Any, str, str]]:
    """(object, attribute, value) for each TwitchIO constant that names Twitch, pointed at `base`."""
    import twitchio.eventsub.websockets as tws
    import twitchio.http as thttp

    return [
        (thttp.Route, "BASE", f"{base}/helix/"),
        (thttp.Route, "ID_BASE", f"{base}/"),
        (tws, "WSS", f"ws{base.removeprefix('http')}/ws"),
    ]


def apply_local_api() -> str | None:
    """Point TwitchIO at the fake named by STREAMER_TWITCH_API_BASE (None: unset, Twitch itself).
    Raises EndpointError for a value that is not loopback."""
    base = local_api_base()
    if base is None:
        return None
    for target, attribute, value in overrides(base):
        setattr(target, attribute, value)
    log.warning("Twitch: talking to the local fake at %s (%s is set), not to Twitch", base, ENV)
    return base
