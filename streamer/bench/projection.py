"""A projection (not a measurement) of W1/W2 on cards we have not run: each part of a chunk (streamer/model/
cost.py) timed on the card's published dense tensor rates and memory bandwidth, at the efficiency the
fast path measured for that part on an H100.

    t_part = max(FLOP_part / (rate x efficiency_part), bytes_part / (bandwidth x STREAM_EFFICIENCY))

for the linear layers (bf16 or fp8 rate), attention and the autoencoder (bf16 rate), plus the
memory-bound rest (the fused elementwise kernels, and the copies, cache writes and small ops the
profile lists beside them) and, in fp8, the cost of quantizing the matmul inputs (bandwidth only). The
chunk is the sum: the parts run one after another inside one CUDA graph. The efficiencies are fitted
to `H100_W1_MS`, the W1 fast-path profile on an H100 (docs/benchmarks.md: bf16 2026-12-07, fourteenth
session; fp8's matmuls and quantization from the twelfth session's profile), so the projection gives
back that profile's kernel time on the H100; W2 was not used to fit anything. What this assumes: the same fraction of
peak on every card (cuBLAS and cuDNN on Ada and Ampere), and no launch gaps (the fast path's one graph
per chunk).

    python -m streamer.bench.projection   # the markdown table in docs/benchmarks.md
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.model.config import preset
from streamer.model.cost import ChunkCost, ChunkShape, chunk_cost

H100_BF16, H100_FP8, H100_BW = 989.4e12, 1978.9e12, 3.35e12
# ms per W1 chunk by part, from the H100 profiles (`python -m streamer.bench.model_profile W1 [--dtype fp8]`)
H100_W1_MS = {
    # bf16: the fourteenth session's profile of W1 (32.61 ms of kernels, H100, 2026-12-07)
    "linear": 11.59,  # the DiT's 360 projections (nvjet kernels: 5.66 + 3.99 + 1.94)
    "attention": 13.06,  # the stream-K self-attention 11.55 + its merge 0.45 + cuDNN cross-attention 1.07
    "autoencoder": 3.44,  # TAEHV encode + decode, NHWC, cuDNN's fusions (vae_speed's graph replay)
    "memory_bound": 2.77 + 1.75,  # the fused Triton kernels + the rest outside the codec
    # fp8 (twelfth session, 2026-12-07, call 3): not profiled again since
    "linear_fp8": 8.66,  # the projections in e4m3 (`_scaled_mm`)
    "quantize": 0.62 + 0.91 + 0.33,  # fp8's extra: norms 2.65 vs 2.03, GELU 1.98 vs 1.07, quantizer 0.33
}
W1 = ChunkShape.at(preset("wan-1.3b"), 832, 480, steps=2, window=6)
_W1_COST = chunk_cost(preset("wan-1.3b"), W1, fp8=True)  # the FLOP and byte counts are those of bf16 and fp8 alike
MATMUL_EFFICIENCY = _W1_COST.linear_flop / (H100_W1_MS["linear"] * 1e-3) / H100_BF16
FP8_MATMUL_EFFICIENCY = _W1_COST.linear_flop / (H100_W1_MS["linear_fp8"] * 1e-3) / H100_FP8
ATTENTION_EFFICIENCY = _W1_COST.attention_flop / (H100_W1_MS["attention"] * 1e-3) / H100_BF16
VAE_EFFICIENCY = _W1_COST.vae_flop / (H100_W1_MS["autoencoder"] * 1e-3) / H100_BF16
# the memory-bound rest as a share of HBM3's 3.35 TB/s: the fused kernels' bytes over the whole rest's time
BANDWIDTH_EFFICIENCY = _W1_COST.elementwise_bytes / (H100_W1_MS["memory_bound"] * 1e-3) / H100_BW
QUANTIZE_EFFICIENCY = _W1_COST.quantize_bytes / (H100_W1_MS["quantize"] * 1e-3) / H100_BW
STREAM_EFFICIENCY = 0.83  # reading weights and K/V once: a plain copy's share of the bandwidth


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
    stream = card.bandwidth * STREAM_EFFICIENCY
    if fp8 and card.fp8:
        mm_rate = card.fp8 * FP8_MATMUL_EFFICIENCY
    else:
        mm_rate = card.bf16 * MATMUL_EFFICIENCY
    return {
        "linear": max(cost.linear_flop / mm_rate, cost.weight_bytes / stream),
        "attention": max(cost.attention_flop / (card.bf16 * ATTENTION_EFFICIENCY), cost.kv_bytes / stream),
        "autoencoder": cost.vae_flop / (card.bf16 * VAE_EFFICIENCY),
        "memory_bound": cost.elementwise_bytes / (card.bandwidth * BANDWIDTH_EFFICIENCY),
        "quantize": cost.quantize_bytes / (card.bandwidth * QUANTIZE_EFFICIENCY),
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
    print(f"efficiencies: matmul {MATMUL_EFFICIENCY:.3f} (fp8 {FP8_MATMUL_EFFICIENCY:.3f}), attention "
          f"{ATTENTION_EFFICIENCY:.3f}, autoencoder {VAE_EFFICIENCY:.3f}, memory-bound rest {BANDWIDTH_EFFICIENCY:.3f}, "
          f"fp8 quantization {QUANTIZE_EFFICIENCY:.3f}")  # fmt: skip
    print(markdown_table())
