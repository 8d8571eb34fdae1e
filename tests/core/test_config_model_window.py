"""[model] window / sinks: 0 / -1 mean the preset's default; explicit values are still range-checked."""

from __future__ import annotations

import typing

import pytest

from streamer.config import PRESET_DEFAULTS, ConfigError, ModelSettings, effective_window, from_dict


def _model(**over: object) -> ModelSettings:
    return from_dict({"model": over}).model


def test_defaults_are_the_presets() -> None:
    assert (ModelSettings().window, ModelSettings().sinks) == (0, -1)
    assert effective_window(_model()) == (3, 1)  # tiny is the default preset
    assert effective_window(_model(preset="wan-1.3b")) == (6, 3)
    assert effective_window(_model(preset="wan-14b")) == (6, 3)
    preset_choices = typing.get_args(typing.get_type_hints(ModelSettings)["preset"])
    assert set(PRESET_DEFAULTS) == set(preset_choices)  # every preset has a default


def test_explicit_values_win_and_a_default_sink_count_fits_the_window() -> None:
    assert effective_window(_model(window=5, sinks=2)) == (5, 2)
    assert effective_window(_model(preset="wan-1.3b", window=8)) == (8, 3)
    assert effective_window(_model(preset="wan-1.3b", window=4)) == (4, 2)  # 3 sinks would leave no history
    assert effective_window(_model(preset="wan-1.3b", window=2)) == (2, 0)
    assert effective_window(_model(sinks=0)) == (3, 0)


@pytest.mark.parametrize(
    ("over", "key", "words"),
    [
        ({"window": 1}, "model.window", "must be 0 (the preset's default) or >= 2"),
        ({"window": -2}, "model.window", ">= 2"),
        ({"sinks": -2}, "model.sinks", "must be -1 (the preset's default)"),
        ({"sinks": 2}, "model.sinks", "= 1 here"),  # tiny's window 3 leaves room for 1 sink
        ({"preset": "wan-1.3b", "sinks": 5}, "model.sinks", "= 4 here"),
        ({"window": 4, "sinks": 3}, "model.sinks", "= 2 here"),
        ({"rope_refresh_after": 3}, "model.rope_refresh_after", "(3 latent frames here)"),
        ({"preset": "wan-1.3b", "rope_refresh_after": 6}, "model.rope_refresh_after", "(6 latent frames here)"),
        ({"window": 12, "rope_refresh_after": 10}, "model.rope_refresh_after", "(12 latent frames here)"),
    ],
)
def test_bad_explicit_values_name_the_key(over: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        _model(**over)
    assert f"'{key}'" in str(e.value) and words in str(e.value)


def test_values_the_effective_window_allows_load() -> None:
    assert _model(rope_refresh_after=4).rope_refresh_after == 4  # > tiny's 3, though <= the Wan 6
    assert _model(preset="wan-1.3b", sinks=4).sinks == 4
    assert _model(rope_refresh_after=0, window=2, sinks=0).window == 2


def test_steps_zero_means_the_presets_and_a_set_value_wins() -> None:
    """model.steps = 0 (the default) resolves once, on construction, to the preset's count; an explicit
    count is kept, also for a copy with another preset."""
    from dataclasses import replace

    from streamer.config import ModelSettings, from_dict

    assert ModelSettings().steps == PRESET_DEFAULTS["tiny"].steps == 1
    assert ModelSettings(preset="wan-1.3b").steps == 2
    assert from_dict({"model": {"steps": 3}}, "t").model.steps == 3
    assert from_dict({"model": {"preset": "wan-14b", "width": 832, "height": 480}}, "t").model.steps == 2
    assert replace(ModelSettings(), steps=4).steps == 4
