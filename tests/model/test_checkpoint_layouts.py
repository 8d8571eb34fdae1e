"""The real upstream layouts and container keys: Diffusers and Wan repo roots, Self-Forcing / CausVid /
StreamDiffusionV2 / LongLive pickles (which entry `auto` takes, an explicit model.checkpoint_key, FSDP
wrapper names anywhere in a key), what `model inspect` says, and the doctor reading the same setting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_checkpoints import _same, _to_diffusers

from streamer.cli import main as cli_main
from streamer.model.config import preset
from streamer.model.dit import build
from streamer.model.weights.checkpoints import CheckpointError, load_dit, read_checkpoint


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    torch.manual_seed(8)
    return {k: v.clone() for k, v in build("tiny").state_dict().items()}


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


def test_a_lora_or_checkpoint_that_is_a_fifo_is_refused_not_read(tmp_path: Path, ref: dict[str, torch.Tensor]) -> None:
    """A FIFO (or device) named as model.lora or as the weights would block the reader for good: refused by stat."""
    import os
    import time

    save_file(ref, tmp_path / "model.safetensors")
    fifo = tmp_path / "lora.pt"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_checkpoint(tmp_path / "model.safetensors", fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_dit(tmp_path / "model.safetensors", lora="/dev/zero")
    assert time.monotonic() - t0 < 5
