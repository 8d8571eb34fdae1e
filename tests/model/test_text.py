"""Text encoders: padding zeroed, local-only loading with clear errors, memory + disk cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamer.model.text import (
    CachedTextEncoder,
    MiniLMTextEncoder,
    TextEncoderError,
)


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


def _real_tokens(encoder, prompt: str) -> int:
    return len(encoder.tokenizer(prompt, truncation=True, max_length=encoder.text_len)["input_ids"])


def test_minilm_token_states_and_zero_padding(minilm: MiniLMTextEncoder) -> None:
    out = minilm.encode(["a watercolour painting", "neon city at night in the rain"])
    assert out.shape == (2, 32, 384) and out.dtype == torch.float32
    for row, prompt in zip(out, ["a watercolour painting", "neon city at night in the rain"], strict=True):
        n = _real_tokens(minilm, prompt)
        assert 3 < n < 32
        assert row[:n].abs().sum(-1).min() > 0  # every real token (incl. [CLS]/[SEP]) has a state
        assert torch.count_nonzero(row[n:]) == 0
    assert not torch.allclose(out[0, 1], out[1, 1])  # different prompts, different states
    long = minilm.encode(["word " * 100])
    assert torch.count_nonzero(long[0].abs().sum(-1)) == 32  # truncated to 32, no padding left


def test_cache_hit_avoids_encoding_and_survives_new_instance(minilm: MiniLMTextEncoder, tmp_path: Path) -> None:
    cached = CachedTextEncoder(minilm, tmp_path)
    first = cached.encode(["a cat", "a dog", "a cat"])
    assert cached.encoded == 2  # duplicate prompt encoded once
    torch.testing.assert_close(first[0], first[2])
    again = cached.encode(["a dog"])
    assert cached.encoded == 2  # memory hit
    torch.testing.assert_close(again[0], first[1])
    files = list((tmp_path / "text-embeddings").glob("*.safetensors"))
    assert len(files) == 2

    class Exploding:
        encoder_id, text_len, text_dim = minilm.encoder_id, 32, 384

        def encode(self, prompts: list[str]) -> torch.Tensor:
            raise AssertionError(f"should have come from disk: {prompts}")

    fresh = CachedTextEncoder(Exploding(), tmp_path)  # a new process would look like this
    torch.testing.assert_close(fresh.encode(["a cat"])[0], first[0])
    assert fresh.encoded == 0


def test_cache_keys_include_encoder_id_and_damaged_files_reencode(minilm: MiniLMTextEncoder, tmp_path: Path) -> None:
    cached = CachedTextEncoder(minilm, tmp_path, memory_items=1)
    assert cached.key("x") != CachedTextEncoder(_Renamed(minilm), tmp_path).key("x")
    cached.encode(["a cat"])
    path = tmp_path / "text-embeddings" / f"{cached.key('a cat')}.safetensors"
    path.write_bytes(b"garbage")
    cached.encode(["a dog"])  # evicts "a cat" from memory (memory_items=1)
    out = cached.encode(["a cat"])
    assert cached.encoded == 3 and out.shape == (1, 32, 384)


class _Renamed:
    def __init__(self, inner) -> None:
        self.inner, self.encoder_id, self.text_len, self.text_dim = inner, "other", 32, 384

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.inner.encode(prompts)


# The umT5 encoder (every layout, its forward against transformers, broken layouts) is tested in
# test_text_layouts.py and test_text_umt5.py.


def test_build_text_encoder_picks_by_width_and_refuses_silent_substitutes(tmp_path: Path) -> None:
    from streamer.model.text import RandomTextEncoder, build_text_encoder

    with pytest.raises(TextEncoderError, match="umT5-XXL"):
        build_text_encoder("", str(tmp_path), "cpu", torch.float32, text_dim=4096, text_len=512)
    rnd = build_text_encoder("", str(tmp_path), "cpu", torch.float32, text_dim=64, text_len=8, allow_random=True)
    assert isinstance(rnd, RandomTextEncoder)
    a, b = rnd.encode(["x", "y"]), rnd.encode(["x"])
    assert a.shape == (2, 8, 64) and torch.equal(a[0], b[0]) and not torch.equal(a[0], a[1])


def test_minilm_loads_only_on_a_prompt_missing_from_the_cache(tmp_path, monkeypatch) -> None:
    from streamer.model import text as text_mod

    enc = text_mod.build_text_encoder("", str(tmp_path), "cpu", torch.float32, text_dim=384, text_len=64)
    loads: list[int] = []
    real = text_mod.MiniLMTextEncoder
    monkeypatch.setattr(text_mod, "MiniLMTextEncoder", lambda **kw: loads.append(1) or real(**kw))
    first = enc.encode(["a sepia photograph"])
    assert loads == [1] and first.shape == (1, 32, 384)
    again = text_mod.build_text_encoder("", str(tmp_path), "cpu", torch.float32, text_dim=384, text_len=64)
    assert torch.equal(again.encode(["a sepia photograph"]), first) and loads == [1]  # from the disk cache
