"""Which weights load: a configured file, the embedded tiny folder (package data), or seeded random;
"random" forces random; the doctor names the choice; the engine's KV window follows the preset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamer.config import from_dict
from streamer.model import loading
from streamer.model.config import DiTConfig, preset
from streamer.model.dit import DiT
from streamer.model.doctor import checks, estimate_memory
from streamer.model.engine import ModelTransform
from streamer.model.loading import (
    ModelLoadError,
    dit_weights,
    load_configured_dit,
    load_configured_vae,
    load_parts,
    vae_weights,
)
from streamer.model.text import TextEncoderError
from streamer.model.vae import TAEHV, TINY_DECODER_WIDTHS, TINY_ENCODER_WIDTH
from streamer.train.checkpoint import save_dit_weights

# A pruned-looking tiny variant (fewer layers, heads and FFN channels; its own config.json), as the
# shipped checkpoint may be, and an autoencoder narrower than TINY_DECODER_WIDTHS.
SMALL = dataclasses.replace(preset("tiny"), num_layers=2, num_heads=2, head_width=64, ffn_dim=256)
NARROW = {"encoder_width": 4, "decoder_widths": (16, 8, 4, 4)}
CPU = torch.device("cpu")


def _save_dit(folder: Path, cfg: DiTConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    sd = DiT(cfg).state_dict()
    save_dit_weights(folder, cfg, sd, None)
    return sd


def _save_vae(path: Path, seed: int) -> TAEHV:
    torch.manual_seed(seed)
    vae = TAEHV(temporal=False, **NARROW)  # type: ignore[arg-type]
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(path))
    return vae


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, torch.Tensor], TAEHV]:
    folder = tmp_path / "embedded" / "tiny"
    sd = _save_dit(folder, SMALL, seed=5)
    vae = _save_vae(folder / "vae.safetensors", seed=6)
    monkeypatch.setattr(loading, "EMBEDDED_DIR", folder)
    return sd, vae


@pytest.fixture
def nothing_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(loading, "EMBEDDED_DIR", tmp_path / "empty")


def _m(**over: object):
    return from_dict({"model": {"width": 32, "height": 32, "dtype": "float32", **over}}).model


def test_embedded_folder_is_picked_up_for_tiny(embedded, tmp_path: Path) -> None:
    sd, vae_ref = embedded
    parts = load_parts(_m(cache_dir=str(tmp_path / "cache")), CPU)
    assert parts.sources["DiT"].startswith("embedded tiny (model.safetensors: custom")
    assert parts.sources["autoencoder"] == "embedded tiny (vae.safetensors)"
    assert parts.random_parts == [] and parts.text.encoder_id.startswith("all-MiniLM")
    assert parts.dit.cfg == SMALL  # the checkpoint's own config.json, not the preset
    torch.testing.assert_close(parts.dit.state_dict()["blocks.1.ffn.0.weight"], sd["blocks.1.ffn.0.weight"])
    # the autoencoder's widths come from the file (narrower than the built-in tiny widths)
    assert parts.vae.decoder[1].weight.shape[0] == 16 < TINY_DECODER_WIDTHS[0]
    assert parts.vae.encoder[0].weight.shape[0] == 4 < TINY_ENCODER_WIDTH
    torch.testing.assert_close(parts.vae.decoder[20].weight, vae_ref.decoder[20].weight)
    engine = ModelTransform(_m(), parts)
    assert "RANDOM" not in engine.status() and "embedded tiny" in engine.status()


def test_random_forces_random_weights(embedded) -> None:
    m = _m(checkpoint="random", vae="random")
    assert (dit_weights(m).kind, vae_weights(m).kind) == ("random", "random")
    dit, src = load_configured_dit(m, CPU, torch.float32)
    assert src == "random (seed 0)" and dit.cfg == preset("tiny")
    vae, vae_src = load_configured_vae(m, CPU, torch.float32)
    assert vae_src.startswith("random") and vae.decoder[1].weight.shape[0] == TINY_DECODER_WIDTHS[0]
    # one part forced random, the other embedded
    mixed = _m(vae="random")
    assert (dit_weights(mixed).kind, vae_weights(mixed).kind) == ("embedded", "random")
    with pytest.raises(ModelLoadError, match="LoRA needs its base checkpoint"):
        load_configured_dit(_m(checkpoint="random", lora="x.safetensors"), CPU, torch.float32)


def test_embedded_is_only_for_tiny_and_only_when_present(embedded, tmp_path: Path, monkeypatch) -> None:
    wan = _m(preset="wan-1.3b")
    assert (dit_weights(wan).kind, vae_weights(wan).kind) == ("random", "random")
    monkeypatch.setattr(loading, "EMBEDDED_DIR", tmp_path / "absent")
    assert (dit_weights(_m()).kind, vae_weights(_m()).kind) == ("random", "random")


def test_a_configured_file_wins_over_the_embedded_weights(embedded, tmp_path: Path) -> None:
    sd = _save_dit(tmp_path / "mine", SMALL, seed=9)
    dit, src = load_configured_dit(_m(checkpoint=str(tmp_path / "mine")), CPU, torch.float32)
    assert not src.startswith("embedded") and src.startswith("model.safetensors: custom")
    torch.testing.assert_close(dit.state_dict()["head.head.weight"], sd["head.head.weight"])


def test_embedded_weights_that_do_not_fit_the_preset_fail_clearly(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "bad"
    _save_dit(folder, dataclasses.replace(SMALL, text_dim=96), seed=1)
    monkeypatch.setattr(loading, "EMBEDDED_DIR", folder)
    with pytest.raises(ModelLoadError, match=r"embedded tiny weights .*text_dim 96 \(the preset has 384\)"):
        load_configured_dit(_m(), CPU, torch.float32)


def test_trained_weights_never_get_random_text_states(tmp_path: Path, nothing_embedded) -> None:
    """A trained wan-family DiT without the umT5 folder is an error, not silently random text."""
    wan_like = DiTConfig(dim=128, num_layers=1, num_heads=1, ffn_dim=128, text_dim=4096, text_len=8)
    _save_dit(tmp_path / "wan", wan_like, seed=2)
    m = _m(preset="wan-1.3b", checkpoint=str(tmp_path / "wan"), vae="random", cache_dir=str(tmp_path / "c"))
    with pytest.raises(TextEncoderError, match="umT5-XXL"):
        load_parts(m, CPU)


def test_forced_random_wan_weights_get_random_text_states(tmp_path: Path, monkeypatch) -> None:
    """checkpoint = "random" on a wan preset without umT5: speed runs work (random text beside a random DiT).
    A small wan-shaped config stands in for the 1.3B preset so the test stays fast."""
    wan_like = DiTConfig(dim=128, num_layers=1, num_heads=1, ffn_dim=128, text_dim=4096, text_len=8)
    monkeypatch.setattr(loading, "preset", lambda name: wan_like)
    parts = load_parts(_m(preset="wan-1.3b", checkpoint="random", vae="random", cache_dir=str(tmp_path)), CPU)
    assert parts.text.encoder_id.startswith("random") and parts.text.text_dim == 4096
    assert parts.random_parts == ["DiT", "autoencoder", "text encoder"]


def test_engine_kv_window_follows_the_preset(nothing_embedded, tmp_path: Path) -> None:
    parts = load_parts(_m(checkpoint="random", cache_dir=str(tmp_path)), CPU)
    engine = ModelTransform(_m(), parts)
    assert (engine.cache.window, engine.cache.sinks) == (3, 1)
    # the window is the settings' business, not the DiT's: the same parts under a wan preset's defaults
    engine = ModelTransform(_m(preset="wan-1.3b"), parts)
    assert (engine.cache.window, engine.cache.sinks) == (6, 3)
    engine = ModelTransform(_m(window=5, sinks=2), parts)
    assert (engine.cache.window, engine.cache.sinks) == (5, 2)


def _by_name(settings) -> dict:
    return {c.name: c for c in checks(settings)}


def test_doctor_names_the_weights_in_use(embedded, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    found = _by_name(from_dict({"model": {"cache_dir": cache}}))
    assert found["model checkpoint"].status == "OK" and found["model checkpoint"].detail.startswith("embedded tiny")
    assert found["model autoencoder"].status == "OK"
    assert found["model autoencoder"].detail == "embedded tiny: vae.safetensors: TAEHV, per-frame"
    assert "window 3 (1 sinks)" in found["model memory"].detail
    forced = _by_name(from_dict({"model": {"cache_dir": cache, "checkpoint": "random", "vae": "random"}}))
    assert (
        forced["model checkpoint"].status == "WARN"
        and "forced by model.checkpoint = 'random'" in forced["model checkpoint"].detail
    )
    assert "clear model.checkpoint" in forced["model checkpoint"].fix
    assert forced["model autoencoder"].status == "WARN" and "model.vae = 'random'" in forced["model autoencoder"].detail
    _save_dit(tmp_path / "mine", SMALL, seed=3)
    mine = _by_name(from_dict({"model": {"cache_dir": cache, "checkpoint": str(tmp_path / "mine")}}))
    assert mine["model checkpoint"].status == "OK" and mine["model checkpoint"].detail.startswith("file ")


def test_doctor_without_embedded_files_says_they_are_missing(nothing_embedded, tmp_path: Path) -> None:
    found = _by_name(from_dict({"model": {"cache_dir": str(tmp_path)}}))
    assert found["model checkpoint"].status == "WARN" and "none configured" in found["model checkpoint"].detail
    assert "missing from" in found["model checkpoint"].fix
    forced = _by_name(from_dict({"model": {"cache_dir": str(tmp_path), "checkpoint": "random"}}))
    assert "missing from" in forced["model checkpoint"].fix  # clearing the setting would not help


def test_memory_estimate_uses_the_shipped_architecture() -> None:
    m = _m(width=256, height=256)
    preset_est = estimate_memory(m, on_gpu=False)
    small_est = estimate_memory(m, on_gpu=False, dit_cfg=SMALL, decoder_widths=NARROW["decoder_widths"])
    assert (
        small_est.weights < preset_est.weights and small_est.kv_cache == preset_est.kv_cache / 4
    )  # 2/4 layers, 2/4 heads
    assert small_est.autoencoder < preset_est.autoencoder
    wide = estimate_memory(_m(width=256, height=256, window=6, sinks=3), on_gpu=False)
    assert wide.kv_cache == 2 * preset_est.kv_cache  # tiny's default window is 3
