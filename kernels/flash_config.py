"""The tunables of the stream-K attention kernel (kernels/flash_attention.py): `FlashConfig`, the
configs the GPU bench sweeps (CONFIGS), and the one the fast path uses (`default_config()`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class FlashConfig:
    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3
    per_sm: int = 1  # persistent programs per SM; 0 = one program per q-tile (the plain schedule)
    tma: bool = False  # K/V through device TMA descriptors (Hopper+; the interpreter emulates them)
    inline_merge: bool = False  # a shared tile's last program merges it (counted arrivals), no merge kernel

    @property
    def name(self) -> str:
        sched = "tiles" if self.per_sm == 0 else f"sk{self.per_sm}"
        tma = "-tma" if self.tma else ""
        im = "-im" if self.inline_merge else ""
        return f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}-{sched}{tma}{im}"


# What the GPU bench sweeps. DEFAULT is the candidate the AttentionPicker times against cuDNN: one
# config only, since every config costs a JIT compile per shape during warm-up. It is the fastest at W1 on
# an H100 (2026-12-07: m128n128w8s3-sk1-tma-im 0.1941 ms = 462 TFLOP/s, without the inline merge 0.2023,
# m128n64w8s3-sk1-tma 0.2112, cuDNN 0.2588; the whole W1 chunk 32.72 / 32.86 ms against 32.90 / 33.19).
# At W2 cuDNN wins (0.0812 vs 0.0947 ms) and the picker keeps it there (docs/benchmarks.md).
CONFIGS: tuple[FlashConfig, ...] = (
    FlashConfig(128, 64, 8, 3),
    FlashConfig(128, 128, 8, 2),
    FlashConfig(64, 64, 4, 2, per_sm=2),  # 2 x 80 KB of shared memory: two programs fit an SM
    FlashConfig(128, 64, 8, 3, tma=True),
    FlashConfig(128, 64, 8, 4, tma=True),
    FlashConfig(128, 128, 8, 2, tma=True),
    FlashConfig(128, 128, 8, 3, tma=True),
    FlashConfig(128, 64, 8, 3, per_sm=0),  # the plain one-tile-per-program grid, for comparison
    FlashConfig(64, 64, 4, 2, per_sm=2, tma=True),
    # The merge kernel took 0.45 ms of W1's 32.6 (60 launches, H100 profile, 2026-12-07): done by the
    # tile's last program instead, on a per-call zeroed arrival count per tile (ptxas: 36 bytes spilled).
    FlashConfig(128, 128, 8, 3, tma=True, inline_merge=True),
)
DEFAULT_CONFIG = CONFIGS[-1]
# Names a config of CONFIGS to use instead of DEFAULT_CONFIG: for timing them inside the whole chunk
# (tools/device/ab.py's env: variants) and for tuning on other cards.
CONFIG_ENV = "STREAMER_FLASH_CONFIG"


def default_config() -> FlashConfig:
    """DEFAULT_CONFIG, or the config of CONFIGS that $STREAMER_FLASH_CONFIG names."""
    return _named_config(os.environ.get(CONFIG_ENV, ""))


@cache
def _named_config(name: str) -> FlashConfig:
    if not name:
        return DEFAULT_CONFIG
    for c in CONFIGS:
        if c.name == name:
            return c
    raise ValueError(f"${CONFIG_ENV}={name!r} names no config; known: {', '.join(c.name for c in CONFIGS)}")
