"""Config: strict loading, clear errors naming file + key, and an example that documents every key."""

import dataclasses
import re
from pathlib import Path

import pytest

from streamer import config
from streamer.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "streamer.toml"
    p.write_text(text)
    return p


def test_defaults_without_file():
    s = config.load(None)
    assert s.model.preset == "tiny" and s.video.fps == 30.0 and s.source.kind == "pattern"


def test_example_file_loads_and_equals_defaults():
    s = config.load(ROOT / "config.example.toml")
    assert dataclasses.replace(s, source_file="") == Settings()


def _all_keys(cls: type, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(cls):
        if f.name == "source_file":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            keys |= _all_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def test_example_documents_every_key_with_a_comment():
    text = (ROOT / "config.example.toml").read_text()
    section = ""
    documented = set()
    for line in text.splitlines():
        if m := re.match(r"^\[([\w.]+)\]", line):
            section = m.group(1) + "."
        elif m := re.match(r"^(\w+)\s*=", line):
            assert "#" in line, f"key {section}{m.group(1)} has no comment line"
            documented.add(section + m.group(1))
    assert _all_keys(Settings) == documented


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        config.load(tmp_path / "nope.toml")


def test_bad_type_names_file_key_and_expectation(tmp_path):
    p = write(tmp_path, "[video]\nwidth = 'wide'\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(p) in str(e.value) and "'video.width' must be an integer" in str(e.value) and "'wide'" in str(e.value)


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    p = write(tmp_path, "[model]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.stepz' \(did you mean 'steps'\?\)"):
        config.load(p)


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'vidoe'"):
        config.load(write(tmp_path, "[vidoe]\nfps = 3\n"))


def test_invalid_toml_and_choices_and_ranges(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[video\n"))
    with pytest.raises(ConfigError, match=r"'source.kind' must be one of"):
        config.load(write(tmp_path, "[source]\nkind = 'webcam'\n"))
    with pytest.raises(ConfigError, match=r"'model.width' must be a multiple of 16"):
        config.load(write(tmp_path, "[model]\nwidth = 250\n"))
    with pytest.raises(ConfigError, match=r"'source.url' must be a URL"):
        config.load(write(tmp_path, "[source]\nkind = 'network'\n"))
    with pytest.raises(ConfigError, match=r"'video.fps' must be a number"):
        config.load(write(tmp_path, "[video]\nfps = true\n"))
    for bad in ("-0.1", "1.5"):
        with pytest.raises(ConfigError, match=r"'model.strength' must be in \(0, 1\], or 0 for the preset's"):
            config.load(write(tmp_path, f"[model]\nstrength = {bad}\n"))


def test_settings_are_frozen():
    s = config.load(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.video.fps = 60  # type: ignore[misc]


def test_secrets_come_only_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OBS_WEBSOCKET_PASSWORD", "hunter2")
    assert config.secret("obs_password") == "hunter2"
    monkeypatch.delenv("OBS_WEBSOCKET_PASSWORD")
    assert config.secret("obs_password") is None
    with pytest.raises(ConfigError, match="unknown key 'obs.password'"):
        config.load(write(tmp_path, "[obs]\npassword = 'x'\n"))
