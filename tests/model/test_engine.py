"""ModelTransform on the tiny preset at a tiny size: end to end, timing, determinism, prompts, modes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from streamer.config import ModelSettings, from_dict
from streamer.frames import Frame
from streamer.model.builder import build_model_transform
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts, ModelLoadError, load_parts, resolve_device
from streamer.model.vae import TAEHV
from streamer.prompts import PromptState
from streamer.transform import Transform

H, W = 40, 72  # the pipeline's frame size: deliberately not the model's 64x64


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> LoadedParts:
    cache = tmp_path_factory.mktemp("text-cache")
    # seeded random weights: these tests are about the engine, not the shipped model's values
    return load_parts(_settings(cache_dir=str(cache), checkpoint="random", vae="random"), torch.device("cpu"))


def _settings(**over: object) -> ModelSettings:
    # float32: these tests pin the engine's logic; bf16 on the CPU has its own test (test_engine_dtype.py)
    base = {"width": 64, "height": 64, "steps": 2, "window": 4, "sinks": 1, "transition_chunks": 3, "dtype": "float32"}
    return from_dict({"model": {**base, **over}}).model


def _frames(n: int, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return [
        Frame(np.roll(base, 3 * i, axis=1).copy(), capture_time=100.0 + i / 30, index=i, pts=i / 30) for i in range(n)
    ]


def _run(engine: ModelTransform, frames: list[Frame], prompt: PromptState) -> list[Frame]:
    out: list[Frame] = []
    for f in frames:
        out.extend(engine.step(f, prompt))
    return out


PROMPT = PromptState(text="a watercolour painting")


def test_tiny_end_to_end_sizes_dtypes_and_capture_times(parts: LoadedParts) -> None:
    engine = ModelTransform(_settings(), parts)
    assert isinstance(engine, Transform)
    frames = _frames(5)
    for f in frames:
        out = engine.step(f, PROMPT)
        assert len(out) == 1  # per-frame latents: no buffering
        (o,) = out
        assert o.pixels.shape == (H, W, 3) and o.pixels.dtype == np.uint8
        assert (o.capture_time, o.index, o.pts) == (f.capture_time, f.index, f.pts)
        assert o.pixels.std() > 0  # a picture, not a constant
    assert engine.cache.committed == 5
    assert (
        "RANDOM WEIGHTS (output not meaningful)" in engine.status()
        and "tiny 64x64 2 steps sequential, cpu float32, eager" in engine.status()
    )


def test_deterministic_with_a_seed_and_after_reset(parts: LoadedParts) -> None:
    frames = _frames(3)
    a = _run(ModelTransform(_settings(seed=7), parts), frames, PROMPT)
    engine = ModelTransform(_settings(seed=7), parts)
    b = _run(engine, frames, PROMPT)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.pixels, y.pixels)
    engine.reset()  # a new stream gives the same pictures again
    for x, y in zip(a, _run(engine, frames, PROMPT), strict=True):
        np.testing.assert_array_equal(x.pixels, y.pixels)
    c = _run(ModelTransform(_settings(seed=8), parts), frames, PROMPT)
    assert any(not np.array_equal(x.pixels, y.pixels) for x, y in zip(a, c, strict=True))


def test_prompt_change_blends_cross_attention_over_transition_chunks(parts: LoadedParts) -> None:
    engine = ModelTransform(_settings(), parts)
    frames = _frames(6)
    engine.step(frames[0], PROMPT)
    old_k = engine._cross.k.clone()
    new_prompt = dataclasses.replace(PROMPT, text="neon city at night", version=1)
    target = parts.dit.cross_kv(parts.text.encode([new_prompt.text]))
    distances = []
    for f in frames[1:5]:
        engine.step(f, new_prompt)
        distances.append((engine._cross.k - target.k).abs().max().item())
    assert engine.transition is not None and not engine.transition.active
    assert distances[0] > distances[1] > distances[2] == 0.0  # 3 chunks of blending, then the new prompt
    assert distances[3] == 0.0 and (old_k - target.k).abs().max() > 0
    again = dataclasses.replace(new_prompt, version=2)  # same text: no re-encode, no transition
    encoded = parts.text.encoded
    engine.step(frames[5], again)
    assert parts.text.encoded == encoded and not engine.transition.active


def test_strength_override_and_explicit_timesteps_change_the_output(parts: LoadedParts) -> None:
    frames = _frames(2)
    base = _run(ModelTransform(_settings(), parts), frames, PROMPT)
    weak = _run(ModelTransform(_settings(), parts), frames, dataclasses.replace(PROMPT, strength=0.3))
    fixed = _run(ModelTransform(_settings(timesteps=[900.0, 300.0]), parts), frames, PROMPT)
    assert not np.array_equal(base[-1].pixels, weak[-1].pixels)
    assert not np.array_equal(base[-1].pixels, fixed[-1].pixels)


def test_strength_zero_means_the_presets_and_a_set_value_wins(parts: LoadedParts) -> None:
    from streamer.config import effective_strength

    assert _settings().strength == 0 and effective_strength(_settings()) == 0.45  # tiny's default
    assert effective_strength(_settings(preset="wan-1.3b")) == 0.8
    engine = ModelTransform(_settings(), parts)
    assert engine._strength.item() == pytest.approx(0.45)
    engine = ModelTransform(_settings(strength=0.7, motion_aware=False), parts)
    _run(engine, _frames(2), PROMPT)
    assert engine._strength.item() == pytest.approx(0.7)
    _run(engine, _frames(1), dataclasses.replace(PROMPT, strength=0.3))  # a live override, then back
    assert engine._strength.item() == pytest.approx(0.3)
    _run(engine, _frames(1), PROMPT)
    assert engine._strength.item() == pytest.approx(0.7)


def test_stream_batch_lags_by_steps_minus_one_and_keeps_timing(parts: LoadedParts) -> None:
    engine = ModelTransform(_settings(mode="stream-batch", steps=3), parts)
    frames = _frames(6)
    results = [engine.step(f, PROMPT) for f in frames]
    assert [len(r) for r in results] == [0, 0, 1, 1, 1, 1]
    assert [r[0].capture_time for r in results[2:]] == [f.capture_time for f in frames[:4]]
    assert engine.cache.k.shape[1] == 3  # one cache row per slot


def test_temporal_autoencoder_buffers_four_frames_per_latent(parts: LoadedParts) -> None:
    """The Wan presets' path (4 frames per latent, first decode trimmed) with the tiny DiT."""
    torch.manual_seed(0)
    vae = TAEHV(temporal=True, encoder_width=8, decoder_widths=(16, 8, 8, 8)).eval()
    engine = ModelTransform(_settings(), dataclasses.replace(parts, vae=vae))
    frames = _frames(12)
    results = [engine.step(f, PROMPT) for f in frames]
    assert [len(r) for r in results] == [0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 4]
    assert results[3][0].capture_time == frames[3].capture_time  # the trimmed first chunk keeps its newest
    assert [o.capture_time for o in results[7]] == [f.capture_time for f in frames[4:8]]
    assert all(o.pixels.shape == (H, W, 3) for r in results for o in r)


