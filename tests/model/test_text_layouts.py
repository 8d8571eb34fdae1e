"""Every on-disk layout of the umT5 encoder loads to the same numbers; broken ones are refused with a
message naming the path and what is missing; a pickle that would run code is refused; loading logs
its progress. The files are tiny but have the real names and layouts (umt5_test_files.py)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from umt5_test_files import (
    WAN_FILE,
    random_weights,
    wan_names,
    write_diffusers,
    write_hf_encoder,
    write_hf_full,
    write_tokenizer,
    write_wan,
)

from streamer.model.text import TextEncoderError, open_text_encoder

PROMPTS = ["a red fox in the snow", "neon city at night in the rain", "water colour painting of a cafe"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> the path a user would configure, for each entry point."""
    root = tmp_path_factory.mktemp("layouts")
    vocab = write_tokenizer(root / "probe" / "tokenizer.json")
    hf, rest = random_weights(vocab)
    wan = write_wan(root / "Wan2.1-T2V-1.3B", hf, vocab)
    diffusers = write_diffusers(root / "Wan2.1-T2V-1.3B-Diffusers", hf, vocab)
    return {
        "wan folder": wan,
        "wan .pth": wan / WAN_FILE,
        "wan tokenizer folder": wan / "google" / "umt5-xxl",
        "diffusers root": diffusers,
        "diffusers text_encoder": diffusers / "text_encoder",
        "hf full .bin shards": write_hf_full(root / "umt5-bin", hf, rest, vocab, "bin"),
        "hf full safetensors shards": write_hf_full(root / "umt5-st", hf, rest, vocab, "safetensors"),
        "hf encoder-only": write_hf_encoder(root / "umt5-enc", hf, vocab),
    }


