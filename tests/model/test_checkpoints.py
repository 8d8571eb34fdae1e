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
def _variant(ref: dict[str, torch.Tensor], offset: float) -> dict[str, torch.Tensor]:
    """Same names and shapes as `ref`, different numbers: tells which container entry was loaded."""
    return {k: v + offset for k, v in ref.items()}


def _tiny_json(diffusers: bool) -> str:
    t = preset("tiny")
    if diffusers:
        return json.dumps({"_class_name": "WanTransformer3DModel", "num_attention_heads": t.num_heads,
                           "attention_head_dim": t.head_dim, "in_channels": 16, "out_channels": 16,
                           "text_dim": t.text_dim, "freq_dim": 256, "ffn_dim": t.ffn_dim, "num_layers": t.num_layers,
                           "patch_size": [1, 2, 2], "eps": 1e-6})  # fmt: skip
    return json.dumps({"_class_name": "WanModel", "model_type": "t2v", "dim": t.dim, "num_layers": t.num_layers,
                       "num_heads": t.num_heads, "ffn_dim": t.ffn_dim, "in_dim": 16, "out_dim": 16, "freq_dim": 256,
                       "text_len": t.text_len, "text_dim": t.text_dim, "eps": 1e-6})  # fmt: skip


def test_diffusers_repo_root_finds_transformer(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    root = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    for sub in ("transformer", "text_encoder", "tokenizer", "vae", "scheduler"):
        (root / sub).mkdir(parents=True)
    index_json = {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
                  "vae": ["diffusers", "AutoencoderKLWan"]}  # fmt: skip
    (root / "model_index.json").write_text(json.dumps(index_json))
    diff = {_to_diffusers(k): v for k, v in ref.items()}
    keys = sorted(diff)
    shards = {f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    for name, ks in shards.items():
        save_file({k: diff[k] for k in ks}, str(root / "transformer" / name))
    index = {"metadata": {"total_size": 0}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (root / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (root / "transformer" / "config.json").write_text(_tiny_json(diffusers=True))
    save_file(
        {"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3, 3)},
        str(root / "vae" / "diffusion_pytorch_model.safetensors"),
    )
    (root / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", "z_dim": 16}))
    for given in (root, root / "transformer"):
        info = read_checkpoint(given)
        assert info.path == root / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
        assert info.layout == "sharded safetensors, Diffusers names" and info.problems == []
        assert info.notes == ["dims from config.json"] and info.container == ""
        _same(load_dit(given)[0], ref)
    with pytest.raises(CheckpointError, match="has no 'generator' entry|one state dict"):
        read_checkpoint(root, checkpoint_key="generator")  # safetensors hold no training containers
    for p in sorted((root / "transformer").iterdir(), reverse=True):
        p.unlink()
    (root / "transformer").rmdir()
    with pytest.raises(CheckpointError, match=r"model_index\.json\) without transformer/"):
        read_checkpoint(root)


def test_wan_root_picks_the_dit_not_the_t5_or_vae(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    root = tmp_path / "wan_models" / "Wan2.1-T2V-1.3B"
    (root / "google" / "umt5-xxl").mkdir(parents=True)
    (root / "google" / "umt5-xxl" / "tokenizer_config.json").write_text("{}")
    (root / "config.json").write_text(_tiny_json(diffusers=False))
    # The other models' files come first in name order and are pickles the loader could read.
    torch.save({"token_embedding.weight": torch.zeros(8, 4), "blocks.0.attn.q.weight": torch.zeros(4, 4)},
               root / "models_t5_umt5-xxl-enc-bf16.pth")  # fmt: skip
    torch.save({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3), "conv2.weight": torch.zeros(16, 16, 1, 1, 1)},
               root / "Wan2.1_VAE.pth")  # fmt: skip
    save_file(ref, str(root / "diffusion_pytorch_model.safetensors"))
    info = read_checkpoint(root)
    assert info.path == root / "diffusion_pytorch_model.safetensors" and info.layout == "safetensors, Wan names"
    assert info.preset == "tiny" and info.problems == []
    _same(load_dit(root)[0], ref)
    (root / "diffusion_pytorch_model.safetensors").unlink()  # e.g. only the T5 and VAE were pulled
    others = "Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth: the text encoder / VAE, not the DiT"
    with pytest.raises(CheckpointError, match=others):
        read_checkpoint(root)


def _self_forcing(tmp_path: Path, ref: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "checkpoints" / "self_forcing_dmd.pt"
    path.parent.mkdir()
    torch.save({"generator": {"model." + k: v for k, v in _variant(ref, 1.0).items()},
                "critic": {"model." + k: v for k, v in _variant(ref, 2.0).items()},
                "generator_ema": {"model." + k: v for k, v in ref.items()}}, path)  # fmt: skip
    return path


def test_self_forcing_auto_takes_the_ema_and_an_explicit_key_wins(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    path = _self_forcing(tmp_path, ref)
    info = read_checkpoint(path)
    assert info.container == "generator_ema" and "Self-Forcing" in info.container_reason
    model, report = load_dit(path)
    _same(model, ref)
    assert "auto: Self-Forcing file" in report
    _same(load_dit(path, checkpoint_key="generator_ema")[0], ref)
    _same(load_dit(path, checkpoint_key="generator")[0], _variant(ref, 1.0))
    with pytest.raises(CheckpointError, match="'critic' is not one of 'auto', 'generator', 'generator_ema'"):
        read_checkpoint(path, checkpoint_key="critic")


def test_causvid_has_only_generator(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "autoregressive_checkpoint" / "model.pt"
    path.parent.mkdir()
    torch.save({"generator": {"model." + k: v for k, v in ref.items()}}, path)
    info = read_checkpoint(path)
    assert info.container == "generator" and "CausVid" in info.container_reason
    _same(load_dit(path)[0], ref)
    n = len(ref)
    with pytest.raises(CheckpointError, match=rf"no 'generator_ema' entry; it holds: generator \({n} tensors\)"):
        load_dit(path, checkpoint_key="generator_ema")


def test_streamdiffusionv2_auto_takes_generator_first(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "ckpts" / "wan_causal_dmd_v2v" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save({"generator": ref, "generator_ema": _variant(ref, 1.0)}, path)
    info = read_checkpoint(path)
    assert info.container == "generator" and "StreamDiffusionV2" in info.container_reason
    _same(load_dit(path)[0], ref)


def _fsdp_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LongLive's EMA names: the FSDP wrapper sits inside each block's name, not only in front."""
    return {"model." + re.sub(r"^(blocks\.\d+)\.", r"\1._fsdp_wrapped_module.", k): v for k, v in sd.items()}


def test_longlive_auto_takes_generator_and_fsdp_parts_are_removed_anywhere(
    tmp_path: Path, ref: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "models" / "longlive_base.pt"
    path.parent.mkdir()
    names = _fsdp_names(ref)
    assert "model.blocks.0._fsdp_wrapped_module.self_attn.q.weight" in names
    generator = {"model." + k: v for k, v in ref.items()}
    torch.save({"generator": generator, "generator_ema": _fsdp_names(_variant(ref, 1.0))}, path)
    info = read_checkpoint(path)
    assert info.container == "generator" and "LongLive" in info.container_reason
    _same(load_dit(path)[0], ref)
    ema = read_checkpoint(path, checkpoint_key="generator_ema")
    n_block = sum(k.startswith("blocks.") for k in ref)
    assert ema.problems == [] and f"removed '_fsdp_wrapped_module.' from {n_block} names" in ema.notes
    _same(load_dit(path, checkpoint_key="generator_ema")[0], _variant(ref, 1.0))
    clash = {**_fsdp_names(ref), "model.blocks.0.self_attn.q.weight": ref["blocks.0.self_attn.q.weight"]}
    torch.save({"generator": clash}, tmp_path / "clash.pt")
    with pytest.raises(CheckpointError, match="clash.pt: removing '_fsdp_wrapped_module.' makes two entries named"):
        read_checkpoint(tmp_path / "clash.pt")


def test_inspect_lists_the_entries_and_the_choice(tmp_path: Path, ref: dict[str, torch.Tensor], capsys) -> None:
    path, n = _self_forcing(tmp_path, ref), len(ref)
    assert cli_main(["model", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"holds:      generator ({n} tensors), critic ({n} tensors), generator_ema ({n} tensors)" in out
    assert "chosen:     generator_ema (auto: Self-Forcing file (self_forcing*): its README runs inference with " in out
    assert cli_main(["model", "inspect", str(path), "--key", "generator"]) == 0
    assert "chosen:     generator (checkpoint key 'generator' asked for)" in capsys.readouterr().out
    torch.save({"generator": ref}, tmp_path / "causvid.pt")
    assert cli_main(["model", "inspect", str(tmp_path / "causvid.pt"), "--key", "generator_ema"]) == 1
    assert f"no 'generator_ema' entry; it holds: generator ({n} tensors)" in capsys.readouterr().out


def test_model_checkpoint_key_setting(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    from streamer.config import ConfigError, ModelSettings, load
    from streamer.model.loading import ModelLoadError, load_configured_dit

    path = _self_forcing(tmp_path, ref)
    for key, want in (("auto", ref), ("generator", _variant(ref, 1.0))):
        m = ModelSettings(preset="tiny", checkpoint=str(path), checkpoint_key=key)  # type: ignore[arg-type]
        _same(load_configured_dit(m, torch.device("cpu"), torch.float32)[0], want)
    torch.save({"generator_ema": ref}, tmp_path / "ema_only.pt")
    m = ModelSettings(preset="tiny", checkpoint=str(tmp_path / "ema_only.pt"), checkpoint_key="generator")
    with pytest.raises(ModelLoadError, match="model.checkpoint_key = 'generator': .*no 'generator' entry"):
        load_configured_dit(m, torch.device("cpu"), torch.float32)
    toml = tmp_path / "streamer.toml"
    toml.write_text('[model]\ncheckpoint_key = "ema"\n')
    with pytest.raises(ConfigError, match="'model.checkpoint_key' must be one of 'auto', 'generator', 'generator_ema'"):
        load(toml)


def test_doctor_reads_the_configured_checkpoint_key(tmp_path: Path) -> None:
    """The doctor checks model.checkpoint_key as `run` does: a key the file lacks fails, naming what it holds."""
    import dataclasses

    from streamer.config import ModelSettings
    from streamer.model.doctor import _weights_checks

    torch.manual_seed(3)
    sd = {f"model.{k}": v for k, v in build("tiny").state_dict().items()}
    path = tmp_path / "model.pt"
    torch.save({"generator": sd}, path)
    base = dataclasses.replace(ModelSettings(), preset="tiny", checkpoint=str(path), vae="random")
    ok = [c for c in _weights_checks(base, {}) if c.name == "model checkpoint"]
    assert ok and ok[0].status == "OK", ok
    bad = [c for c in _weights_checks(dataclasses.replace(base, checkpoint_key="generator_ema"), {})
           if c.name == "model checkpoint"]  # fmt: skip
    assert bad and bad[0].status == "FAIL" and "generator" in bad[0].detail, bad
