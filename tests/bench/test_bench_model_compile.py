"""The `compile` variant of `streamer bench model` on the CPU: the DiT compiled once at steady state, never
recompiled (RoPE position rewinds included), and computing the eager engine's function (shortcut step
size included). Backend "aot_eager": guards and recompiles are dynamo's, the same as under inductor."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from streamer.bench import model as bench
from streamer.bench.model_workloads import Workload
from streamer.model import step as step_module
from streamer.model.shortcut import takes_step_size

STEADY_CHUNKS = 12


def _run(engine, inputs, monkeypatch: pytest.MonkeyPatch, compile_at: int | None = None):
    """Output frames and denoised latents of a fresh stream; the DiT compiled before chunk `compile_at`."""
    latents = []

    def recording(*args, **kwargs):
        latents.append(sample(*args, **kwargs).clone())
        return latents[-1]

    sample = step_module.sample_sequential
    monkeypatch.setattr(step_module, "sample_sequential", recording)
    engine.reset()
    uncompile = None
    try:
        frames = []
        for i, f in enumerate(inputs):
            if i == compile_at:
                uncompile = bench.compile_steady_dit(engine, backend="aot_eager")
            frames.append(engine.step_tensor(f))
        return frames, latents, engine.cache.refreshes
    finally:
        if uncompile is not None:
            uncompile()
        monkeypatch.setattr(step_module, "sample_sequential", sample)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bf16: the first pass's latent is bf16, later ones fp32
def test_compile_variant_compiles_once_and_matches_eager(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    wl = Workload(name="t", preset="tiny", width=32, height=32, dtype=dtype, device="cpu")
    engine = bench.build_engine(wl, "cpu")
    assert takes_step_size(engine.dit), "the shipped tiny weights carry the shortcut step embedding"
    # Rewind RoPE positions every few chunks (a live stream does it every 50 frames): no recompile either.
    engine.cache.refresh_after = engine.cache.window + 2
    full = engine.cache.history  # chunks until the cache is full
    inputs = bench._frames(engine, wl, full + STEADY_CHUNKS, seed=1)
    want_frames, want_latents, _ = _run(engine, inputs, monkeypatch)

    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):  # a guard failure raises instead of recompiling
        got_frames, got_latents, refreshes = _run(engine, inputs, monkeypatch, compile_at=full)
    assert counters["stats"]["unique_graphs"] == 1  # one frame compiled: no graph break either
    assert refreshes >= 2
    assert type(engine.dit).__name__ == "ShortcutDiT"  # the wrapper undone

    assert len(got_latents) == len(want_latents) == len(inputs)
    for i, (got, want) in enumerate(zip(got_latents, want_latents, strict=True)):
        assert (got - want).abs().max() <= 1e-5, f"chunk {i}: the compiled DiT computes another function"
    for got, want in zip(got_frames, want_frames, strict=True):
        assert (got.int() - want.int()).abs().max() <= 1  # uint8: at most a rounding apart


def test_takes_step_size_sees_through_torch_compile() -> None:
    from streamer.model.config import preset
    from streamer.model.dit import DiT
    from streamer.model.shortcut import ShortcutDiT

    cfg = preset("tiny")
    assert takes_step_size(torch.compile(ShortcutDiT(cfg), backend="aot_eager"))  # wrapping compiles nothing
    assert not takes_step_size(torch.compile(DiT(cfg), backend="aot_eager"))
