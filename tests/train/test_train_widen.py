"""Widening a DiT (streamer/train/widen.py): to take the clean input latent, or to more FFN channels; and
training the widened one.

Widening is exact (zero patch-embedding columns: the same output for any condition; zero second-matrix
columns for new FFN channels); the widened checkpoint carries its shape in config.json and its step
embedding; training feeds the INPUT clip's clean latent to every forward (main pass, rollout history,
shortcut targets) and learns on a toy batch; the new FFN channels learn.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from streamer.cli import main as cli_main
from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.model.weights.checkpoints import load_dit
from streamer.train.checkpoint import save_dit_weights
from streamer.train.config import TrainConfig
from streamer.train.data import draw_clips, step_generator
from streamer.train.objective import encode_clips
from streamer.train.shortcut import ShortcutDiT
from streamer.train.trainer import Trainer
from streamer.train.widen import widen_checkpoint, widen_ffn, widen_input


def _shortcut_model() -> ShortcutDiT:
    torch.manual_seed(0)
    model = ShortcutDiT(dataclasses.replace(preset("tiny"), num_layers=2))
    torch.nn.init.normal_(model.step_embedding.mlp[2].weight, std=0.05)  # a trained step embedding: it must carry over
    return model.eval()


def test_a_widened_dit_computes_exactly_what_it_did_for_any_condition() -> None:
    model = _shortcut_model()
    wide = widen_input(model)
    assert isinstance(wide, ShortcutDiT) and wide.cfg.in_dim == 32 and wide.cfg.out_dim == 16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 3, 8, 8, generator=g)
    t = torch.rand(2, 3, generator=g) * 1000
    text = torch.randn(2, 5, 384, generator=g)
    d = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.25, 0.0]])
    with torch.no_grad():
        want = model(x, t, text, chunk_frames=1, step_size=d)
        for cond in (torch.randn(x.shape, generator=g), torch.zeros_like(x), 100 * torch.randn(x.shape, generator=g)):
            assert torch.equal(wide(x, t, text, chunk_frames=1, step_size=d, cond=cond), want)
    with pytest.raises(ValueError, match="already input-conditioned"):
        widen_input(wide)


def test_widen_input_command_writes_a_loadable_conditioned_checkpoint(tmp_path: Path) -> None:
    model = _shortcut_model()
    save_dit_weights(tmp_path / "src", model.cfg, model.wan_state_dict(), model.shortcut_state_dict())
    assert cli_main(["train", "widen-input", str(tmp_path / "src"), "--out", str(tmp_path / "wide")]) == 0
    assert json.loads((tmp_path / "wide" / "config.json").read_text())["in_dim"] == 32
    loaded, report = load_dit(tmp_path / "wide")
    assert loaded.cfg.in_dim == 32 and "shortcut step embedding" in report
    assert torch.equal(loaded.step_embedding.mlp[2].weight, model.step_embedding.mlp[2].weight)  # type: ignore[union-attr]
    assert loaded.patch_embedding.weight[:, 16:].abs().max() == 0
    assert torch.equal(loaded.patch_embedding.weight[:, :16], model.patch_embedding.weight)
    # a non-empty --out is refused without --force; widening the widened one is refused with the reason
    assert cli_main(["train", "widen-input", str(tmp_path / "src"), "--out", str(tmp_path / "wide")]) == 1
    assert cli_main(["train", "widen-input", str(tmp_path / "wide"), "--out", str(tmp_path / "w2")]) == 1


def test_a_dit_widened_to_more_ffn_channels_computes_exactly_what_it_did() -> None:
    model = widen_input(_shortcut_model())
    wide = widen_ffn(model, 1536, seed=3)
    assert isinstance(wide, ShortcutDiT) and wide.cfg.ffn_dim == 1536 and wide.cfg.in_dim == 32
    g = torch.Generator().manual_seed(2)
    x, cond = torch.randn(2, 16, 3, 8, 8, generator=g), torch.randn(2, 16, 3, 8, 8, generator=g)
    t, text = torch.rand(2, 3, generator=g) * 1000, torch.randn(2, 5, 384, generator=g)
    d = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.25, 0.0]])
    with torch.no_grad():
        want = model(x, t, text, chunk_frames=1, step_size=d, cond=cond)
        assert torch.equal(wide(x, t, text, chunk_frames=1, step_size=d, cond=cond), want)
    for i in range(wide.cfg.num_layers):
        up, down = wide.blocks[i].ffn[0].weight, wide.blocks[i].ffn[2].weight
        assert torch.equal(up[:1024], model.blocks[i].ffn[0].weight) and down[:, 1024:].abs().max() == 0
        assert up[1024:].abs().max() > 0  # the new channels are active, so their zero columns get a gradient
    assert torch.equal(widen_ffn(model, 1536, seed=3).blocks[0].ffn[0].weight, wide.blocks[0].ffn[0].weight)
    for bad in (1024, 1000, 512):  # not wider, or not a multiple of 64
        with pytest.raises(ValueError, match="multiple of 64 above the current 1024"):
            widen_ffn(model, bad)


def test_widen_ffn_command_writes_a_checkpoint_whose_new_channels_learn(
    tmp_path: Path, pair_dir: Path, micro_init: Path, fast_text: None
) -> None:
    widen_checkpoint(micro_init, tmp_path / "cond")
    before = json.loads((tmp_path / "cond" / "config.json").read_text())["ffn_dim"]
    out = tmp_path / "wide"
    assert cli_main(["train", "widen-ffn", str(tmp_path / "cond"), "--ffn-dim", str(before + 64), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["ffn_dim"] == before + 64
    assert cli_main(["train", "widen-ffn", str(tmp_path / "cond"), "--ffn-dim", str(before), "--out",
                     str(tmp_path / "w2")]) == 1  # fmt: skip
    trainer = Trainer(_cfg(tmp_path / "run", pair_dir, out, p_history=0.0, p_shortcut=0.0))
    assert trainer.dit is not None and trainer.dit.cfg.ffn_dim == before + 64
    batch = draw_clips(trainer.source, 4, trainer.video_frames, 0, 0, 0).ready("cpu")
    for _ in range(3):
        trainer.opt.zero_grad(set_to_none=True)
        loss, _ = trainer.objective.loss(batch, step_generator(0, 0, 0, "noise"))
        loss.backward()
        trainer.opt.step()
    assert trainer.dit.blocks[0].ffn[2].weight[:, before:].abs().max() > 0  # the new output columns moved


@pytest.fixture
def conditioned_init(tmp_path: Path, micro_init: Path) -> Path:
    out = tmp_path / "micro-wide"
    widen_checkpoint(micro_init, out)
    return out


def _cfg(out: Path, data: Path, init: Path, **kw: object) -> TrainConfig:
    base = dict(init=str(init), data=str(data), out_dir=str(out), width=32, height=32, frames=3, batch=4, steps=4,
                save_every=2, log_every=1, sample_every=0, warmup=1, lr=1e-3, p_history=0.5, p_rollout=0.5,
                p_shortcut=0.5)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_training_conditions_every_forward_on_the_input_clip(
    tmp_path: Path, pair_dir: Path, conditioned_init: Path, fast_text: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every clip has a history (half of them the model's own rollout) and a shortcut frame: all three forwards
    trainer = Trainer(_cfg(tmp_path / "run", pair_dir, conditioned_init, p_history=1.0, p_shortcut=1.0))
    assert trainer.dit is not None and trainer.dit.cfg.in_dim == 32
    batch = draw_clips(trainer.source, 4, trainer.video_frames, 0, 0, 0).ready("cpu")
    z_in = encode_clips(trainer.vae, batch.inputs)
    seen: list[tuple[int, torch.Tensor]] = []
    patchify = DiT.patchify

    def spy(self: DiT, x: torch.Tensor, cond: torch.Tensor | None = None) -> object:
        assert cond is not None
        seen.append((x.shape[0], cond.detach().clone()))
        return patchify(self, x, cond)

    monkeypatch.setattr(DiT, "patchify", spy)
    loss, stats = trainer.objective.loss(batch, step_generator(0, 0, 0, "noise"))
    assert torch.isfinite(loss) and stats.history_frames > 0 and stats.shortcut_clips == 4
    assert len(seen) == 4  # rollout, the two shortcut half steps, the prediction
    assert torch.equal(seen[-1][1], z_in)  # the prediction: the whole batch's input latents
    for _, cond in seen:  # the others: their clips' rows of them
        assert all(any(torch.equal(row, z) for z in z_in) for row in cond)


def test_a_conditioned_model_learns_a_toy_batch_and_saves_its_in_dim(
    tmp_path: Path, pair_dir: Path, conditioned_init: Path, fast_text: None
) -> None:
    trainer = Trainer(_cfg(tmp_path / "run", pair_dir, conditioned_init, p_history=0.0, p_shortcut=0.0))
    assert trainer.dit is not None
    batch = draw_clips(trainer.source, 4, trainer.video_frames, 0, 0, 0).ready("cpu")
    losses = []
    for _ in range(12):  # the same batch and noise every step: the loss must fall
        trainer.opt.zero_grad(set_to_none=True)
        loss, _ = trainer.objective.loss(batch, step_generator(0, 0, 0, "noise"))
        loss.backward()
        trainer.opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    assert trainer.dit.patch_embedding.weight[:, 16:].abs().max() > 0  # the condition channels learned
    trainer.cfg = dataclasses.replace(trainer.cfg, p_history=0.5, p_shortcut=0.5)  # the full objective runs too
    assert trainer.run() == 4
    saved = tmp_path / "run" / "checkpoints" / "step_0000004"
    assert json.loads((saved / "config.json").read_text())["in_dim"] == 32
    assert load_dit(saved)[0].cfg.conditions_on_input