@pytest.fixture()
def layouts(files: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A private copy of the layouts, for tests that break them."""
    base = next(iter(files.values())).parent
    shutil.copytree(base, tmp_path / "c")
    return {k: tmp_path / "c" / v.relative_to(base) for k, v in files.items()}


def test_every_entry_point_gives_the_same_embeddings(files: dict[str, Path]) -> None:
    results = {}
    for name, path in files.items():
        enc = open_text_encoder(path)
        assert enc.text_dim == 32 and enc.text_len == 512, name
        results[name] = enc.encode(PROMPTS)
    first_name, first = next(iter(results.items()))
    assert first.shape == (3, 512, 32) and torch.count_nonzero(first[:, 20:]) == 0
    for name, out in results.items():
        assert torch.equal(out, first), f"{name} differs from {first_name}"
    kinds = {open_text_encoder(p).layout.kind for p in files.values()}
    assert kinds == {"Wan", "Diffusers", "Hugging Face"}


def test_loading_logs_progress(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streamer.model"):
        open_text_encoder(files["wan .pth"], dtype=torch.bfloat16)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("umT5 load")]
    assert len(lines) >= 3 and "100%" in lines[-1] and "22/22 tensors" in lines[-1] and WAN_FILE in lines[-1]
    assert any("Wan layout" in r.getMessage() for r in caplog.records)


def _refused(path: Path, *expected: str) -> str:
    with pytest.raises(TextEncoderError) as err:
        open_text_encoder(path)
    message = str(err.value)
    for part in expected:
        assert part in message, message
    return message


def test_missing_tokenizers_are_named(layouts: dict[str, Path]) -> None:
    shutil.rmtree(layouts["wan folder"] / "google")
    _refused(layouts["wan folder"], str(layouts["wan folder"]), "no tokenizer", "google/umt5-xxl/tokenizer.json")
    _refused(layouts["wan .pth"], "no tokenizer", "google/umt5-xxl/tokenizer.json")
    shutil.rmtree(layouts["diffusers root"] / "tokenizer")
    _refused(layouts["diffusers root"], "no tokenizer/ folder")
    _refused(layouts["diffusers text_encoder"], "no tokenizer", str(layouts["diffusers root"] / "tokenizer" / "tokenizer.json"))


def test_missing_shard_and_missing_tensors_are_named(layouts: dict[str, Path]) -> None:
    (layouts["diffusers text_encoder"] / "model-00002-of-00002.safetensors").unlink()
    _refused(layouts["diffusers root"], "missing shard(s) model-00002-of-00002.safetensors", "model.safetensors.index.json")

    sd = torch.load(layouts["wan .pth"], weights_only=True)
    del sd["blocks.1.attn.k.weight"], sd["norm.weight"]
    torch.save(sd, layouts["wan .pth"])
    _refused(layouts["wan folder"], "missing tensors: ", "blocks.1.attn.k.weight", "norm.weight", "(2 of 22)")

    from safetensors.torch import load_file, save_file

    st = layouts["hf encoder-only"] / "model.safetensors"
    sd = load_file(str(st))
    del sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    save_file(sd, str(st))
    _refused(layouts["hf encoder-only"], "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")

    (layouts["hf full .bin shards"] / "pytorch_model.bin.index.json").unlink()
    _refused(layouts["hf full .bin shards"], "no weights in", "pytorch_model.bin.index.json")


def test_wrong_shapes_and_foreign_tensors_are_named(layouts: dict[str, Path]) -> None:
    cfg_path = layouts["hf encoder-only"] / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "d_ff": 64}))
    _refused(layouts["hf encoder-only"], "encoder.block.0.layer.1.DenseReluDense.wi_0.weight has shape [48, 32]",
             "expected [64, 32]")  # fmt: skip
    cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if k != "num_heads"}))
    _refused(layouts["hf encoder-only"], "config.json lacks num_heads")
    cfg_path.write_text(json.dumps({**cfg, "model_type": "t5"}))
    _refused(layouts["hf encoder-only"], "is not a umT5 config (model_type 't5'")

    sd = torch.load(layouts["wan .pth"], weights_only=True)
    sd["blocks.0.attn.q.weight"] = sd["blocks.0.attn.q.weight"][:, :16]
    torch.save(sd, layouts["wan .pth"])
    _refused(layouts["wan .pth"], "blocks.0.attn.q.weight has shape [32, 16], expected [32, 32]")
    torch.save({**sd, "patch_embedding.weight": torch.zeros(1)}, layouts["wan .pth"])  # a DiT file, say
    _refused(layouts["wan .pth"], "not umT5 encoder tensors: patch_embedding.weight")


def test_truncated_files_are_refused(layouts: dict[str, Path]) -> None:
    for path in (layouts["wan .pth"], layouts["diffusers text_encoder"] / "model-00001-of-00002.safetensors"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    _refused(layouts["wan folder"], "unreadable (truncated", str(layouts["wan .pth"]))
    _refused(layouts["diffusers root"], "model-00001-of-00002.safetensors", "truncated")


class _Payload:
    """Unpickling this calls open(marker, "w"): a file appears if the pickle's code ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused(layouts: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    sd = torch.load(layouts["wan .pth"], weights_only=True)
    torch.save({**sd, "blocks.0.norm1.weight": _Payload(marker)}, layouts["wan .pth"])
    _refused(layouts["wan folder"], f"refused {layouts['wan .pth']}: a pickle that would call", "open")
    assert not marker.exists()
    torch.save({"x": _Payload(marker)}, layouts["hf full .bin shards"] / "pytorch_model-00001-of-00003.bin")
    _refused(layouts["hf full .bin shards"], "pytorch_model-00001-of-00003.bin")
    assert not marker.exists()


def test_paths_that_hold_no_encoder(tmp_path: Path, files: dict[str, Path]) -> None:
    _refused(tmp_path / "nope", "does not exist")
    _refused(tmp_path, str(tmp_path), "no umT5 weights", WAN_FILE, "model_index.json")
    _refused(files["diffusers root"] / "transformer", "is not a umT5 config")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "umt5"}))
    _refused(tmp_path, "no weights in", "model.safetensors")


def test_a_tokenizer_without_eos_is_refused(layouts: dict[str, Path]) -> None:
    from tokenizers import Tokenizer, models

    path = layouts["hf encoder-only"] / "tokenizer.json"
    Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>")).save(str(path))
    _refused(layouts["hf encoder-only"], str(path), "no '</s>' token")
    path.write_text("not json")
    _refused(layouts["hf encoder-only"], "cannot read", str(path))


