"""model.dtype: "auto" picks bf16 where the device runs it natively; the tiny model in bf16 on the CPU
gives the float32 picture (its speed is the point: W4 in docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer.config import ConfigError, from_dict
from streamer.frames import Frame
from streamer.model import loading
from streamer.model.engine import ModelTransform
from streamer.model.loading import load_parts, resolve_dtype
from streamer.prompts import PromptState

CPU = torch.device("cpu")


def test_explicit_dtypes_are_taken_as_set() -> None:
    assert resolve_dtype("float32", CPU) is torch.float32
    assert resolve_dtype("bfloat16", CPU) is torch.bfloat16
    assert resolve_dtype("float16", torch.device("cuda")) is torch.float16


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    assert resolve_dtype("auto", CPU) is (torch.bfloat16 if native else torch.float32)


def test_auto_is_the_default_and_a_bad_dtype_names_the_key() -> None:
    assert from_dict({}).model.dtype == "auto"
    with pytest.raises(ConfigError, match=r"model\.dtype"):
        from_dict({"model": {"dtype": "int8"}})


def _scene(n: int) -> list[Frame]:
    """A smooth, camera-like picture (gradients and a moving disc), not noise."""
    yy, xx = np.mgrid[0:72, 0:96].astype(np.float32)
    frames = []
    for i in range(n):
        disc = ((xx - 30 - 2 * i) ** 2 + (yy - 36) ** 2 < 300).astype(np.float32)
        rgb = np.stack([xx / 96, yy / 72, 0.5 + 0.4 * disc], -1) * 255
        frames.append(Frame(rgb.astype(np.uint8), capture_time=float(i), index=i, pts=i / 30))
    return frames


def test_the_shipped_model_in_bf16_gives_the_float32_picture(tmp_path) -> None:
    prompt = PromptState(text="film noir, black and white, high contrast")
    outputs = {}
    for dtype in ("float32", "bfloat16"):  # explicit: bf16 runs (emulated if need be) on every CPU
        m = from_dict({"model": {"width": 64, "height": 64, "dtype": dtype, "cache_dir": str(tmp_path)}}).model
        parts = load_parts(m, CPU)
        assert parts.random_parts == [] and parts.dit.dtype is getattr(torch, dtype)
        engine = ModelTransform(m, parts)
        assert f"cpu {dtype}" in engine.status()
        outputs[dtype] = [o.pixels.astype(np.float64) for f in _scene(12) for o in engine.step(f, prompt)]
    assert len(outputs["float32"]) == len(outputs["bfloat16"]) == 12
    for a, b in zip(outputs["float32"], outputs["bfloat16"], strict=True):
        psnr = 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-9))
        assert psnr > 35, psnr  # measured ~53 dB at 256x256 over a 30-frame stream
        assert a.std() > 1  # a picture, not a constant
