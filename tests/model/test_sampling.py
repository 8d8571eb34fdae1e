"""Sampler arithmetic against hand-computed values, the motion controller, seeds, stream batch."""

from __future__ import annotations

import pytest
import torch

from streamer.model.sampling import (
    StreamBatchState,
    flow_sigma,
    inverse_flow_sigma,
    motion_level,
    motion_strength,
    prime_stream_batch,
    renoise,
    sample_sequential,
    sdedit_noise,
    seeded_generator,
    stream_batch_step,
    strength_timesteps,
    to_x0,
    warp_timesteps,
)


def test_schedule_and_warp_by_hand() -> None:
    # shift 5: sigma(0.75) = 3.75 / 4 = 0.9375; sigma(0.5) = 2.5 / 3; sigma(0.25) = 1.25 / 2
    warped = warp_timesteps(torch.tensor([1000.0, 750.0, 500.0, 250.0]), 5.0)
    torch.testing.assert_close(warped, torch.tensor([1000.0, 937.5, 2500 / 3, 625.0]))
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(inverse_flow_sigma(flow_sigma(u, 8.0), 8.0), u)
    assert flow_sigma(torch.tensor(0.5), 1.0) == 0.5  # shift 1 is the plain schedule


def test_strength_timesteps_by_hand() -> None:
    # s = 0.8 -> t0 = 700 (1000·s - 100); u0 = 0.7 / (5 - 4·0.7) = 0.7 / 2.2; u1 = u0 / 2
    # sigma(u1) = 5·u1 / (1 + 4·u1) = (1.75 / 2.2) / (1 + 1.4 / 2.2) = 1.75 / 3.6
    t = strength_timesteps(torch.tensor(0.8, dtype=torch.float64), 2, 5.0)
    torch.testing.assert_close(t, torch.tensor([700.0, 1000 * 1.75 / 3.6], dtype=torch.float64))
    assert strength_timesteps(torch.tensor(0.5), 1, 8.0).tolist() == pytest.approx([400.0])
    many = strength_timesteps(torch.tensor(0.9), 4, 5.0)
    assert many[0] == pytest.approx(800.0) and bool((many[1:] < many[:-1]).all()) and many[-1] > 0


def test_noising_and_x0_arithmetic() -> None:
    z, eps = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.25])
    noisy = sdedit_noise(z, eps, torch.tensor(0.8))
    torch.testing.assert_close(noisy, torch.tensor([0.8 * 0.5 + 0.2 * 2.0, 0.8 * 0.25 - 0.2]))
    # x_t = (1-σ)x0 + σ·eps and v = eps - x0  =>  x_t - σ·v == x0 exactly
    x0, sigma = torch.tensor([1.5, -0.5]), torch.tensor(0.7)
    x_t = renoise(x0, eps, sigma)
    torch.testing.assert_close(x_t, torch.tensor([0.3 * 1.5 + 0.7 * 0.5, 0.3 * -0.5 + 0.7 * 0.25]))
    torch.testing.assert_close(to_x0(x_t, eps - x0, sigma), x0)


def test_sequential_with_an_oracle_model_recovers_the_target() -> None:
    """A model that knows x0 returns v = (x_t - x0)/sigma; the sampler must then give x0 back."""
    target = torch.randn(1, 16, 1, 4, 4)
    calls: list[torch.Tensor] = []

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t.clone())
        return (x - target) / (t[:, :1, None, None, None] / 1000)

    ts = torch.tensor([700.0, 500.0])
    out = sample_sequential(oracle, torch.zeros_like(target), torch.randn(2, *target.shape), torch.tensor(0.8), ts)
    torch.testing.assert_close(out, target)
    assert [c.shape for c in calls] == [(1, 1), (1, 1)] and [c.item() for c in calls] == [700.0, 500.0]


def test_motion_controller_values() -> None:
    still = torch.full((2, 3, 8, 8), 0.5)
    assert motion_level(still, still[0]) == 0
    assert motion_level(still[:1], None) == 0
    step = still.clone()
    step[1] += 0.05  # [-1,1] scale: diff 0.1 -> RMS 0.1 -> d = 0.1 / 0.2 = 0.5
    assert motion_level(step, None).item() == pytest.approx(0.5)
    flash = torch.zeros(1, 3, 8, 8)
    assert motion_level(flash, torch.ones(3, 8, 8)).item() == 1.0  # clamped
    # s = 0.9·(0.8 - 0.1·0.5) + 0.1·0.7 = 0.675 + 0.07
    s = motion_strength(torch.tensor(0.8), torch.tensor(0.7), torch.tensor(0.5))
    assert s.item() == pytest.approx(0.745)
    assert motion_strength(torch.tensor(0.8), torch.tensor(0.8), torch.tensor(0.0)).item() == pytest.approx(0.8)


def _toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Stateless, nonlinear, depends on t and on each row separately (like a DiT without a cache)."""
    return torch.tanh(x * 0.7 + t[:, :1, None, None, None] / 500) - 0.1 * x.roll(1, dims=-1)


def test_seeded_noise_is_reproducible() -> None:
    def run(seed: int) -> torch.Tensor:
        gen = seeded_generator(seed, torch.device("cpu"))
        z = torch.ones(1, 16, 1, 4, 4)
        noises = torch.randn(2, *z.shape, generator=gen)
        return sample_sequential(_toy_model, z, noises, torch.tensor(0.8), torch.tensor([700.0, 500.0]))

    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.allclose(run(3), run(4))


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_stream_batch_matches_sequential_delayed(steps: int) -> None:
    gen = seeded_generator(0, torch.device("cpu"))
    chunks = [torch.randn(1, 16, 1, 4, 4, generator=gen) for _ in range(6)]
    noises = [torch.randn(steps, 1, 16, 1, 4, 4, generator=gen) for _ in chunks]
    strengths = [torch.tensor(s) for s in (0.8, 0.75, 0.7, 0.8, 0.6, 0.9)]  # per-chunk (motion-aware)
    schedules = [strength_timesteps(s, steps, 5.0) for s in strengths]
    expected = [
        sample_sequential(_toy_model, z, n, s, t)
        for z, n, s, t in zip(chunks, noises, strengths, schedules, strict=True)
    ]

    state = StreamBatchState.allocate(steps, (16, 1, 4, 4), torch.device("cpu"), torch.float32)
    batches: list[int] = []

    def counting(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batches.append(x.shape[0])
        return _toy_model(x, t)

    prime_stream_batch(state, chunks[0], noises[0], schedules[0])  # must not change any real output
    outs = [
        stream_batch_step(counting, state, *args) for args in zip(chunks, noises, strengths, schedules, strict=True)
    ]
    assert outs[: steps - 1] == [None] * (steps - 1)  # output lags by steps-1 chunks
    assert batches == [steps] * len(chunks)  # one forward per chunk, all slots at once
    for got, want in zip(outs[steps - 1 :], expected, strict=False):
        assert got is not None
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    state.reset()  # a new stream: the pipeline refills and the first finished chunk is chunk 0 again
    assert state.filled == 0
    again = [
        stream_batch_step(_toy_model, state, *args) for args in zip(chunks, noises, strengths, schedules, strict=True)
    ]
    assert again[steps - 1] is not None
    torch.testing.assert_close(again[steps - 1], expected[0], rtol=1e-5, atol=1e-6)
