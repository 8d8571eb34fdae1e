"""Unusable model output never leaves as black frames: the chunk step flags it on the device
(`StreamState.output_ok`, written in place, never read inside the step) and the engine's host wrapper
raises `BadOutput` after the copy out, so the pipeline shows the camera instead and says why."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from streamer.config import ModelSettings, from_dict
from streamer.frames import Frame
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts, load_parts
from streamer.model.step import LATENT_LIMIT, output_usable
from streamer.prompts import PromptState
from streamer.transform import BadOutput

H, W = 48, 64
PROMPT = PromptState(text="a watercolour painting")


def _settings(**over: object) -> ModelSettings:
    base = {"width": 64, "height": 64, "steps": 2, "window": 4, "sinks": 1, "dtype": "float32"}
    return from_dict({"model": {**base, **over}}).model


@pytest.fixture()
def parts(tmp_path_factory: pytest.TempPathFactory) -> LoadedParts:
    """Fresh seeded random parts per test: some tests poison the weights."""
    cache = tmp_path_factory.mktemp("text-cache")
    return load_parts(_settings(cache_dir=str(cache), checkpoint="random", vae="random"), torch.device("cpu"))


def _frame(i: int) -> Frame:
    px = np.full((H, W, 3), 120, np.uint8)
    px[:, : W // 2] = (200, 60, 30)
    return Frame(np.roll(px, i, axis=1), capture_time=100.0 + i / 30, index=i)


def _poison(parts: LoadedParts) -> None:
    with torch.no_grad():
        for p in parts.dit.parameters():
            p.fill_(math.nan)


def test_healthy_output_is_flagged_usable_and_goes_out(parts: LoadedParts) -> None:
    engine = ModelTransform(_settings(), parts)
    for i in range(3):
        (out,) = engine.step(_frame(i), PROMPT)
        assert out.pixels.std() > 0
        assert bool(engine.state.output_ok)


@pytest.mark.parametrize("mode", ["sequential", "stream-batch"])
def test_all_nan_weights_raise_bad_output_instead_of_black_frames(parts: LoadedParts, mode: str) -> None:
    _poison(parts)
    engine = ModelTransform(_settings(mode=mode), parts)
    with pytest.raises(BadOutput, match=r"not finite \(NaN/inf\) or has diverged.*check the weights \(random"):
        for i in range(6):  # stream batch: the first chunks only fill its slots
            engine.step(_frame(i), PROMPT)
    assert not bool(engine.state.output_ok)
    engine.reset()  # what the pipeline does before retrying the model
    assert bool(engine.state.output_ok)


def test_an_infinite_shift_is_caught_by_the_engine_too(parts: LoadedParts) -> None:
    # The config loader refuses model.shift = inf now; the engine must not rely on that alone.
    m = dataclasses.replace(_settings(), shift=math.inf)
    engine = ModelTransform(m, parts)
    with pytest.raises(BadOutput):
        engine.step(_frame(0), PROMPT)


def test_device_frames_are_checked_as_well(parts: LoadedParts) -> None:
    _poison(parts)
    engine = ModelTransform(_settings(), parts)
    f = _frame(0)
    with pytest.raises(BadOutput):
        engine.step(f.with_pixels(torch.from_numpy(f.pixels)), PROMPT)


def test_the_flag_is_written_in_place_and_never_read_inside_the_step(
    parts: LoadedParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A captured CUDA graph replays writes into the same buffer, and a host read would sync the GPU."""
    engine = ModelTransform(_settings(), parts)
    flag = engine.state.output_ok
    ptr = flag.data_ptr()

    def no_host_read(self: torch.Tensor, *args: object) -> None:
        raise AssertionError("the chunk step read a tensor value on the host")

    frames = torch.from_numpy(np.stack([_frame(0).pixels]))
    for name in ("item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, no_host_read)
    _poison(parts)
    engine.step_tensor(frames)
    monkeypatch.undo()
    assert engine.state.output_ok is flag and flag.data_ptr() == ptr and not bool(flag)


def test_output_usable_on_its_own() -> None:
    frames = torch.rand(2, 3, 8, 8)
    latent = torch.randn(1, 4, 1, 2, 2)
    assert bool(output_usable(latent, frames))
    assert not bool(output_usable(latent.clone().fill_(math.inf), frames))
    assert not bool(output_usable(latent, frames.clone().index_fill_(0, torch.tensor([1]), math.nan)))
    assert not bool(output_usable(latent * 0 + 2 * LATENT_LIMIT, frames))  # finite but diverged
    lat = latent.clone()
    lat[0, 0, 0, 0, 0] = math.nan  # one NaN among finite values
    assert not bool(output_usable(lat, frames))
