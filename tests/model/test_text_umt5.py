"""Our umT5 forward and prompt preparation against transformers' UMT5EncoderModel and tokenizer (the
reference), on a tiny random model: fp32 to 1e-5; Wan's cleaning; </s> included, zeros after."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from umt5_test_files import random_weights, write_hf_encoder, write_tokenizer

from streamer.model.text import open_text_encoder
from streamer.model.umt5 import PromptTokenizer, clean_prompt, relative_position_bucket

PROMPTS = ["a red fox in the snow", "neon city at night in the rain, " * 6, "x"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vocab = write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    encoder, _ = random_weights(vocab)
    return write_hf_encoder(tmp_path_factory.mktemp("umt5") / "hf", encoder, vocab)


def _reference(folder: Path):
    from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>")  # fmt: skip
    model = UMT5EncoderModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    return tok, model


def test_buckets_match_transformers() -> None:
    from transformers import UMT5Config
    from transformers.models.umt5.modeling_umt5 import UMT5Attention

    attn = UMT5Attention(UMT5Config(relative_attention_num_buckets=32, relative_attention_max_distance=128),
                         has_relative_attention_bias=True)  # fmt: skip
    pos = torch.arange(600)
    rel = pos[None, :] - pos[:, None]  # key - query, beyond max_distance both ways
    assert torch.equal(relative_position_bucket(rel, 32, 128), attn._relative_position_bucket(rel))


def test_forward_matches_transformers_at_full_512_padding(folder: Path) -> None:
    """Wan runs all 512 positions with the padding masked; we run only the real tokens. The real
    tokens' states must agree with transformers' full padded pass to 1e-5, and the rest be zeros."""
    tok, model = _reference(folder)
    cleaned = [clean_prompt(p) for p in PROMPTS]  # Wan cleans, then tokenizes
    batch = tok(cleaned, padding="max_length", max_length=512, truncation=True, add_special_tokens=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    ours = open_text_encoder(folder).encode(PROMPTS)
    assert ours.shape == (3, 512, 32) and ours.dtype == torch.float32
    lengths = batch["attention_mask"].sum(1)
    for row, ref_row, n in zip(ours, ref, lengths, strict=True):
        torch.testing.assert_close(row[:n], ref_row[:n], atol=1e-5, rtol=1e-5)
        assert torch.count_nonzero(row[n:]) == 0
        assert row[:n].abs().sum(-1).min() > 0  # every real token has a state, </s> included


def test_tokenizer_matches_transformers_with_eos_and_truncation(folder: Path) -> None:
    tok, _ = _reference(folder)
    ours = PromptTokenizer(folder / "tokenizer.json", 512)
    long = "water colour painting " * 300  # far past 512 tokens
    for prompt in [*PROMPTS, long, ""]:
        ref = tok(clean_prompt(prompt), truncation=True, max_length=512, add_special_tokens=True)["input_ids"]
        (ids,) = ours([prompt])
        assert ids == ref and ids[-1] == 1 and 0 not in ids  # </s> last, no BOS, no padding
    (ids,) = ours([long])
    assert len(ids) == 512


def test_cleaning_is_wans(folder: Path) -> None:
    assert clean_prompt("  cafÃ©   &amp;amp;  snow\n\t night  ") == "café & snow night"  # ftfy, unescape x2, spaces
    assert clean_prompt("&lt;b&gt;") == "<b>"
    enc = open_text_encoder(folder)
    raw = "  a  red\n fox &amp;amp; cafÃ©  "
    assert torch.equal(enc.encode([raw]), enc.encode(["a red fox & café"]))
    uncleaned = enc.tokenizer.tokenizer.encode(raw, add_special_tokens=False).ids
    assert uncleaned != enc.tokenizer([raw])[0][:-1]  # the cleaning is what made them equal


def test_batch_rows_do_not_depend_on_each_other(folder: Path) -> None:
    enc = open_text_encoder(folder)
    both = enc.encode(["x", PROMPTS[1]])
    torch.testing.assert_close(both[0], enc.encode(["x"])[0], atol=1e-6, rtol=1e-6)


def test_bf16_runs_close_to_fp32_and_keys_the_cache_by_dtype(folder: Path) -> None:
    fp32 = open_text_encoder(folder)
    bf16 = open_text_encoder(folder, dtype=torch.bfloat16)
    assert next(bf16.net.parameters()).dtype == torch.bfloat16
    a, b = fp32.encode(PROMPTS[:1]), bf16.encode(PROMPTS[:1])
    assert b.dtype == torch.float32 and torch.count_nonzero(a) == torch.count_nonzero(b)
    assert (a - b).abs().max() < 0.1 * a.abs().max()
    assert fp32.encoder_id != bf16.encoder_id and "bfloat16" in bf16.encoder_id
