"""Stage placement (place_stages) and the stage count `model.gpus` asks for (stage_devices, config)."""

from __future__ import annotations

import itertools
import random

import pytest

from streamer.config import ConfigError, from_dict
from streamer.model.loading import ModelLoadError
from streamer.model.pipeline.balance import place_stages
from streamer.model.pipeline.group import stage_devices


def _bottleneck(ranges: list[range], times: list[float], first: float, last: float) -> float:
    costs = [sum(times[i] for i in r) for r in ranges]
    costs[0] += first
    costs[-1] += last
    return max(costs)


def test_equal_layers_split_evenly() -> None:
    assert place_stages([1.0] * 4, 0, 0, 2) == [range(0, 2), range(2, 4)]
    assert [len(r) for r in place_stages([1.0] * 30, 0, 0, 4)] == [7, 7, 8, 8]  # wan-1.3b on 4 GPUs


def test_encoder_and_decoder_time_move_layers_off_the_first_and_last_stage() -> None:
    # encode costs two layers: the first stage takes fewer layers; the decoder one layer: the last too
    assert place_stages([1.0] * 10, 2.0, 1.0, 3) == [range(0, 2), range(2, 6), range(6, 10)]
    assert _bottleneck(place_stages([1.0] * 10, 2.0, 1.0, 3), [1.0] * 10, 2.0, 1.0) == 5.0


def test_every_stage_gets_a_layer_even_when_one_layer_dominates() -> None:
    ranges = place_stages([100.0, 1.0, 1.0, 1.0], 0, 0, 4)
    assert ranges == [range(0, 1), range(1, 2), range(2, 3), range(3, 4)]
    assert place_stages([5.0], 1.0, 1.0, 1) == [range(0, 1)]


def test_placement_is_optimal_against_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(60):
        count, n = rng.randint(1, 9), 0
        n = rng.randint(1, count)
        times = [rng.uniform(0.1, 3.0) for _ in range(count)]
        first, last = rng.uniform(0, 4), rng.uniform(0, 4)
        got = place_stages(times, first, last, n)
        assert [r.start for r in got] == [0, *[r.stop for r in got[:-1]]] and got[-1].stop == count
        assert all(len(r) >= 1 for r in got)
        best = min(
            _bottleneck([range(a, b) for a, b in itertools.pairwise((0, *cuts, count))], times, first, last)
            for cuts in itertools.combinations(range(1, count), n - 1)
        )
        assert _bottleneck(got, times, first, last) == pytest.approx(best)


@pytest.mark.parametrize(
    ("args", "message"),
    [(([1.0] * 3, 0, 0, 4), "4 stages need at least 4 layers"), (([1.0], 0, 0, 0), "at least one stage"),
     (([1.0, -1.0], 0, 0, 1), "negative")],
)  # fmt: skip
def test_impossible_placements_say_why(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        place_stages(*args)


def test_model_gpus_accepts_a_count_or_all_and_names_the_key_otherwise() -> None:
    assert from_dict({}).model.gpus == 1
    assert from_dict({"model": {"gpus": 4}}).model.gpus == 4
    assert from_dict({"model": {"gpus": "all"}}).model.gpus == "all"
    for bad, words in [(0, "must be a number of GPUs >= 1"), (-2, ">= 1"), ("ALL", "must be an integer or 'all'"),
                       (1.5, "must be an integer or 'all'"), (True, "must be an integer or 'all'"), (65, "at most 64")]:  # fmt: skip
        with pytest.raises(ConfigError, match=words) as e:
            from_dict({"model": {"gpus": bad}})
        assert "'model.gpus'" in str(e.value)


def test_stage_devices_on_the_cpu_and_their_limits() -> None:
    model = lambda **kw: from_dict({"model": {"device": "cpu", **kw}}).model  # noqa: E731
    assert stage_devices(model()) == ["cpu"]
    assert stage_devices(model(gpus=3)) == ["cpu"] * 3  # gloo processes: tests and development
    with pytest.raises(ModelLoadError, match=r"model.gpus = 5: tiny has 4 layers"):
        stage_devices(model(gpus=5))
    with pytest.raises(ModelLoadError, match=r"model.gpus = 'all' counts CUDA GPUs"):
        stage_devices(model(gpus="all"))


def test_stage_devices_refuses_more_gpus_than_are_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    model = lambda **kw: from_dict({"model": {"device": "cuda", "preset": "wan-1.3b", **kw}}).model  # noqa: E731
    assert stage_devices(model(gpus=2)) == ["cuda:0", "cuda:1"]
    assert stage_devices(model(gpus="all")) == ["cuda:0", "cuda:1"]
    with pytest.raises(ModelLoadError, match=r"model.gpus = 4 but only 2 CUDA GPU\(s\) are visible"):
        stage_devices(model(gpus=4))
