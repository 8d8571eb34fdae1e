"""A checkpoint's config.json is checked against its tensors (and both against sane sizes) before any
model is built: a config claiming a million layers is refused at once, naming config.json."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamer.cli import main as cli_main
from streamer.model.config import DiTConfig
from streamer.model.dit import DiT
from streamer.model.weights.checkpoints import CheckpointError, load_dit, read_checkpoint

CFG = DiTConfig(dim=64, num_layers=2, num_heads=2, ffn_dim=96, text_dim=32, text_len=8)
WAN_JSON = {"_class_name": "WanModel", "model_type": "t2v", "dim": 64, "num_layers": 2, "num_heads": 2, "ffn_dim": 96,
            "in_dim": 16, "out_dim": 16, "freq_dim": 256, "text_len": 8, "eps": 1e-6, "text_dim": 32}  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    save_file(DiT(CFG).state_dict(), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    return tmp_path


def _write_config(folder: Path, **changes: object) -> Path:
    (folder / "config.json").write_text(json.dumps({**WAN_JSON, **changes}))
    return folder / "config.json"


def test_a_config_claiming_a_million_layers_is_refused_at_once(folder: Path) -> None:
    cfg_file = _write_config(folder, num_layers=1_000_000)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        load_dit(folder)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"refusal took {elapsed:.1f} s"
    message = str(e.value)
    assert message.startswith(str(cfg_file)) and "config.json" in message
    assert "num_layers = 1000000 (allowed 1..256)" in message
    t0 = time.perf_counter()
    assert cli_main(["model", "inspect", str(folder)]) == 1  # the same one-line answer, no traceback
    assert time.perf_counter() - t0 < 2.0


def test_a_plausible_config_that_disagrees_with_the_tensors_names_each_mismatch(folder: Path) -> None:
    _write_config(folder, num_layers=30, ffn_dim=128, text_dim=4096)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(folder)
    message = str(e.value)
    assert "config.json does not match the tensors of diffusion_pytorch_model.safetensors" in message
    assert "num_layers 30 vs 2 (blocks in the file)" in message
    assert "ffn_dim 128 vs 96 (blocks.0.ffn.0.weight)" in message
    assert "text_dim 4096 vs 32 (text_embedding.0.weight)" in message
    _write_config(folder, num_heads=3)  # 64 is not divisible by 3: a clear error, not a crash
    with pytest.raises(CheckpointError, match="not a Wan or Diffusers transformer config .*not divisible"):
        read_checkpoint(folder)
    _write_config(folder)  # the honest config loads, heads included (the shapes alone cannot tell them)
    assert load_dit(folder)[0].cfg == CFG


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_heads": 0}, "num_heads = 0 (allowed 1..256)"),
        ({"dim": 10**9, "num_layers": -1}, "dim = 1000000000 (allowed 1..16384); num_layers = -1 (allowed 1..256)"),
        ({"eps": float("nan")}, "eps = nan (between 0 and 1)"),
        ({"patch_size": [1, 2, 2, 2]}, "patch_size = [1, 2, 2, 2] (three sizes of 1..16)"),
        ({"ffn_dim": "wide"}, "not a Wan or Diffusers transformer config"),
        ({"num_layers": 1e400}, "not a Wan or Diffusers transformer config"),  # JSON Infinity: int() overflows
    ],
)
def test_absurd_or_broken_values_in_config_json(folder: Path, changes: dict[str, object], message: str) -> None:
    cfg_file = _write_config(folder, **changes)
    with pytest.raises(CheckpointError, match=re.escape(str(cfg_file)) + ".*" + re.escape(message)):
        read_checkpoint(folder)


def test_diffusers_config_is_checked_the_same_way(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "WanTransformer3DModel", "num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 16,
        "out_channels": 16, "text_dim": 32, "freq_dim": 256, "ffn_dim": 96, "num_layers": 1_000_000,
    }))  # fmt: skip
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="config.json: architecture out of range: num_layers = 1000000"):
        read_checkpoint(folder)
    assert time.perf_counter() - t0 < 2.0


def test_a_pickle_of_many_tiny_blocks_cannot_claim_any_depth(tmp_path: Path) -> None:
    # No config.json for pickles: the depth comes from the block names, so it is bounded the same way.
    sd = {f"blocks.{i}.norm3.weight": torch.zeros(1) for i in range(300)}
    sd.update({"patch_embedding.weight": torch.zeros(64, 16, 1, 2, 2), "blocks.0.ffn.0.weight": torch.zeros(96, 64),
               "text_embedding.0.weight": torch.zeros(64, 32), "time_embedding.0.weight": torch.zeros(64, 256),
               "head.head.weight": torch.zeros(64, 64)})  # fmt: skip
    torch.save(sd, tmp_path / "deep.pt")
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"deep\.pt: architecture out of range: num_layers = 300"):
        read_checkpoint(tmp_path / "deep.pt")
    assert time.perf_counter() - t0 < 2.0
