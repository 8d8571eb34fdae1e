"""Diffusion forcing: per-frame noise levels, frame kinds, labels, and the block-causal training forward."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from streamer.model.config import preset
from streamer.model.sampling import to_x0
from streamer.train.config import TrainConfig
from streamer.train.forcing import PAIRED_MIN_SIGMA, frame_loss, frame_sigmas, make_plan, noisy_clip
from streamer.train.objective import DiTForward
from streamer.train.shortcut import ShortcutDiT


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_frame_gets_its_own_noise_level() -> None:
    s = frame_sigmas(64, 8, 5.0, gen())
    assert s.shape == (64, 8) and s.min() > 0 and s.max() <= 1
    spread = s.std(dim=1)  # within a clip, levels differ frame to frame
    assert (spread > 0.05).float().mean() > 0.9
    # shift 5 pushes levels towards noise, as the sampler's schedule does
    assert s.median() > 0.6
    assert not torch.equal(s, frame_sigmas(64, 8, 5.0, gen(1)))
    assert torch.equal(s, frame_sigmas(64, 8, 5.0, gen()))


def test_plan_kinds() -> None:
    cfg = TrainConfig(frames=8, chunk_frames=2, p_history=0.5, p_paired=0.5, p_shortcut=0.5, history_max_sigma=0.3)
    p = make_plan(cfg, 256, 8, gen())
    # history: a prefix of whole chunks, never the last chunk, low noise, no loss, never paired
    for row in p.history:
        n = int(row.sum())
        assert torch.equal(row, torch.arange(8) < n) and n % 2 == 0 and n <= 6
    assert 0.3 < p.history.any(1).float().mean() < 0.7
    assert p.sigma[p.history].max() <= 0.3
    assert torch.equal(p.weight, (~p.history).float())
    assert not (p.paired & p.history).any()
    # paired frames: told sigma, noised to sigma + 0.1 (StreamDiffusionV2's 1000 s - 100), sigma >= 0.2
    assert p.paired.any()
    assert torch.allclose(p.level[p.paired], (p.sigma[p.paired] + 0.1).clamp(max=1))
    assert p.sigma[p.paired].min() >= PAIRED_MIN_SIGMA
    assert torch.equal(p.level[~p.paired], p.sigma[~p.paired])
    # shortcut: power-of-two step, the last frame's sigma leaves room for both half steps
    assert p.shortcut.any() and (~p.shortcut).any()
    d = p.d_full[p.shortcut]
    assert torch.equal(d, 2.0 ** torch.round(torch.log2(d)))
    assert (p.sigma[p.shortcut, -1] >= d - 1e-12).all()
    assert (p.d_full[~p.shortcut] == 0).all() and not p.paired[p.shortcut, -1].any()
    assert p.rollout[~p.history.any(1)].sum() == 0


def test_labels_land_on_the_target() -> None:
    cfg = TrainConfig(frames=6, p_history=0.5, p_paired=0.5)
    b, c, f, h, w = 8, 16, 6, 4, 4
    z_in, z_tgt, z_hist, eps = (torch.randn(b, c, f, h, w, dtype=torch.float64) for _ in range(4))
    p = make_plan(cfg, b, f, gen(3))
    x, t, label = noisy_clip(p, z_in, z_tgt, z_hist, eps)
    sigma = p.sigma[:, None, :, None, None]
    x0 = to_x0(x, label, sigma)  # the engine's x0 = x_t - sigma v
    learn = (~p.history)[:, None, :, None, None].expand_as(x)
    assert torch.allclose(x0[learn], z_tgt[learn], atol=1e-9)
    # inputs: paired frames from the input clip, history from z_hist, the rest from the target
    lv = p.level[:, None, :, None, None]
    src = torch.where(
        p.paired[:, None, :, None, None], z_in, torch.where(p.history[:, None, :, None, None], z_hist, z_tgt)
    )
    assert torch.allclose(x, (1 - lv) * src + lv * eps)
    assert torch.allclose(t.double(), 1000 * p.sigma.float().double())
    # plain flow frames: label = eps - z_target exactly
    plain = (~p.paired & ~p.history)[:, None, :, None, None].expand_as(x)
    assert torch.allclose(label[plain], (eps - z_tgt)[plain])


def test_frame_loss_ignores_weighted_out_frames_and_is_linear() -> None:
    pred, label = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    w = torch.tensor([[0.0, 1, 1], [1, 1, 1]])
    changed = pred.clone()
    changed[0, :, 0] += 100  # a history frame: no effect
    assert frame_loss(changed, label, w) == frame_loss(pred, label, w)
    halves = (frame_loss(pred[:1], label[:1], w[:1]) + frame_loss(pred[1:], label[1:], w[1:])) / 2
    assert torch.allclose(halves, frame_loss(pred, label, w))


@pytest.mark.parametrize(("chunk", "window", "sinks"), [(1, 0, 0), (2, 0, 0), (1, 3, 1)])
def test_training_forward_is_block_causal_like_inference(chunk: int, window: int, sinks: int) -> None:
    torch.manual_seed(0)
    # One layer for the window case: through depth a frame reaches further back than the mask (as it
    # does through the cache at inference), so the mask itself is only visible layer by layer.
    cfg = dataclasses.replace(preset("tiny"), num_layers=1 if window else 2)
    model = ShortcutDiT(cfg).double().eval()
    fwd = DiTForward(model, TrainConfig(frames=6, chunk_frames=chunk, window=window, sinks=sinks))
    f = 6
    x = torch.randn(1, 16, f, 4, 4, dtype=torch.float64)
    t = torch.rand(1, f, dtype=torch.float64) * 1000
    text = torch.randn(1, 8, cfg.text_dim, dtype=torch.float64)
    d = torch.zeros(1, f, dtype=torch.float64)
    with torch.no_grad():
        base = fwd(x, t, text, d)
        for j in range(f):
            x2 = x.clone()
            x2[:, :, j] += 1.0
            out = fwd(x2, t, text, d)
            changed = [(out[:, :, i] - base[:, :, i]).abs().max() > 1e-9 for i in range(f)]
            for i in range(f):
                chunk_i, chunk_j = i // chunk, j // chunk
                visible = chunk_j <= chunk_i
                if window:  # the rolling window: sinks + the last (window - sinks - chunk) frames before the chunk
                    history = window - sinks - chunk
                    visible = visible and (j < sinks or j >= chunk_i * chunk - history)
                assert bool(changed[i]) == visible, (i, j)
    # and the per-frame timesteps matter frame by frame
    t2 = t.clone()
    t2[:, -1] = 10.0
    with torch.no_grad():
        out = fwd(x, t2, text, d)
    assert torch.allclose(out[:, :, : f - chunk], base[:, :, : f - chunk])
    assert not torch.allclose(out[:, :, -1], base[:, :, -1])


def test_paired_max_sigma_keeps_paired_frames_in_the_streamed_band() -> None:
    """paired_max_sigma < 1 draws paired levels uniformly in [0.2, max]; the other choices of the plan
    (which frames are paired, history, shortcut) are the same as with the default schedule."""
    base = TrainConfig(p_paired=0.75, p_shortcut=0.0, p_history=0.0)
    band = dataclasses.replace(base, paired_max_sigma=0.6)
    a = make_plan(base, 64, 4, torch.Generator().manual_seed(3))
    b = make_plan(band, 64, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a.paired, b.paired) and a.paired.any()
    s = b.sigma[b.paired]
    assert s.min() >= PAIRED_MIN_SIGMA and s.max() <= 0.6
    assert (a.sigma[a.paired] > 0.6).float().mean() > 0.5  # the shifted schedule lives mostly above the band
    assert torch.equal(a.sigma[~a.paired], b.sigma[~b.paired])
