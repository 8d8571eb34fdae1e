"""The cross-field checks: what a setting's type and range cannot say about it.

The loader has already converted every value to its type and checked every number against its range
(streamer/config_bounds.py) when `_check` runs; what remains is parity, multiples, a URL's shape, and
one setting against another (model.sinks against the window, reconnect ceilings against first delays).
"""

from __future__ import annotations

import dataclasses

from streamer.config.errors import ConfigError
from streamer.config.settings import ModerationSettings, Settings, TwitchSettings, effective_window
from streamer.config_bounds import BOUNDS


def _require(ok: bool, file: str, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{file}: '{key}' {message}")


_SINK_KINDS = ("virtualcam", "network", "record", "null")


def _check_moderation(m: ModerationSettings, f: str) -> None:
    _require(m.template.count("{prompt}") == 1, f, "moderation.template", "must contain {prompt} exactly once")
    for i, term in enumerate(m.blocklist_extra):
        _require(bool(term.strip(" *")), f, f"moderation.blocklist_extra[{i}]", "must not be empty")
    for name, prompt in m.presets.items():
        _require(bool(name.strip()) and bool(prompt.strip()), f, f"moderation.presets.{name}", "needs a name and a prompt")


def _check(s: Settings, f: str) -> None:
    """What the types and the ranges (streamer/config_bounds.py, checked first) cannot express: parity,
    multiples, and one setting against another."""
    _require(s.video.width % 2 == 0, f, "video.width", BOUNDS["video.width"].message)
    _require(s.video.height % 2 == 0, f, "video.height", BOUNDS["video.height"].message)
    for i, kind in enumerate(s.sinks.enabled):
        _require(kind in _SINK_KINDS, f, f"sinks.enabled[{i}]", f"must be one of {', '.join(_SINK_KINDS)}; got {kind!r}")
    _require(len(set(s.sinks.enabled)) == len(s.sinks.enabled), f, "sinks.enabled", "lists a sink twice")
    if s.source.kind == "file":
        _require(bool(s.source.path), f, "source.path", "must name a media file when source.kind = 'file'")
    if s.source.kind == "network":
        _require("://" in s.source.url, f, "source.url", "must be a URL like udp://127.0.0.1:5600 when source.kind = 'network'")
    _require(s.source.reconnect_max_s >= s.source.reconnect_initial_s, f, "source.reconnect_max_s", "must be >= source.reconnect_initial_s")
    m = s.model
    _require(m.width % 16 == 0, f, "model.width", BOUNDS["model.width"].message)
    _require(m.height % 16 == 0, f, "model.height", BOUNDS["model.height"].message)
    _require(not m.timesteps or len(m.timesteps) == m.steps, f, "model.timesteps", "must list exactly model.steps values")
    _require(m.dtype != "fp8" or m.device not in ("cpu", "mps"), f, "model.dtype",
             f"'fp8' needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9+), not model.device = {m.device!r}")
    window, _ = effective_window(m)
    # The rolling cache holds sinks + history + the current chunk: at least one history frame must remain.
    _require(m.sinks == -1 or 0 <= m.sinks <= window - 2, f, "model.sinks",
             f"must be -1 (the preset's default) or between 0 and model.window - 2 (= {window - 2} here)")
    _require(m.rope_refresh_after == 0 or m.rope_refresh_after > window, f, "model.rope_refresh_after",
             f"must be 0 (never) or larger than the KV window ({window} latent frames here)")
    _check_moderation(s.moderation, f)
    o = s.obs
    _require(o.reconnect_max_s >= o.reconnect_initial_s, f, "obs.reconnect_max_s", "must be >= obs.reconnect_initial_s")
    for key in ("scene", "ai_input", "prompt_input", "overlay_input"):
        _require(bool(getattr(o, key).strip()), f, f"obs.{key}", "must not be empty")
    _require(not o.return_url or "://" in o.return_url, f, "obs.return_url", "must be a URL like udp://127.0.0.1:5600")
    _check_twitch(s.twitch, f)


def _check_twitch(t: TwitchSettings, f: str) -> None:
    _require(bool(t.prefix.strip()) and " " not in t.prefix, f, "twitch.prefix", "must be a non-empty word without spaces")
    if t.enabled:
        for key in ("client_id", "bot_id", "owner_id"):
            _require(bool(getattr(t, key)), f, f"twitch.{key}", "must be set when twitch.enabled = true (see docs/twitch.md)")
    for key in ("bot_id", "owner_id"):
        _require(getattr(t, key).isdigit() or not getattr(t, key), f, f"twitch.{key}", "must be a numeric Twitch user id (not a login name)")
    _require(t.reconnect_max_s >= t.reconnect_initial_s, f, "twitch.reconnect_max_s", "must be >= twitch.reconnect_initial_s")
    _require(1 <= len(t.reward_title) <= 45, f, "twitch.reward_title", "must be 1-45 characters (Twitch's limit)")
    _require(len(t.reward_prompt) <= 200, f, "twitch.reward_prompt", "must be at most 200 characters (Twitch's limit)")
    names = [n for n in dataclasses.astuple(t.commands) if n]
    for key, name in dataclasses.asdict(t.commands).items():
        _require(name == "" or (name.isprintable() and " " not in name), f, f"twitch.commands.{key}", "must be one word")
    _require(len(set(names)) == len(names), f, "twitch.commands", "uses the same command word twice")