def test_torch_frames_stay_tensors(parts: LoadedParts) -> None:
    engine = ModelTransform(_settings(), parts)
    f = _frames(1)[0]
    (out,) = engine.step(f.with_pixels(torch.from_numpy(f.pixels)), PROMPT)
    assert isinstance(out.pixels, torch.Tensor) and out.pixels.dtype == torch.uint8 and out.pixels.shape == (H, W, 3)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        engine.step(f.with_pixels(f.pixels.astype(np.float32)), PROMPT)


def test_cuda_requested_without_cuda_fails_loudly() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the missing-GPU error cannot be provoked")
    with pytest.raises(ModelLoadError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="not a device"):
        resolve_device("gpu0")


def test_build_model_transform_on_the_embedded_defaults(tmp_path) -> None:
    settings = from_dict({"model": {"cache_dir": str(tmp_path)}, "video": {"width": 96, "height": 64}})
    engine = build_model_transform(settings)  # tiny, 256x256, CPU, with a warm-up chunk
    (out,) = engine.step(Frame(np.full((64, 96, 3), 128, np.uint8), capture_time=1.0), PROMPT)
    assert out.pixels.shape == (64, 96, 3) and engine.device == torch.device("cpu")
    assert engine.cache.committed == 1  # the warm-up chunk was forgotten
    engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fast", [False, True])
def test_wan_engine_on_cuda_random_weights(tmp_path, fast: bool) -> None:
    """The Wan path on a GPU: 4 frames per latent, bf16, random weights (no umT5 folder needed),
    with and without the fast path (fused kernels + CUDA graph) attached by build_model_transform."""
    raw = {"model": {"preset": "wan-1.3b", "width": 128, "height": 128, "dtype": "bfloat16", "device": "cuda",
                     "cache_dir": str(tmp_path), "fast_path": fast}, "video": {"width": 160, "height": 96}}  # fmt: skip
    engine = build_model_transform(from_dict(raw))
    assert (engine.fast is not None) == fast and ("fast" in engine.status()) == fast
    assert "RANDOM WEIGHTS" in engine.status()
    rng = np.random.default_rng(0)
    counts, outs = [], []
    for i in range(20):
        f = Frame(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), capture_time=float(i), index=i)
        out = engine.step(f, PROMPT)
        counts.append(len(out))
        outs += out
    assert counts[:8] == [0, 0, 0, 1, 0, 0, 0, 4]
    assert all(o.pixels.shape == (96, 160, 3) and o.pixels.dtype == np.uint8 for o in outs)
    assert [o.capture_time for o in outs] == [float(i) for i in range(3, 20)]
    if fast:
        assert engine.fast.replays >= 1
    engine.close()


def test_configured_autoencoder_is_loaded_and_named(tmp_path) -> None:
    from streamer.model.loading import load_configured_vae
    from streamer.model.vae import tiny_taehv

    torch.manual_seed(3)
    trained = tiny_taehv()
    torch.save(trained.state_dict(), tmp_path / "tiny_vae.pth")
    vae, source = load_configured_vae(_settings(vae=str(tmp_path / "tiny_vae.pth")), torch.device("cpu"), torch.float32)
    assert source == "tiny_vae.pth" and not vae.temporal
    torch.testing.assert_close(vae.decoder[1].weight, trained.decoder[1].weight)
    with pytest.raises(Exception, match="per-frame"):  # the Wan presets need a temporal autoencoder
        load_configured_vae(_settings(vae=str(tmp_path / "tiny_vae.pth"), preset="wan-1.3b"), torch.device("cpu"), torch.float32)
    with pytest.raises(ModelLoadError, match="LoRA needs its base checkpoint"):
        load_parts(_settings(lora=str(tmp_path / "x.safetensors"), checkpoint="random"), torch.device("cpu"))