def test_names_follow_weights_md() -> None:
    """Spot-check the documented Wan <-> HF name table against the loader's mapping."""
    from streamer.model.umt5_layouts import our_name

    hf = {"encoder.block.3.layer.1.DenseReluDense.wi_0.weight": "blocks.3.ffn.gate.0.weight",
          "encoder.block.3.layer.0.SelfAttention.relative_attention_bias.weight": "blocks.3.pos_embedding.embedding.weight",
          "shared.weight": "token_embedding.weight", "encoder.final_layer_norm.weight": "norm.weight"}  # fmt: skip
    for hf_name, wan_name in hf.items():
        assert our_name(hf_name) == our_name(wan_name) is not None
    assert our_name("decoder.block.0.layer.0.SelfAttention.q.weight") is None and our_name("lm_head.weight") is None
    assert len(wan_names(random_weights(80)[0])) == 2 + 10 * 2  # weights.md: 242 = 2 + 10 per layer for 24 layers


def test_text_encoder_device_setting(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
    """model.text_encoder_device: cpu never uses the GPU; auto keeps the encoder on the GPU only when the
    doctor's estimate with it fits the card, else offloads it; the estimate counts it only when resident."""
    from streamer.config import from_dict
    from streamer.model import doctor
    from streamer.model.text import text_encoder_placement

    def settings(**kw: str):
        return from_dict({"model": {"preset": "wan-1.3b", "text_encoder": str(files["wan folder"]), **kw}}).model

    gpu = torch.device("cuda", 0)
    assert text_encoder_placement(settings(text_encoder_device="cpu"), gpu) == (torch.device("cpu"), False)
    assert text_encoder_placement(settings(), torch.device("cpu")) == (torch.device("cpu"), False)
    if not torch.cuda.is_available():
        with pytest.raises(TextEncoderError, match="text_encoder_device = 'cuda'"):
            text_encoder_placement(settings(text_encoder_device="cuda"), torch.device("cpu"))

    m = settings(width=832, height=480)
    text_bytes = doctor.estimate_memory(m, True).text_encoder
    params = sum(p.numel() for p in open_text_encoder(files["wan folder"]).net.parameters())
    assert text_bytes == 2 * params  # bf16, sizes read from the file's shapes
    assert doctor.estimate_memory(settings(text_encoder_device="cpu"), True).text_encoder == 0
    needed = doctor.estimate_memory(m, True).total
    for card, resident in ((needed / 0.85, True), (needed / 0.95, False)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, c=card: (int(c) - 2**30, int(c)))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2**30)  # the DiT, loaded already
        assert text_encoder_placement(m, gpu) == (gpu, not resident)


def test_doctor_checks_the_layout(files: dict[str, Path], layouts: dict[str, Path]) -> None:
    from streamer.config import from_dict
    from streamer.model.doctor import checks

    def text_check(path: Path):
        settings = from_dict({"model": {"preset": "wan-1.3b", "text_encoder": str(path)}})
        return next(c for c in checks(settings) if c.name == "text encoder")

    ok = text_check(files["diffusers root"])
    assert ok.status == "OK" and "Diffusers layout" in ok.detail and "tokenizer" in ok.detail
    shutil.rmtree(layouts["wan folder"] / "google")
    bad = text_check(layouts["wan folder"])
    assert bad.status == "FAIL" and "no tokenizer" in bad.detail


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_resident_and_offloaded(files: dict[str, Path]) -> None:
    """Resident on the GPU and offloaded (weights in RAM, on the GPU only while encoding, freed after)
    give the CPU's numbers; the offloaded encoder leaves no GPU memory behind."""
    cpu = open_text_encoder(files["wan folder"]).encode(PROMPTS)
    resident = open_text_encoder(files["wan folder"], device="cuda")
    assert next(resident.net.parameters()).device.type == "cuda"
    torch.testing.assert_close(resident.encode(PROMPTS), cpu, atol=1e-4, rtol=1e-4)
    del resident
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    offloaded = open_text_encoder(files["wan folder"], device="cuda", offload=True)
    assert next(offloaded.net.parameters()).device.type == "cpu"
    torch.testing.assert_close(offloaded.encode(PROMPTS), cpu, atol=1e-4, rtol=1e-4)
    assert torch.cuda.memory_allocated() == before
