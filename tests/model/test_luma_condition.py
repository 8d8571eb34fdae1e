"""A luma-conditioned DiT (DiTConfig.cond_luma_factor; streamer/model/condition.py): the input's luma at full
resolution, pixel-unshuffled onto the latent grid beside the clean latent. The planes' layout by hand, the
widening that changes nothing, the engine handing every pass its chunk's planes, the checkpoint round trip,
the refusals, and training reaching the new weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.model.condition import input_condition, luma, luma_planes
from streamer.model.config import DiTConfig, preset
from streamer.model.dit import DiT, conditions_on_input
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts, load_parts, preset_mismatch
from streamer.model.weights.checkpoints import load_dit
from streamer.train.checkpoint import save_dit_weights
from streamer.train.widen import main as widen_main
from streamer.train.widen import widen_input, widen_luma
from tests.model.test_input_conditioned import _frames, _run, _settings, _spy_conditions

SMALL = DiTConfig(dim=64, num_layers=2, num_heads=2, ffn_dim=96, text_dim=32, text_len=8)


def test_the_planes_hold_each_frames_luma_tile_by_tile() -> None:
    """Channel k of latent frame f at (i, j) is pixel (i*s + r, j*s + c) of input frame f*fpl + q, with
    k = q*s² + r*s + c, as 2 x luma - 1."""
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 6, 3, 8, 12, generator=gen)  # B 2, 3 latent frames of 2 input frames, factor 4
    planes = luma_planes(frames, 4, 3)
    assert planes.shape == (2, 2 * 16, 3, 2, 3)
    y = luma(frames)[:, :, 0] * 2 - 1  # [B, T, H, W]
    for b, k, f, i, j in [(0, 0, 0, 0, 0), (1, 5, 2, 1, 2), (0, 16 + 7, 1, 1, 0), (1, 31, 0, 0, 1)]:
        q, r, c = k // 16, (k % 16) // 4, k % 4
        assert planes[b, k, f, i, j] == y[b, f * 2 + q, i * 4 + r, j * 4 + c]
    with pytest.raises(ValueError, match="do not tile 4 latent frames by 4"):
        luma_planes(frames, 4, 4)


def test_the_config_checks_the_luma_channels() -> None:
    cfg = dataclasses.replace(SMALL, in_dim=32 + 4 * 64, cond_luma_factor=8)
    assert cfg.conditions_on_input and cfg.luma_channels == 256
    with pytest.raises(ValueError, match=r"cond_luma_factor 8 needs in_dim - 2 x out_dim \(= 16\) to be a positive"):
        dataclasses.replace(SMALL, in_dim=48, cond_luma_factor=8)
    with pytest.raises(ValueError, match=r"\(= 0\)"):
        dataclasses.replace(SMALL, in_dim=32, cond_luma_factor=8)


def test_widening_keeps_the_output_and_only_a_conditioned_dit_is_widened() -> None:
    torch.manual_seed(0)
    wide = widen_input(DiT(SMALL))
    luma_dit = widen_luma(wide, factor=2, frames_per_latent=3)
    assert luma_dit.cfg.in_dim == 32 + 12 and luma_dit.cfg.cond_luma_factor == 2
    z, x = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    t, text = torch.full((1, 2), 500.0), torch.randn(1, 3, 32)
    frames = torch.rand(1, 6, 3, 8, 8)
    cond = input_condition(luma_dit, z, frames)
    assert cond is not None and cond.shape == (1, 16 + 12, 2, 4, 4) and torch.equal(cond[:, :16], z)
    assert torch.equal(luma_dit(x, t, text, cond=cond), wide(x, t, text, cond=z))
    with torch.no_grad():
        luma_dit.patch_embedding.weight[:, 32:].normal_(0, 0.05)
    assert not torch.equal(luma_dit(x, t, text, cond=cond), wide(x, t, text, cond=z))  # the planes are read
    with pytest.raises(ValueError, match="widen-input first"):
        widen_luma(DiT(SMALL))
    with pytest.raises(ValueError, match="already takes luma planes"):
        widen_luma(luma_dit)
    with pytest.raises(ValueError, match=r"cond \(1, 16, 2, 4, 4\) must be \(1, 28, 2, 4, 4\)"):
        luma_dit(x, t, text, cond=z)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> LoadedParts:
    return load_parts(_settings(cache_dir=str(tmp_path_factory.mktemp("cache"))), torch.device("cpu"))


def _luma_parts(parts: LoadedParts, *, live: bool) -> LoadedParts:
    dit = widen_luma(widen_input(parts.dit), 8, parts.vae.frames_per_latent)
    if live:
        with torch.no_grad():
            torch.manual_seed(6)
            dit.patch_embedding.weight[:, 2 * dit.cfg.out_dim :].normal_(0, 0.05)
    return dataclasses.replace(parts, dit=dit.eval().requires_grad_(False))


def test_the_engine_hands_every_pass_its_chunks_luma(parts: LoadedParts, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _frames(3)
    engine = ModelTransform(_settings(), _luma_parts(parts, live=True))
    inputs, seen = _spy_conditions(engine, monkeypatch, "to_model")
    out = _run(engine, frames)
    fpl = parts.vae.frames_per_latent
    assert len(out) == 3 * fpl and len(seen) == 6 and len(inputs) == 3  # 2 steps a chunk
    for i, cond in enumerate(seen):
        assert cond.shape == (1, 16 + fpl * 64, 1, 8, 8)
        assert torch.equal(cond[:, 16:], luma_planes(inputs[i // 2][None], 8, 1))
    monkeypatch.undo()
    dead = _run(ModelTransform(_settings(), _luma_parts(parts, live=False)), frames)
    assert any(not np.array_equal(a, b) for a, b in zip(out, dead, strict=True))


def test_a_freshly_widened_luma_dit_streams_what_it_did(parts: LoadedParts) -> None:
    frames = _frames(3)
    before = _run(ModelTransform(_settings(), dataclasses.replace(parts, dit=widen_input(parts.dit))), frames)
    after = _run(ModelTransform(_settings(), _luma_parts(parts, live=False)), frames)
    assert len(before) == 3
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_stream_batch_is_refused_for_a_luma_dit(parts: LoadedParts) -> None:
    with pytest.raises(ValueError, match="luma-conditioned .* sequential mode only; set model.mode = 'sequential'"):
        ModelTransform(_settings(mode="stream-batch"), _luma_parts(parts, live=False))


def test_the_checkpoint_keeps_the_factor_and_the_tiny_preset_fits(tmp_path: Path) -> None:
    dit = widen_luma(widen_input(DiT(SMALL)), frames_per_latent=4)
    save_dit_weights(tmp_path, dit.cfg, dit.state_dict(), None)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["cond_luma_factor"] == 8 and raw["in_dim"] == 32 + 256
    loaded, _ = load_dit(tmp_path)
    assert loaded.cfg == dit.cfg and conditions_on_input(loaded)
    tiny = preset("tiny")
    assert preset_mismatch(dataclasses.replace(tiny, in_dim=96, cond_luma_factor=8), "tiny") is None


def test_widen_luma_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    wide = widen_input(DiT(SMALL))
    save_dit_weights(src, wide.cfg, wide.state_dict(), None)
    assert widen_main([str(src), "--out", str(tmp_path / "out")], what="luma") == 0
    assert "in_dim -> 96 (the input's luma planes" in capsys.readouterr().out
    assert load_dit(tmp_path / "out")[0].cfg.cond_luma_factor == 8
    assert widen_main([str(tmp_path / "out"), "--out", str(tmp_path / "again")], what="luma") == 1
    assert "already takes luma planes" in capsys.readouterr().err


def test_model_inspect_names_the_luma_planes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.cli import main as cli_main

    dit = widen_luma(widen_input(DiT(SMALL)))
    save_dit_weights(tmp_path, dit.cfg, dit.state_dict(), None)
    assert cli_main(["model", "inspect", str(tmp_path)]) == 0
    assert (
        "in 96 / out 16 channels: input-conditioned (each pass also gets the chunk's clean input latent) and "
        "its luma at full resolution (64 planes, factor 8)" in capsys.readouterr().out
    )
