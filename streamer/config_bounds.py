"""The range of every numeric setting, as one table.

A number in the config file that passes its type check can still stop the daemon (`metrics.window = -1`
crashes the metrics at start) or quietly ruin the output (`model.shift = inf` turns every frame black).
So every int and float setting has an entry here, checked by the loader before the cross-field checks in
streamer/config/checks.py: NaN and infinities never pass, a value out of range is refused with its key named.
A numeric setting without an entry is a bug in this file, and loading the defaults (every test does)
says so. A leaf: it reads only dataclass values, never the config module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streamer.control.policy.poll_spec import SECONDS_MAX, SECONDS_MIN

DAY_S = 86_400


@dataclass(frozen=True)
class Bound:
    """lo <= value <= hi, finite; or exactly `special` (a documented sentinel such as 0 = the preset's)."""

    lo: float
    hi: float
    special: float | None = None
    message: str = ""  # replaces "must be between lo and hi" where the setting needs more words

    def allows(self, value: float) -> bool:
        if value == self.special:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return self.lo <= value <= self.hi  # ints of any size compare exactly (no float conversion)

    def explain(self) -> str:
        return self.message or f"must be between {_num(self.lo)} and {_num(self.hi)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_RECONNECT = Bound(0.01, 3600)  # retry delays: a backoff ceiling over an hour only hides an outage
_PORT_TCP = Bound(1, 65535, message="must be a TCP port 1-65535")

# Dotted key -> range. "table.*" covers every key of that table; a tuple's items share their key's range.
BOUNDS: dict[str, Bound] = {
    "video.width": Bound(16, 7680, message="must be an even number 16-7680"),
    "video.height": Bound(16, 4320, message="must be an even number 16-4320"),
    "video.fps": Bound(1, 240),
    "source.reconnect_initial_s": _RECONNECT,
    "source.reconnect_max_s": _RECONNECT,
    "source.timeout_s": Bound(0.5, 60),
    "sinks.network.bitrate_kbps": Bound(100, 100_000),
    "sinks.network.keyframe_interval_s": Bound(0.05, 10),
    "sinks.record.crf": Bound(0, 51),
    "engine.retry_model_after_s": Bound(0, DAY_S),
    "model.width": Bound(16, 4096, message="must be a multiple of 16 between 16 and 4096"),
    "model.height": Bound(16, 4096, message="must be a multiple of 16 between 16 and 4096"),
    "model.steps": Bound(1, 50),
    "model.timesteps": Bound(0, 1000),
    "model.strength": Bound(0, 1, message="must be in (0, 1], or 0 for the preset's default"),
    # the flow-matching shift: a few units in practice (Wan uses 3-8); inf or 1e30 makes the timesteps NaN
    "model.shift": Bound(0.01, 100),
    # a KV window of hundreds of latent frames is minutes of video: no GPU holds it at the Wan sizes
    "model.window": Bound(2, 256, special=0, message=(
        "must be 0 (the preset's default) or >= 2 (the current chunk plus at least one history frame), at most 256")),
    "model.sinks": Bound(0, 254, special=-1, message=(
        "must be -1 (the preset's default) or between 0 and model.window - 2")),
    "model.sink_threshold": Bound(-1, 1, message="must be a cosine similarity between -1 and 1"),
    "model.rope_refresh_after": Bound(1, 1_000_000, special=0, message="must be 0 (never) or between 1 and 1000000"),
    "model.transition_chunks": Bound(1, 10_000),
    "model.seed": Bound(0, 2**63 - 1),  # torch.manual_seed's range
    "model.gpus": Bound(1, 64, message="must be a number of GPUs >= 1 (at most 64), or \"all\""),
    "metrics.status_interval_s": Bound(0.05, 3600),
    "metrics.window": Bound(1, 1_000_000),  # samples kept per stage; also the deque's maxlen
    "moderation.max_length": Bound(1, 2000),
    "moderation.min_change_interval_s": Bound(0, DAY_S),
    "moderation.approval_max_age_s": Bound(0, 30 * DAY_S, message="must be between 0 and 2592000 (0 = never expire)"),
    "moderation.audit_max_chars": Bound(16, 10_000),
    "twitch.outbox_max": Bound(1, 10_000),
    "twitch.reconnect_initial_s": _RECONNECT,
    "twitch.reconnect_max_s": _RECONNECT,
    "twitch.poll_seconds": Bound(SECONDS_MIN, SECONDS_MAX,
                                 message=f"must be between {SECONDS_MIN} and {SECONDS_MAX} (Twitch's limits)"),
    "twitch.reward_cost": Bound(1, 2**31 - 1),  # Twitch stores it as a 32-bit integer
    "twitch.reward_cooldown_s": Bound(0, 7 * DAY_S, message="must be between 0 and 604800 (Twitch's limit: 7 days)"),
    "twitch.user_cooldowns_s.*": Bound(0, DAY_S, message="must be between 0 and 86400 seconds"),
    "twitch.global_cooldowns_s.*": Bound(0, DAY_S, message="must be between 0 and 86400 seconds"),
    "obs.port": _PORT_TCP,
    "obs.connect_timeout_s": Bound(0.1, 60),
    "obs.reconnect_initial_s": _RECONNECT,
    "obs.reconnect_max_s": _RECONNECT,
    "obs.prompt_debounce_s": Bound(0, 10),
    "obs.audio_sync_extra_ms": Bound(-5000, 5000),  # a correction to the measured latency, either way
    "dashboard.port": Bound(0, 65535, message="must be 0-65535 (0 = any free port)"),
    "dashboard.preview_fps": Bound(0.1, 60),
    "dashboard.preview_quality": Bound(2, 31),
    "dashboard.preview_max_width": Bound(16, 7680, special=0, message="must be 0 (full size) or between 16 and 7680"),
    "dashboard.metrics_interval_s": Bound(0.1, 60),
}


def bound_for(key: str) -> Bound:
    """The range of the numeric setting `key` (dotted); LookupError names a setting missing from BOUNDS."""
    found = BOUNDS.get(key) or BOUNDS.get(key.rpartition(".")[0] + ".*")
    if found is None:
        raise LookupError(f"numeric setting '{key}' has no range in streamer/config_bounds.py BOUNDS: add one")
    return found


def out_of_bounds(section: Any, prefix: str = "") -> Iterator[tuple[str, str, float]]:
    """(dotted key, what it must be, value) for each number in a settings dataclass outside its range."""
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from out_of_bounds(value, key + ".")
            continue
        items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
        for i, item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            bound = bound_for(key)
            if not bound.allows(item):
                yield (key if i is None else f"{key}[{i}]"), bound.explain(), item
