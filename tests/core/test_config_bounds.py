"""Every numeric setting has a range (streamer/config_bounds.py): NaN, infinities, negative and absurd
values are refused by the loader with the key named; NUL characters in strings (paths) too."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import pytest

from streamer import config
from streamer.config import ConfigError, Settings, from_dict
from streamer.config_bounds import BOUNDS, Bound, bound_for


def _numeric_keys(cls: type = Settings, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted key, int or float) for every numeric field, tuples of numbers included, by type."""
    out: list[tuple[str, type]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _numeric_keys(typing.cast(type, tp), f"{prefix}{f.name}.")
            continue
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if typing.get_origin(tp) is typing.Union:  # e.g. model.gpus: int | Literal["all"]: its number part
            item = next((a for a in typing.get_args(tp) if a in (int, float)), None)
        if item in (int, float):
            out.append((prefix + f.name, item))
    return out


NUMERIC = _numeric_keys()


def _nested(key: str, value: Any) -> dict[str, Any]:
    *tables, leaf = key.split(".")
    raw: dict[str, Any] = {leaf: value}
    for table in reversed(tables):
        raw = {table: raw}
    return raw


def _refused(key: str, value: Any) -> str:
    with pytest.raises(ConfigError) as e:
        from_dict(_nested(key, value), "f.toml")
    message = str(e.value)
    assert message.startswith("f.toml: ") and f"'{key}" in message, message
    return message


def test_every_numeric_setting_has_a_range_and_every_range_a_setting() -> None:
    assert len(NUMERIC) > 40
    for key, _ in NUMERIC:
        bound_for(key)  # LookupError for a setting without a range
    covered = {key for key, _ in NUMERIC} | {key.rpartition(".")[0] + ".*" for key, _ in NUMERIC}
    assert set(BOUNDS) <= covered, f"ranges for no setting: {set(BOUNDS) - covered}"
    with pytest.raises(LookupError, match="'video.depth' has no range"):
        bound_for("video.depth")


@pytest.mark.parametrize("key, kind", NUMERIC, ids=[k for k, _ in NUMERIC])
def test_nan_infinities_and_values_beyond_the_range_are_refused_naming_the_key(key: str, kind: type) -> None:
    b = bound_for(key)
    value = (lambda v: [v]) if key == "model.timesteps" else (lambda v: v)
    for bad in (math.nan, math.inf, -math.inf):
        _refused(key, value(bad))  # an int setting: the type check names it; a float: the range
    above = kind(b.hi) * 10 + 1
    below = kind(b.lo) - abs(kind(b.lo)) - 1
    assert _refused(key, value(above)).endswith(f"got {above!r}")
    if below != b.special:
        assert b.explain() in _refused(key, value(below))
    if kind is int:
        _refused(key, value(10**5000))  # beyond Python's int-to-text limit: still one message


def test_the_ends_of_a_range_load() -> None:
    assert from_dict({"model": {"shift": 100.0}}).model.shift == 100.0
    assert from_dict({"model": {"shift": 0.01}}).model.shift == 0.01
    assert from_dict({"metrics": {"window": 1}}).metrics.window == 1
    assert from_dict({"dashboard": {"port": 0, "preview_max_width": 0}}).dashboard.port == 0
    assert from_dict({"twitch": {"user_cooldowns_s": {"ai": 86400}}}).twitch.user_cooldowns_s.ai == 86400
    assert from_dict({"model": {"seed": 2**63 - 1}}).model.seed == 2**63 - 1


def test_the_review_cases_are_refused_with_the_key(tmp_path: Path) -> None:
    cases = {
        "[metrics]\nwindow = -1\n": "'metrics.window' must be between 1 and 1000000; got -1",
        "[model]\nshift = inf\n": "'model.shift' must be between 0.01 and 100; got inf",
        "[model]\nshift = nan\n": "'model.shift' must be between 0.01 and 100; got nan",
        "[engine]\nretry_model_after_s = -5\n": "'engine.retry_model_after_s' must be between 0 and 86400",
        "[video]\nfps = 1e400\n": "'video.fps' must be between 1 and 240; got inf",
        "[model]\ntimesteps = [999.0, -0.0, -1]\nsteps = 3\n": "'model.timesteps[2]' must be between 0 and 1000",
    }
    for text, words in cases.items():
        p = tmp_path / "c.toml"
        p.write_text(text)
        with pytest.raises(ConfigError) as e:
            config.load(p)
        assert str(e.value).startswith(f"{p}: ") and words in str(e.value), str(e.value)


@pytest.mark.parametrize("key", ["model.checkpoint", "model.vae", "model.lora", "store.path", "sinks.record.path",
                                 "source.path", "model.cache_dir", "moderation.presets.neon", "obs.kill_source"])
def test_a_nul_character_in_a_path_or_name_is_refused_with_the_key(tmp_path: Path, key: str) -> None:
    *tables, leaf = key.split(".")
    p = tmp_path / "nul.toml"
    p.write_text(f"[{'.'.join(tables)}]\n{leaf} = \"/tmp/a\\u0000b\"\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(e.value) == f"{p}: '{key}' must not contain a NUL character (\\0); got '/tmp/a\\x00b'"


def test_messages_are_one_printable_line_however_odd_the_key_or_value() -> None:
    for raw in ({"model": {"strength": "a\nb\u202ec"}}, {"video\r\n\x1b[2J": 1}, {"moderation": {"presets": {"x\ny": 3}}}):
        with pytest.raises(ConfigError) as e:
            from_dict(raw, "f.toml")
        assert e.value.args[0].isprintable(), e.value.args[0]
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ConfigError, match=r"'model.steps' must be an integer; got list a list nested too deeply"):
        from_dict({"model": {"steps": deep}}, "f.toml")
    with pytest.raises(ConfigError, match=r"'model.width' must be .*; got an integer of about 4999 digits$"):
        from_dict({"model": {"width": 10**4999}}, "f.toml")


def test_bound_explains_itself() -> None:
    assert Bound(0.5, 60).explain() == "must be between 0.5 and 60"
    assert Bound(0, 1, message="custom").explain() == "custom"
    assert Bound(2, 9, special=0).allows(0) and not Bound(2, 9, special=0).allows(1)
    assert not Bound(0, 10**100).allows(math.nan) and Bound(0, 10**100).allows(10**99)
