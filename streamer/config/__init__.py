"""Settings: one TOML file -> frozen, validated dataclasses.

The package in four parts, each readable alone:
- settings.py: one frozen dataclass per TOML section, and what the presets' 0 / -1 sentinels mean;
- loading.py: `load` / `from_dict`: TOML text -> checked values -> those dataclasses (unknown keys and
  wrong types are errors that name the file, the dotted key and what was expected);
- checks.py: the cross-field checks that run after the ranges in streamer/config_bounds.py;
- environment.py: secrets (from the environment variables in SECRET_ENV, never from the file) and the
  shipped config.example.toml;
with errors.py, the ConfigError they all raise. The rest of the project imports from `streamer.config`;
what it imports is re-exported here.
"""

from streamer.config.environment import SECRET_ENV, example_path, secret
from streamer.config.errors import ConfigError
from streamer.config.loading import MAX_CONFIG_BYTES, check_keys, from_dict, load, read_toml
from streamer.config.settings import (
    PRESET_DEFAULTS,
    CheckpointKey,
    ModelSettings,
    ModerationSettings,
    ObsSettings,
    Settings,
    TwitchSettings,
    VideoSettings,
    effective_strength,
    effective_window,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "PRESET_DEFAULTS",
    "SECRET_ENV",
    "CheckpointKey",
    "ConfigError",
    "ModelSettings",
    "ModerationSettings",
    "ObsSettings",
    "Settings",
    "TwitchSettings",
    "VideoSettings",
    "check_keys",
    "effective_strength",
    "effective_window",
    "example_path",
    "from_dict",
    "load",
    "read_toml",
    "secret",
]
