"""A projection (not a measurement) of W1/W2 on cards we have not run: each part of a chunk (streamer/model/
cost.py) timed on the card's published dense tensor rates and memory bandwidth, at the efficiency the
fast path measured for that part on an H100.

    t_part = max(FLOP_part / (rate x efficiency_part), bytes_part / (bandwidth x BANDWIDTH_EFFICIENCY))

for the linear layers (bf16 or fp8 rate), attention and the autoencoder (bf16 rate), plus the fused
elementwise kernels and, in fp8, the per-token quantization (bandwidth only). The chunk is the sum:
the parts run one after another inside one CUDA graph. Efficiencies come from the W1 fast-path profile
on an H100 (docs/benchmarks.md, 2026-11-25): matmuls ≈ 580 TFLOP/s, cuDNN attention ≈ 351, TAEHV
encode + decode ≈ 11 ms (9-13) for its 0.79 TFLOP, the fused kernels 3.9 ms for their bytes. What this
assumes: the same fraction of peak on every card (cuBLAS and cuDNN on Ada and Ampere, and FP8 GEMMs at
the bf16 GEMMs' share of their rate), and no launch gaps (the fast path's one graph per chunk).

    python -m streamer.bench.projection   # the markdown table in docs/benchmarks.md
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.model.config import preset
from streamer.model.cost import ChunkCost, ChunkShape, chunk_cost

H100_BF16, H100_BW = 989.4e12, 3.35e12
MATMUL_EFFICIENCY = 580e12 / H100_BF16
ATTENTION_EFFICIENCY = 351e12 / H100_BF16
W1 = ChunkShape.at(preset("wan-1.3b"), 832, 480, steps=2, window=6)
# TAEHV took ≈ 11 ms (9-13) of the W1 chunk: convolutions plus layout conversions, concatenations, copies
VAE_EFFICIENCY = chunk_cost(preset("wan-1.3b"), W1).vae_flop / 11e-3 / H100_BF16
# the fused kernels took 3.9 ms of W1's 43.9 ms chunk: their bytes over that, as a share of HBM3's 3.35 TB/s
BANDWIDTH_EFFICIENCY = chunk_cost(preset("wan-1.3b"), W1).elementwise_bytes / 3.9e-3 / H100_BW


@dataclass(frozen=True)
class CardRates:
    """A card's published dense tensor rates (FLOP/s, fp32 accumulation) and memory bandwidth (bytes/s)."""

    name: str
    memory_gib: int
    bf16: float
    fp8: float | None  # None: no FP8 tensor cores
    bandwidth: float
    source: str


# Dense figures (the datasheets' "with sparsity" numbers are twice these). GeForce cards accumulate in fp32
# at half their fp16-accumulate rate; bf16 and cuBLAS's fp8 GEMMs always accumulate in fp32.
CARDS: tuple[CardRates, ...] = (
    CardRates("H100 SXM 80 GB", 80, 989.4e12, 1978.9e12, 3.35e12, "NVIDIA H100 datasheet (SXM5)"),
    CardRates("RTX 4090 24 GB", 24, 165.2e12, 330.3e12, 1008e9, "NVIDIA Ada GPU architecture whitepaper, appendix"),
    CardRates("RTX 4080 16 GB", 16, 97.5e12, 194.9e12, 716.8e9, "NVIDIA Ada GPU architecture whitepaper, appendix"),
    CardRates("RTX 3090 24 GB", 24, 71.0e12, None, 936e9, "NVIDIA Ampere GA102 whitepaper, appendix A"),
)


def part_seconds(cost: ChunkCost, card: CardRates, *, fp8: bool) -> dict[str, float]:
    """Seconds per chunk by part on `card` (module docstring)."""
    if fp8 and card.fp8 is None:
        raise ValueError(f"{card.name} has no FP8 tensor cores")
    bw = card.bandwidth * BANDWIDTH_EFFICIENCY
    mm_rate = (card.fp8 if fp8 and card.fp8 else card.bf16) * MATMUL_EFFICIENCY
    return {
        "linear": max(cost.linear_flop / mm_rate, cost.weight_bytes / bw),
        "attention": max(cost.attention_flop / (card.bf16 * ATTENTION_EFFICIENCY), cost.kv_bytes / bw),
        "autoencoder": cost.vae_flop / (card.bf16 * VAE_EFFICIENCY),
        "elementwise": cost.elementwise_bytes / bw,
        "quantize": cost.quantize_bytes / bw,
    }


def project(width: int, height: int, steps: int, card: CardRates, *, fp8: bool = False) -> float:
    """Projected ms per chunk of wan-1.3b at width x height, `steps` passes, the preset's window (6)."""
    cfg = preset("wan-1.3b")
    cost = chunk_cost(cfg, ChunkShape.at(cfg, width, height, steps, window=6), fp8=fp8)
    return 1e3 * sum(part_seconds(cost, card, fp8=fp8).values())


WORKLOADS = {"W1": (832, 480), "W2": (512, 512)}


def markdown_table(plans: dict[str, str] | None = None) -> str:
    """Rows per card: W1 and W2 at 2 and 1 steps, bf16 and fp8, as ms per chunk and output fps."""
    head = "| card | dtype | W1 2 steps | W1 1 step | W2 2 steps | W2 1 step |"
    rows = [head, "|---|---|---|---|---|---|"]
    for card in CARDS:
        for fp8 in (False, True):
            if fp8 and card.fp8 is None:
                rows.append(f"| {card.name} | fp8 | no FP8 tensor cores | | | |")
                continue
            cells = []
            for wl in ("W1", "W2"):
                for steps in (2, 1):
                    ms = project(*WORKLOADS[wl], steps, card, fp8=fp8)
                    cells.append(f"{ms:.1f} ms, {4e3 / ms:.0f} fps")
            rows.append(f"| {card.name} | {'fp8' if fp8 else 'bf16'} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(f"efficiencies: matmul {MATMUL_EFFICIENCY:.3f}, attention {ATTENTION_EFFICIENCY:.3f}, "
          f"autoencoder {VAE_EFFICIENCY:.3f}, bandwidth {BANDWIDTH_EFFICIENCY:.3f}")  # fmt: skip
    print(markdown_table())
