"""Unusable model output never leaves as black frames: the chunk step flags it on the device
(`StreamState.output_ok`, written in place, never read inside the step) and the engine's host wrapper
raises `BadOutput` after the copy out, so the pipeline shows the camera instead and says why."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import pytest
import torch

from streamer.config import ModelSettings, from_dict
from streamer.frames import Frame
from streamer.model.dit import build
from streamer.model.engine import ModelTransform
from streamer.model.fast.path import FastPath
from streamer.model.loading import LoadedParts, load_parts
from streamer.model.step import LATENT_LIMIT, output_usable
from streamer.model.text import RandomTextEncoder
from streamer.model.vae import tiny_taehv
from streamer.prompts import PromptState
from streamer.transform import BadOutput

H, W = 48, 64
PROMPT = PromptState(text="a watercolour painting")
HAS_CUDA = torch.cuda.is_available()


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
    """In place: a captured graph reads the very same parameter storage."""
    with torch.no_grad():
        for p in parts.dit.parameters():
            p.fill_(math.nan)


def _fast_engine(device: str, dtype_name: Literal["float32", "bfloat16"], size: int) -> ModelTransform:
    m = dataclasses.replace(ModelSettings(), width=size, height=size, steps=2, window=4, sinks=1, device=device,
                            dtype=dtype_name)
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    dit = build("tiny", device=device, dtype=dtype)
    vae = tiny_taehv().to(device=device, dtype=dtype).eval()
    text = RandomTextEncoder(dit.cfg.text_len, dit.cfg.text_dim)
    return ModelTransform(m, LoadedParts(torch.device(device), dtype, dit, vae, text, {}, ["DiT"]))


def _square(i: int, size: int) -> Frame:
    px = np.full((size, size, 3), 120, np.uint8)
    px[:, i % size] = 250
    return Frame(px, capture_time=100.0 + i / 30, index=i)


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


def test_the_fused_step_flags_nan_output_too() -> None:
    """The fast path runs the same chunk step, so the same flag (CPU: fused kernels in Triton's interpreter)."""
    engine = _fast_engine("cuda" if HAS_CUDA else "cpu", "float32", 16)
    engine.fast = FastPath(engine, use_graph=False)
    engine.step(_square(0, 16), PROMPT)
    _poison(engine.parts)
    with pytest.raises(BadOutput):
        engine.step(_square(1, 16), PROMPT)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (graph capture)")
def test_a_replayed_cuda_graph_flags_nan_output() -> None:
    """The flag's write is part of the captured graph: poisoning the weights after capture is caught on replay."""
    engine = _fast_engine("cuda", "bfloat16", 64)
    fast = engine.fast = FastPath(engine)
    fast.prepare(64, 64)  # warm-up and capture (its first replay included), then a fresh stream
    i, captured = 0, fast.replays
    while fast.replays == captured:  # the cache refills before the graph takes over again
        assert i < 12, "the graph never replayed"
        assert len(engine.step(_square(i, 64), PROMPT)) == 1
        i += 1
    replays = fast.replays
    _poison(engine.parts)
    with pytest.raises(BadOutput):
        engine.step(_square(i, 64), PROMPT)
    assert fast.replays == replays + 1 and not bool(engine.state.output_ok)
