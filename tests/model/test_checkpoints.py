"""Checkpoint loading: every container layout loads to identical weights; bad files give clear errors."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamer.cli import main as cli_main
from streamer.model.config import DiTConfig, preset
from streamer.model.dit import DiT, build
from streamer.model.weights.checkpoints import (
    CheckpointError,
    _config_from_shapes,
    check_state_dict,
    diffusers_to_wan,
    inspect_command,
    load_dit,
    read_checkpoint,
)


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    torch.manual_seed(8)
    return {k: v.clone() for k, v in build("tiny").state_dict().items()}


def _same(model: DiT, sd: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k].to(v.dtype), v), k


# Written from model.md's rename table, original -> Diffusers (the loader implements the reverse).
_TO_DIFFUSERS = [
    (r"^time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"^time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"^text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"^text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"^time_projection\.1\.", "condition_embedder.time_proj."),
    (r"^head\.modulation$", "scale_shift_table"),
    (r"^head\.head\.", "proj_out."),
    (r"\.modulation$", ".scale_shift_table"),
    (r"\.ffn\.0\.", ".ffn.net.0.proj."),
    (r"\.ffn\.2\.", ".ffn.net.2."),
    (r"\.self_attn\.o\.", ".attn1.to_out.0."),
    (r"\.cross_attn\.o\.", ".attn2.to_out.0."),
    (r"\.self_attn\.([qkv])\.", r".attn1.to_\1."),
    (r"\.cross_attn\.([qkv])\.", r".attn2.to_\1."),
    (r"\.self_attn\.norm", ".attn1.norm"),
    (r"\.cross_attn\.norm", ".attn2.norm"),
    (r"\.norm3\.", ".norm2."),
]


def _to_diffusers(key: str) -> str:
    for pattern, repl in _TO_DIFFUSERS:
        key, n = re.subn(pattern, repl, key)
        if n:
            return key
    return key


def test_diffusers_names_map_back_for_the_real_1_3b_layout() -> None:
    with torch.device("meta"):
        sd = DiT(preset("wan-1.3b")).state_dict()
    diff = {_to_diffusers(k): v for k, v in sd.items()}
    assert "blocks.3.norm2.weight" in diff and "blocks.3.attn1.to_out.0.weight" in diff and "scale_shift_table" in diff
    assert {diffusers_to_wan(k) for k in diff} == set(sd)
    cfg = _config_from_shapes(sd)
    assert cfg == preset("wan-1.3b")
    assert check_state_dict(sd, cfg) == []


def test_original_wan_safetensors_with_config_json(tmp_path: Path) -> None:
    cfg = DiTConfig(dim=64, num_layers=2, num_heads=2, ffn_dim=96, text_dim=32, text_len=8)
    torch.manual_seed(9)
    sd = DiT(cfg).state_dict()
    save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    raw = {"_class_name": "WanModel", "model_type": "t2v", "dim": 64, "num_layers": 2, "num_heads": 2, "ffn_dim": 96,
           "in_dim": 16, "out_dim": 16, "freq_dim": 256, "text_len": 8, "eps": 1e-6, "text_dim": 32}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(raw))
    model, _ = load_dit(tmp_path)
    assert model.cfg == cfg  # heads come from config.json (shapes alone cannot tell them)
    _same(model, sd)
    info = read_checkpoint(tmp_path)
    assert info.preset == "custom" and info.layout.startswith("safetensors")


def test_diffusers_layout_with_diffusers_config(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    save_file({_to_diffusers(k): v for k, v in ref.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    tiny = preset("tiny")
    (tmp_path / "config.json").write_text(json.dumps({
        "_class_name": "WanTransformer3DModel", "num_attention_heads": tiny.num_heads, "attention_head_dim": tiny.head_dim,
        "in_channels": 16, "out_channels": 16, "text_dim": tiny.text_dim, "freq_dim": 256, "ffn_dim": tiny.ffn_dim,
        "num_layers": tiny.num_layers, "patch_size": [1, 2, 2], "eps": 1e-6,
    }))  # fmt: skip
    info = read_checkpoint(tmp_path)
    assert "Diffusers names" in info.layout and info.problems == []
    _same(load_dit(tmp_path)[0], ref)


@pytest.mark.parametrize("container", ["generator_ema", "generator", "state_dict", "bare"])
@pytest.mark.parametrize("prefix", ["model.", ""])
def test_training_pickles(tmp_path: Path, ref: dict[str, torch.Tensor], container: str, prefix: str) -> None:
    weights = {prefix + k: v.to(torch.bfloat16) for k, v in ref.items()}
    decoy = {prefix + k: torch.zeros_like(v) for k, v in weights.items()}
    if container == "generator_ema":
        obj: object = {"generator": decoy, "generator_ema": weights, "critic": decoy, "step": torch.tensor(100)}
    elif container == "bare":
        obj = weights
    else:
        obj = {container: weights}
    path = tmp_path / "model.pt"
    torch.save(obj, path)
    info = read_checkpoint(path)
    assert info.preset == "tiny" and info.problems == []
    assert ("bf" in info.dtypes) and (container in info.layout if container != "bare" else "bare dict" in info.layout)
    model, report = load_dit(path, preset="tiny")
    assert report.startswith("model.pt: tiny, torch pickle")
    _same(model, {k: v.to(torch.bfloat16) for k, v in ref.items()})


def test_sharded_safetensors_index(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    keys = sorted(ref)
    halves = {"part-1.safetensors": keys[: len(keys) // 2], "part-2.safetensors": keys[len(keys) // 2 :]}
    for name, ks in halves.items():
        save_file({k: ref[k] for k in ks}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: n for n, ks in halves.items() for k in ks}}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    _same(load_dit(tmp_path)[0], ref)


def _lora(ref: dict[str, torch.Tensor], rank: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(10)
    lora, deltas = {}, {}
    for mod in ("blocks.0.self_attn.q", "blocks.1.ffn.0", "blocks.3.cross_attn.o"):
        out_f, in_f = ref[f"{mod}.weight"].shape
        a, b = torch.randn(rank, in_f, generator=g), torch.randn(out_f, rank, generator=g)
        lora[f"base_model.model.{mod}.lora_A.weight"] = a
        lora[f"base_model.model.{mod}.lora_B.weight"] = b
        deltas[f"{mod}.weight"] = b @ a
    return lora, deltas


@pytest.mark.parametrize("alpha", [None, 8.0])
def test_longlive_base_plus_peft_lora_merge(tmp_path: Path, ref: dict[str, torch.Tensor], alpha: float | None) -> None:
    base = tmp_path / "longlive_base.pt"
    torch.save({"generator_ema": {"model." + k: v for k, v in ref.items()}}, base)
    lora, deltas = _lora(ref, rank=4)
    lora_dir = tmp_path / "lora"
    lora_dir.mkdir()
    torch.save({"generator_lora": lora, "critic_lora": {}}, lora_dir / "lora.pt")
    if alpha is not None:
        (lora_dir / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": alpha, "peft_type": "LORA"}))
    scale = (alpha or 4) / 4
    want = dict(ref)
    for k, d in deltas.items():
        want[k] = ref[k] + scale * d
    model, report = load_dit(base, lora=lora_dir / "lora.pt")
    assert "LoRA" in report and "3 layers" in report
    for k in want:
        torch.testing.assert_close(model.state_dict()[k], want[k], rtol=1e-6, atol=1e-5)
    assert not torch.equal(model.state_dict()["blocks.0.self_attn.q.weight"], ref["blocks.0.self_attn.q.weight"])


def test_lora_that_does_not_fit_is_refused(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    base = tmp_path / "base.pt"
    torch.save(ref, base)
    lora, _ = _lora(ref, rank=2)
    lora["base_model.model.blocks.9.self_attn.q.lora_A.weight"] = torch.zeros(2, 256)
    lora["base_model.model.blocks.9.self_attn.q.lora_B.weight"] = torch.zeros(256, 2)
    lora["base_model.model.blocks.0.ffn.2.lora_A.weight"] = torch.zeros(2, 7)
    lora["base_model.model.blocks.0.ffn.2.lora_B.weight"] = torch.zeros(256, 2)
    save_file(lora, str(tmp_path / "bad_lora.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"blocks\.0\.ffn\.2: A \[2, 7\].*\n.*targets blocks\.9\.self_attn\.q\.weight"
    ):
        load_dit(base, lora=tmp_path / "bad_lora.safetensors")


def _broken(ref: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    sd = dict(ref)
    if kind == "missing":
        for k in [k for k in sd if k.startswith("blocks.2.")]:
            del sd[k]
    elif kind == "unexpected":
        sd["blocks.0.img_emb.weight"] = torch.zeros(3)
    elif kind == "shape":
        sd["blocks.1.ffn.0.weight"] = torch.zeros(512, 256)
    return sd


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", r"27 missing keys: blocks\.2\.cross_attn\.k\.bias, .* \(\+17 more\)"),
        ("unexpected", r"1 unexpected keys: blocks\.0\.img_emb\.weight"),
        ("shape", r"mis-shaped keys .*: blocks\.1\.ffn\.0\.weight \[512, 256\] vs \[1024, 256\]"),
    ],
)
def test_wrong_checkpoints_name_their_keys(
    tmp_path: Path, ref: dict[str, torch.Tensor], kind: str, message: str
) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(_broken(ref, kind), str(path))
    with pytest.raises(CheckpointError, match=message):
        load_dit(path)
    assert inspect_command(argparse.Namespace(path=str(path), lora=None)) == 1


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_and_corrupt_files(tmp_path: Path, ref: dict[str, torch.Tensor], suffix: str) -> None:
    good = tmp_path / f"good{suffix}"
    save_file(ref, str(good)) if suffix == ".safetensors" else torch.save(ref, good)
    data = good.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            load_dit(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_dit(tmp_path / "absent.pt")


class _Payload:  # an arbitrary object: weights_only loading must refuse to build it
    pass


def test_pickles_with_objects_are_refused(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"generator": ref, "extra": _Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_checkpoint(path)


def test_expected_preset_mismatch(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file(ref, str(path))
    with pytest.raises(CheckpointError, match="tiny checkpoint .* asks for wan-1.3b"):
        load_dit(path, preset="wan-1.3b")


def test_inspect_command_exit_codes(tmp_path: Path, ref: dict[str, torch.Tensor], capsys) -> None:
    good = tmp_path / "good.pt"
    torch.save({"generator": {"model." + k: v for k, v in ref.items()}}, good)
    assert cli_main(["model", "inspect", str(good)]) == 0
    out = capsys.readouterr().out
    assert "preset:     tiny" in out and "torch pickle (generator)" in out and "problems:   none" in out
    assert f"{sum(v.numel() for v in ref.values()):,}" in out
    lora, _ = _lora(ref, rank=2)
    save_file(lora, str(tmp_path / "lora.safetensors"))
    assert cli_main(["model", "inspect", str(good), "--lora", str(tmp_path / "lora.safetensors")]) == 0
    assert "LoRA" in capsys.readouterr().out
    bad = tmp_path / "bad.safetensors"
    save_file(_broken(ref, "shape"), str(bad))
    assert cli_main(["model", "inspect", str(bad)]) == 1
    assert "mis-shaped" in capsys.readouterr().out
    assert cli_main(["model", "inspect", str(tmp_path / "nothing.pt")]) == 1


def test_folder_with_one_pickle_and_a_foreign_config(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    torch.save({"generator": {"model." + k: v for k, v in ref.items()}}, tmp_path / "self_forcing_dmd.pt")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", "z_dim": 16}))
    model, report = load_dit(tmp_path)
    _same(model, ref)
    assert "self_forcing_dmd.pt: tiny" in report
    torch.save(ref, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="found other.pt, self_forcing_dmd.pt; name one"):
        load_dit(tmp_path)


# ---- the layouts upstream READMEs download (design/weights.md) ----------------------------------------
