"""Where the stage boundaries go: contiguous layer ranges that minimise the slowest stage.

A pipeline runs as fast as its slowest stage, so the layers are split to minimise the largest stage
time, the autoencoder's encode counted in the first stage and its decode in the last. The times are
measured at start (`measure_costs`, on the first stage's device) and placed by `place_stages`, a pure
function (exact: dynamic programming over the split points, fine for the 30-40 layers of a Wan DiT).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from streamer.config import ModelSettings
from streamer.model.cache import KVCache
from streamer.model.dit import DiT


def place_stages(layer_times: Sequence[float], first_extra: float, last_extra: float, n: int) -> list[range]:
    """Split layers 0..L-1 into n consecutive non-empty ranges minimising the largest stage time, where a
    stage's time is the sum of its layers' plus `first_extra` for the first and `last_extra` for the last.
    Ties go to the split that puts layers as early as possible (deterministic)."""
    count = len(layer_times)
    if n < 1:
        raise ValueError(f"a pipeline needs at least one stage, got {n}")
    if n > count:
        raise ValueError(f"{n} stages need at least {n} layers; the model has {count}")
    if any(t < 0 for t in (*layer_times, first_extra, last_extra)):
        raise ValueError("stage times must not be negative")
    prefix = [0.0]
    for t in layer_times:
        prefix.append(prefix[-1] + t)

    def cost(stage: int, a: int, b: int) -> float:
        extra = (first_extra if stage == 0 else 0.0) + (last_extra if stage == n - 1 else 0.0)
        return prefix[b] - prefix[a] + extra

    # best[k][j]: the smallest bottleneck placing layers 0..j-1 on stages 0..k-1; cut[k][j]: its last split
    inf = float("inf")
    best = [[inf] * (count + 1) for _ in range(n + 1)]
    cut = [[0] * (count + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for k in range(1, n + 1):
        for j in range(k, count - (n - k) + 1):
            for i in range(k - 1, j):
                b = max(best[k - 1][i], cost(k - 1, i, j))
                if b < best[k][j]:  # strict: the earliest split wins a tie
                    best[k][j], cut[k][j] = b, i
    bounds = [count]
    for k in range(n, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    bounds.reverse()
    return [range(bounds[k], bounds[k + 1]) for k in range(n)]


@dataclasses.dataclass(frozen=True)
class StageCosts:
    """Measured seconds: each layer's pass, the encode side (first stage), the decode side (last stage)."""

    layers: tuple[float, ...]
    encode: float
    decode: float

    def place(self, n: int) -> list[range]:
        return place_stages(self.layers, self.encode, self.decode, n)


def _median_time(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up (lazy init, autotuning)
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def measure_costs(
    dit: DiT,
    encode: Callable[[], object],
    decode: Callable[[], object],
    m: ModelSettings,
    batch: int,
    reps: int = 3,
) -> StageCosts:
    """Time each block's pass at the stream's shape (batch rows, one latent frame, an empty one-layer
    cache), and the encode / decode calls given, on the DiT's device."""
    cfg, device = dit.cfg, dit.patch_embedding.weight.device
    lh, lw = m.height // 8, m.width // 8
    grid = (1, lh // cfg.patch_size[1], lw // cfg.patch_size[2])
    one = dataclasses.replace(cfg, num_layers=1)
    cache = KVCache(one, batch=batch, tokens_per_frame=grid[1] * grid[2], window=3, sinks=0, refresh_after=0,
                    dtype=dit.dtype, device=device)  # fmt: skip
    tokens = torch.randn(batch, grid[1] * grid[2], cfg.dim, device=device, dtype=dit.acc_dtype)
    e, e0 = dit.time_embed(torch.full((batch, 1), 500.0, device=device))
    h = dit.block_input(tokens, e, e0)
    rope, mask = dit.attention_layout(grid, cache, device=device)
    text = torch.zeros(batch, 1, cfg.text_dim, device=device)
    layer_times = []
    for i in range(cfg.num_layers):
        context = dit.cross_kv(text, layers=range(i, i + 1))
        run = range(i, i + 1)
        layer_times.append(_median_time(
            lambda: dit.run_blocks(run, tokens, h, e, e0, rope, context, mask=mask, cache=cache, offset=i),  # noqa: B023
            device, reps,
        ))  # fmt: skip
    return StageCosts(tuple(layer_times), _median_time(encode, device, reps), _median_time(decode, device, reps))
