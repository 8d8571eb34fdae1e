"""Pruning: the least useful heads/channels go, dims stay multiples of 64, the result loads and trains."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch

from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.model.weights.checkpoints import load_dit
from streamer.train.checkpoint import save_dit_weights
from streamer.train.prune import check_tiles, prune, prune_command, pruned_config


def calib_fn(seed: int = 0):  # noqa: ANN201
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 4, 4, generator=g)
    t = torch.rand(2, 3, generator=g) * 1000
    text = torch.randn(2, 6, 384, generator=g)
    return (lambda m: m(x, t, text, chunk_frames=1)), (x, t, text)


def model_with_dead_units() -> tuple[DiT, list[int]]:
    """Tiny model (2 layers) where one head per attention and 64 FFN channels per layer contribute nothing."""
    torch.manual_seed(0)
    model = DiT(dataclasses.replace(preset("tiny"), num_layers=2)).eval()
    hd, dead_heads = model.cfg.head_dim, [2, 0]
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            h = dead_heads[i]
            for attn in (block.self_attn, block.cross_attn):
                sl = slice(h * hd, (h + 1) * hd)
                for lin in (attn.q, attn.k, attn.v):
                    lin.weight[sl] = 0
                    lin.bias[sl] = 0
                attn.o.weight[:, sl] = 0
            dead = torch.arange(64) * 16 + i  # spread over the width
            block.ffn[0].weight[dead] = 0
            block.ffn[0].bias[dead] = 0
    return model, dead_heads


def test_dead_heads_and_channels_are_removed_and_output_is_unchanged() -> None:
    model, dead_heads = model_with_dead_units()
    run, (x, t, text) = calib_fn()
    small, kept = prune(model, run, keep_heads=3, ffn_dim=960)
    for i, h in enumerate(dead_heads):
        assert h not in kept[f"blocks.{i}.self_attn"] and h not in kept[f"blocks.{i}.cross_attn"]
    assert small.cfg.num_heads == 3 and small.cfg.head_dim == 64 and small.cfg.attn_dim == 192
    assert small.blocks[0].self_attn.q.weight.shape == (192, 256) and small.blocks[0].ffn[0].weight.shape == (960, 256)
    assert check_tiles(small.cfg) == []
    with torch.no_grad():
        ref, out = model(x, t, text, chunk_frames=1), small(x, t, text, chunk_frames=1)
    # exact up to the RMSNorm epsilon (the rescale of q/k norms compensates the narrower RMS)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-4


def test_pruning_live_units_changes_output_less_than_random_choice() -> None:
    torch.manual_seed(1)
    model = DiT(dataclasses.replace(preset("tiny"), num_layers=2)).eval()
    run, (x, t, text) = calib_fn(1)
    small, _ = prune(model, run, keep_heads=3, ffn_dim=512)
    with torch.no_grad():
        ref = model(x, t, text, chunk_frames=1)
        err = (small(x, t, text, chunk_frames=1) - ref).square().mean()
    # the lowest-ranked units cost less than dropping the highest-ranked ones would (inverted ranking)
    from streamer.train import prune as P

    imp = P.measure(model, run)
    inverted = P.Importance(-imp.self_heads, -imp.cross_heads, -imp.ffn, imp.mean_sq)
    sd, _ = P.prune_state_dict(model, inverted, small.cfg)
    worst = DiT(small.cfg).eval()
    worst.load_state_dict(sd)
    with torch.no_grad():
        err_worst = (worst(x, t, text, chunk_frames=1) - ref).square().mean()
    assert err < err_worst


def test_config_rejects_dims_off_the_64_grid() -> None:
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="multiple of 64"):
        pruned_config(cfg, 3, 1000)
    with pytest.raises(ValueError, match="keep_heads"):
        pruned_config(cfg, 0, 512)
    wan = pruned_config(preset("wan-1.3b"), 10, 7168)
    assert wan.attn_dim == 1280 and check_tiles(wan) == []


def test_pruned_preset_loads_with_the_project_loader(tmp_path: Path) -> None:
    model, _ = model_with_dead_units()
    run, (x, t, text) = calib_fn()
    small, _ = prune(model, run, keep_heads=2, ffn_dim=512)
    save_dit_weights(tmp_path, small.cfg, small.state_dict(), None)
    loaded, report = load_dit(tmp_path)
    assert loaded.cfg == small.cfg and "custom" in report
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, text, chunk_frames=1), small(x, t, text, chunk_frames=1))


def test_prune_command_then_fine_tune(tmp_path: Path, pair_dir: Path, fast_text: None) -> None:
    from streamer.train.config import TrainConfig
    from streamer.train.trainer import Trainer

    src = tmp_path / "src"
    torch.manual_seed(0)
    base = DiT(preset("tiny"))
    save_dit_weights(src, base.cfg, base.state_dict(), None)
    toml = tmp_path / "t.toml"
    toml.write_text(f'[train]\ndata = "{pair_dir}"\nwidth = 32\nheight = 32\nframes = 2\nbatch = 1\n')
    args = argparse.Namespace(checkpoint=str(src), out=str(tmp_path / "pruned"), heads=2, ffn=512, config=str(toml),
                              calib_batches=1, force=False)  # fmt: skip

    assert prune_command(args) == 0
    loaded, _ = load_dit(tmp_path / "pruned")
    assert loaded.cfg.num_heads == 2 and loaded.cfg.ffn_dim == 512
    cfg = TrainConfig(init=str(tmp_path / "pruned"), data=str(pair_dir), width=32, height=32, frames=2, batch=1,
                      steps=2, out_dir=str(tmp_path / "ft"), sample_every=0, save_every=2)  # fmt: skip
    trainer = Trainer(cfg)
    assert trainer.dit is not None and trainer.dit.cfg.num_heads == 2
    before = trainer.dit.blocks[0].ffn[0].weight.detach().clone()
    assert trainer.run() == 2
    assert not torch.equal(before, trainer.dit.blocks[0].ffn[0].weight)
    assert load_dit(tmp_path / "ft" / "checkpoints" / "step_0000002")[0].cfg.num_heads == 2
