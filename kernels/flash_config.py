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
    overlap: bool = False  # each block's P @ V runs under the next block's softmax (_full_blocks_overlapped)
    inline_merge: bool = False  # a shared tile's last program merges it (counted arrivals), no merge kernel

    @property
    def name(self) -> str:
        sched = "tiles" if self.per_sm == 0 else f"sk{self.per_sm}"
        tma = "-tma" if self.tma else ""
        ov = "-ov" if self.overlap else ""
        im = "-im" if self.inline_merge else ""
        return f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}-{sched}{tma}{ov}{im}"


# What the GPU bench sweeps. DEFAULT is the candidate the AttentionPicker times against cuDNN: one
# config only, since every config costs a JIT compile per shape during warm-up. It is the fastest at W1 on
# an H100 (2026-12-06: m128n128w8s3-sk1-tma 0.2018 ms = 445 TFLOP/s, m128n64w8s3-sk1 0.2137, cuDNN 0.2596;
# at W2 cuDNN wins, 0.0815 vs 0.0944 ms, and the picker keeps it there; docs/benchmarks.md).
CONFIGS: tuple[FlashConfig, ...] = (
    FlashConfig(128, 64, 8, 3),
    FlashConfig(128, 128, 8, 2),
    FlashConfig(64, 64, 4, 2, per_sm=2),  # 2 x 80 KB of shared memory: two programs fit an SM
    FlashConfig(128, 64, 8, 3, tma=True),
    FlashConfig(128, 64, 8, 4, tma=True),
    FlashConfig(128, 128, 8, 2, tma=True),
    FlashConfig(128, 128, 8, 3, tma=True),
    FlashConfig(128, 64, 8, 3, per_sm=0),  # the plain one-tile-per-program grid, for comparison
    # The overlapped loop keeps a second block's P live beside the scores. ptxas (sm_90a, Triton 3.6):
    # m128n64 with 4 stages fits 255 registers, with 3 it spills 4 bytes; m128n128 (2 stages: its
    # separate K and V loads double-buffer each) spills 308 bytes and is left out. m64 with 4 warps and
    # 2 programs per SM lets one program's softmax run beside the other's products (98 KB of shared
    # memory each).
    FlashConfig(128, 64, 8, 4, tma=True, overlap=True),
    FlashConfig(128, 64, 8, 3, tma=True, overlap=True),
    FlashConfig(128, 64, 8, 3, overlap=True),  # cp.async loads (20 bytes spilled): TMA's barriers or not
    FlashConfig(64, 64, 4, 2, per_sm=2, tma=True),
    FlashConfig(64, 64, 4, 2, per_sm=2, tma=True, overlap=True),
    # The merge kernel took 0.45 ms of W1's 32.6 (60 launches, H100 profile, 2026-12-07): done by the
    # tile's last program instead, on a per-call zeroed arrival count per tile (the merge's registers
    # cost spills: 36 and 20 bytes below).
    FlashConfig(128, 128, 8, 3, tma=True, inline_merge=True),
    FlashConfig(128, 64, 8, 4, tma=True, overlap=True, inline_merge=True),
)
DEFAULT_CONFIG = CONFIGS[6]
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
