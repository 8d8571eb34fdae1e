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
