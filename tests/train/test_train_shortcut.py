"""Shortcut distillation: the optional step-size embedding and the self-consistency target."""

from __future__ import annotations

import dataclasses

import torch

from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.train.shortcut import ShortcutDiT, StepSizeEmbedding, shortcut_target, step_sizes


def small_cfg():  # noqa: ANN201
    return dataclasses.replace(preset("tiny"), num_layers=1)


def inputs(f: int = 3):  # noqa: ANN201
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, f, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(2, f, generator=g, dtype=torch.float64) * 1000
    text = torch.randn(2, 5, 384, generator=g, dtype=torch.float64)
    return x, t, text


def test_step_embedding_is_exactly_zero_at_d_zero() -> None:
    emb = StepSizeEmbedding(256, 64).double()
    torch.nn.init.normal_(emb.mlp[2].weight)
    out = emb(torch.tensor([0.0, 0.0, 0.25], dtype=torch.float64))
    assert torch.equal(out[:2], torch.zeros_like(out[:2])) and out[2].abs().max() > 0


def test_wan_weights_load_and_absent_or_zero_step_means_the_plain_model() -> None:
    torch.manual_seed(0)
    plain = DiT(small_cfg()).double().eval()
    model = ShortcutDiT(small_cfg()).double().eval()
    model.load_weights(plain.state_dict())  # original Wan names, no step_embedding: loads, d ignored
    x, t, text = inputs()
    with torch.no_grad():
        ref = plain(x, t, text, chunk_frames=1)
        assert torch.allclose(model(x, t, text, chunk_frames=1), ref)
        assert torch.allclose(model(x, t, text, chunk_frames=1, step_size=torch.full((2, 3), 0.5)), ref)  # fresh: zero
        torch.nn.init.normal_(model.step_embedding.mlp[2].weight, std=0.1)
        assert torch.allclose(model(x, t, text, chunk_frames=1, step_size=torch.zeros(2, 3)), ref)
        moved = model(x, t, text, chunk_frames=1, step_size=torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]))
    assert not torch.allclose(moved[0, :, 2], ref[0, :, 2])  # d reaches the frame it is given to
    assert torch.allclose(moved[0, :, :2], ref[0, :, :2]) and torch.allclose(moved[1], ref[1])
    assert set(model.wan_state_dict()) == set(plain.state_dict())
    assert all(k.startswith("step_embedding.") for k in model.shortcut_state_dict())


def test_self_consistency_target_is_the_mean_of_two_half_steps() -> None:
    calls = []
    a = torch.tensor(0.3, dtype=torch.float64)

    def model(x: torch.Tensor, t: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """An analytic 'model': v = a x + t/1000 + d, so two half steps can be done by hand."""
        calls.append((x.clone(), t.clone(), d.clone()))
        return a * x + (t / 1000)[:, None, :, None, None] + d[:, None, :, None, None]

    x = torch.randn(2, 1, 3, 1, 1, dtype=torch.float64)
    t = torch.tensor([[500.0, 700.0, 800.0], [100.0, 200.0, 900.0]], dtype=torch.float64)
    d_full = torch.tensor([0.5, 2.0**-7], dtype=torch.float64)
    base = torch.zeros(2, 3, dtype=torch.float64)
    target = shortcut_target(model, x, t, base, 2, d_full, min_half=2.0**-7)
    half = d_full / 2
    q = torch.tensor([0.25, 0.0], dtype=torch.float64)  # the smallest half step is queried as d = 0
    s = t[:, 2] / 1000
    x_last = x[:, 0, 2, 0, 0]
    v1 = a * x_last + s + q
    x2 = x_last - half * v1
    v2 = a * x2 + (s - half) + q
    assert torch.allclose(target[:, 0, 0, 0], (v1 + v2) / 2)
    # only the shortcut frame moved between the two calls; its timestep went down by half a step
    (x_a, t_a, _), (x_b, t_b, _) = calls
    assert torch.equal(x_a[:, :, :2], x_b[:, :, :2]) and torch.equal(t_a[:, :2], t_b[:, :2])
    assert torch.allclose(t_b[:, 2], t[:, 2] - 1000 * half)


def test_step_sizes_are_powers_of_two() -> None:
    assert step_sizes(4).tolist() == [1.0, 0.5, 0.25, 0.125]
