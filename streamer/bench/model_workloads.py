"""The reference model workloads (W1-W4 of the performance notes) and the card's measured ceilings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from streamer.metrics import percentile

__all__ = ["WORKLOADS", "Workload", "matmul_peak_tflops", "percentile"]


@dataclass(frozen=True)
class Workload:
    """One named benchmark setting; `streamer bench model` can override preset/size/steps."""

    name: str
    preset: Literal["tiny", "wan-1.3b", "wan-14b"]
    width: int
    height: int
    steps: int = 2
    window: int = 0  # latent frames attended per query, sinks and chunk included; 0 = the preset's (tiny 3, wan 6)
    sinks: int = -1  # -1 = the preset's (tiny 1, wan 3); see streamer.config.effective_window
    dtype: Literal["auto", "float32", "bfloat16", "float16", "fp8"] = "bfloat16"  # or "auto": what the daemon picks on the device (model.dtype)
    device: str = "cuda"


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "wan-1.3b", 832, 480),
    "W2": Workload("W2", "wan-1.3b", 512, 512),
    "W3": Workload("W3", "tiny", 512, 512),
    "W4": Workload("W4", "tiny", 256, 256, dtype="auto", device="cpu"),
}


def matmul_peak_tflops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """bf16 dense matmul rate measured on this card (random operands: zeros run faster)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12
