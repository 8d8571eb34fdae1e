"""train.pixel_loss: an L1 loss on the decoded one-step prediction of paired frames, pixels and gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamer.model.sampling import to_x0
from streamer.model.vae import TAEHV, tiny_taehv
from streamer.train.config import TrainConfig, check
from streamer.train.forcing import make_plan, noisy_clip, per_frame
from streamer.train.objective import dark_detail, decoded_loss
from streamer.train.trainer import Trainer


def frozen_vae() -> TAEHV:
    torch.manual_seed(0)
    vae = tiny_taehv().eval()
    vae.requires_grad_(False)
    return vae


def test_decoded_loss_is_zero_on_the_target_and_grows_with_an_edge_error() -> None:
    vae = frozen_vae()
    z0 = torch.randn(2, 16, 3, 4, 4)
    with torch.no_grad():
        targets = vae.decode_unclamped(z0.permute(0, 2, 1, 3, 4))
    rows = torch.tensor([[True, False, True], [False, True, True]])
    assert float(decoded_loss(vae, z0, targets, rows)) == pytest.approx(0.0, abs=1e-7)
    # The same mean error costs more as a thin line than as a flat shift: the gradient term sees edges.
    flat, line = targets.clone(), targets.clone()
    flat += 0.05
    line[..., ::2, :] += 0.1  # every other row: an error of 0.05 on average, and sharp steps between rows
    assert float(decoded_loss(vae, z0, line, rows)) > 2 * float(decoded_loss(vae, z0, flat, rows)) > 0


def test_decoded_loss_reads_only_the_chosen_frames_and_is_linear_in_them() -> None:
    vae = frozen_vae()
    z0 = torch.randn(2, 16, 3, 4, 4)
    targets = torch.rand(2, 3, 3, 32, 32)
    a = torch.tensor([[True, False, False], [False, True, False]])
    b = torch.tensor([[False, False, True], [False, False, True]])
    whole = decoded_loss(vae, z0, targets, a | b)
    assert float(whole) == pytest.approx(float(decoded_loss(vae, z0, targets, a) + decoded_loss(vae, z0, targets, b)))
    changed = targets.clone()
    changed[0, 1] = 0  # a frame outside `a`
    assert float(decoded_loss(vae, z0, changed, a)) == float(decoded_loss(vae, z0, targets, a))
    assert float(decoded_loss(vae, z0, targets, torch.zeros(2, 3, dtype=torch.bool))) == 0.0


def test_the_gradient_reaches_the_prediction_and_not_the_frozen_autoencoder() -> None:
    vae = frozen_vae()
    cfg = TrainConfig(frames=3, p_paired=1.0, p_history=0.0, p_shortcut=0.0)
    plan = make_plan(cfg, 2, 3, torch.Generator().manual_seed(1))
    z_in, z_tgt, eps = (torch.randn(2, 16, 3, 4, 4) for _ in range(3))
    x, _, label = noisy_clip(plan, z_in, z_tgt, z_tgt, eps)
    sigma = per_frame(plan.sigma, x)
    assert torch.allclose(to_x0(x, label, sigma), z_tgt, atol=1e-5)  # the label's one step lands on it
    v = label.clone().requires_grad_(True)
    decoded_loss(vae, to_x0(x, v, sigma), torch.rand(2, 3, 3, 32, 32), plan.paired).backward()
    assert v.grad is not None and float(v.grad.abs().sum()) > 0
    assert all(p.grad is None for p in vae.parameters())


def test_a_temporal_autoencoder_is_refused() -> None:
    with pytest.raises(ValueError, match="per-frame autoencoder"):
        decoded_loss(TAEHV(temporal=True), torch.zeros(1, 16, 1, 2, 2), torch.zeros(1, 1, 3, 16, 16),
                     torch.ones(1, 1, dtype=torch.bool))  # fmt: skip


def test_a_negative_weight_names_the_key() -> None:
    with pytest.raises(Exception, match="pixel_loss"):
        check(TrainConfig(pixel_loss=-1.0), "train.toml")


def test_training_with_the_pixel_loss_adds_its_term(
    tmp_path: Path, pair_dir: Path, micro_init: Path, fast_text: None
) -> None:
    """A few steps on the pair folder with pixel_loss on: the loss it logs includes the decoded term, and
    it runs end to end through the Trainer (checkpointed, logged, the term logged on its own)."""
    common = dict(init=str(micro_init), data=str(pair_dir), width=32, height=32, frames=3, batch=2, steps=2,
                  save_every=2, log_every=1, sample_every=0, warmup=1, p_paired=1.0, p_history=0.0, p_shortcut=0.0)  # fmt: skip
    plain = Trainer(TrainConfig(out_dir=str(tmp_path / "plain"), **common))  # type: ignore[arg-type]
    pixel = Trainer(TrainConfig(out_dir=str(tmp_path / "pixel"), pixel_loss=1.0, **common))  # type: ignore[arg-type]
    assert plain.run() == 2 and pixel.run() == 2
    rows = [(tmp_path / n / "log.jsonl").read_text().splitlines() for n in ("plain", "pixel")]
    first_plain, first_pixel = (json.loads(r[0]) for r in rows)
    assert first_pixel["loss"] > first_plain["loss"]  # same data, noise and weights at step 1: the term is positive
    assert first_plain["pixel_loss"] == 0 and first_pixel["pixel_loss"] > 0
    # the flow part is the same computation in both runs; the pixel term is the difference
    assert first_pixel["flow_loss"] == pytest.approx(first_plain["flow_loss"], rel=1e-5)
    assert first_pixel["loss"] == pytest.approx(first_pixel["flow_loss"] + first_pixel["pixel_loss"], rel=1e-5)


def test_dark_weight_makes_an_error_on_dark_detail_cost_more() -> None:
    """pixel_dark_weight: the same error costs more on a dark outline than on flat ground; nothing changes
    where the target has no dark detail, and the weight is off by default."""
    vae = frozen_vae()
    z0 = torch.randn(1, 16, 1, 4, 4)
    with torch.no_grad():
        decoded = vae.decode_unclamped(z0.permute(0, 2, 1, 3, 4))  # what decoded_loss compares
    rows = torch.ones(1, 1, dtype=torch.bool)
    line = torch.full_like(decoded, 0.8)
    line[..., 16, :] = 0.1  # a dark outline across a flat light target
    flat = torch.full_like(decoded, 0.8)
    assert float(dark_detail(line[0])[..., 16, :].min()) > 0.1 and float(dark_detail(flat[0]).max()) == 0
    for target in (line, flat):
        plain = float(decoded_loss(vae, z0, target, rows))
        assert float(decoded_loss(vae, z0, target, rows, dark_weight=0.0)) == plain
    assert float(decoded_loss(vae, z0, flat, rows, dark_weight=20.0)) == pytest.approx(
        float(decoded_loss(vae, z0, flat, rows)))  # fmt: skip
    # on the outline target the extra cost is exactly the error weighted by the target's dark detail
    extra = float(decoded_loss(vae, z0, line, rows, dark_weight=20.0)) - float(decoded_loss(vae, z0, line, rows))
    expected = 20.0 * float(((decoded[0] - line[0]).abs() * dark_detail(line[0])).mean())
    assert extra == pytest.approx(expected, rel=1e-4) and extra > 0


def test_dark_weight_needs_the_pixel_loss() -> None:
    with pytest.raises(Exception, match="pixel_dark_weight"):
        check(TrainConfig(pixel_dark_weight=5.0), "train.toml")
    with pytest.raises(Exception, match="pixel_dark_weight"):
        check(TrainConfig(pixel_loss=0.2, pixel_dark_weight=-1.0), "train.toml")
    check(TrainConfig(pixel_loss=0.2, pixel_dark_weight=20.0), "train.toml")
