"""The DiT's projections at W1 and W2 sizes: bf16 against FP8 (issue 17 item 3), one shape at a time.

    python -m streamer_kernels.bench matmul [--json PATH]   # a CUDA GPU (FP8 rows need compute 8.9+)

Why: the FP8 path measured slower than bf16 for the whole W1 chunk (42.24 vs 39.47 ms, 2026-12-06),
and a chunk profile cannot say whether the e4m3 matmuls or their per-token quantization lose the time.
Per shape (M tokens of one chunk, the Linear's N x K) this times, median of triton.testing.do_bench:
- `bf16`: F.linear, what the fast path runs;
- `fp8_mm`: torch._scaled_mm on already-quantized inputs with row-wise scales, fast accumulation on
  (the path's `FAST_ACCUM`) and off;
- `quant`: the fused per-token quantizer (streamer_kernels.fp8_quant) alone;
- `fp8`: both, as the path runs them (streamer.model.fp8.FP8Linear).
Each FP8 product is first compared with the bf16 one (relative error of the whole output), so a wrong
kernel cannot post a fast time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from streamer.model.fp8 import FP8Linear, quantize_weight
from streamer_kernels.fp8_quant import quantize_rows

# wan-1.3b's Linear layers per block (N, K) and how often each runs per block and pass: q/k/v fused,
# self-attention out, cross-attention q and out, the FFN's two (cross k/v run once per prompt)
LAYERS = {"qkv": (4608, 1536, 1), "attn out / cross q / cross out": (1536, 1536, 3), "ffn up": (8960, 1536, 1),
          "ffn down": (1536, 8960, 1)}  # fmt: skip
TOKENS = {"W1": 1560, "W2": 1024}  # one chunk's tokens (batch 1)
MAX_REL_ERR = 0.06  # e4m3 inputs: ~2^-4 per element, averaging down over K


def _time(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench  # needs CUDA events

    return float(do_bench(fn, return_mode="median"))


@torch.no_grad()
def shape_row(m: int, n: int, k: int, fp8: bool) -> dict[str, float | str]:
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    lin = torch.nn.Linear(k, n, device="cuda", dtype=torch.bfloat16)
    flops = 2 * m * n * k
    row: dict[str, float | str] = {"M": m, "N": n, "K": k}
    row["bf16_ms"] = ms = _time(lambda: F.linear(x, lin.weight, lin.bias))
    row["bf16_TFLOPs"] = flops / ms / 1e9
    if not fp8:
        return row
    ref = F.linear(x, lin.weight, lin.bias).float()
    layer = FP8Linear.from_linear(lin)
    xq, xs = quantize_rows(x)
    wq, ws = quantize_weight(lin.weight)
    wt, ws_row = wq.t(), ws.view(1, -1)
    bias = lin.bias.detach()
    for label, fast in (("fp8_mm", True), ("fp8_mm_exact_accum", False)):
        try:
            out = torch._scaled_mm(xq, wt, scale_a=xs, scale_b=ws_row, bias=bias, out_dtype=torch.bfloat16,
                                   use_fast_accum=fast)  # fmt: skip
        except RuntimeError as e:  # cuBLASLt refuses some problems (streamer.model.fp8 falls back)
            row[label + "_error"] = str(e)[:200]
            continue
        rel = float((out.float() - ref).norm() / ref.norm())
        row[label + "_rel_err"] = rel
        if rel < MAX_REL_ERR:
            row[label + "_ms"] = ms = _time(
                lambda fast=fast: torch._scaled_mm(  # type: ignore[misc]
                    xq, wt, scale_a=xs, scale_b=ws_row, bias=bias, out_dtype=torch.bfloat16, use_fast_accum=fast
                )
            )
            row[label + "_TFLOPs"] = flops / ms / 1e9
    row["quant_ms"] = ms = _time(lambda: quantize_rows(x))
    row["quant_GBps"] = m * k * 3 / ms / 1e6  # read bf16, write e4m3
    row["fp8_ms"] = _time(lambda: layer(x))
    return row


def run(log: Callable[[str], None] = print) -> dict[str, object]:
    cap = torch.cuda.get_device_capability()
    fp8 = cap >= (8, 9)
    out: dict[str, object] = {"card": torch.cuda.get_device_name(), "fp8": fp8}
    for wl, m in TOKENS.items():
        rows = []
        per_block = {"bf16": 0.0, "fp8": 0.0, "fp8_mm": 0.0, "quant": 0.0}
        for name, (n, k, count) in LAYERS.items():
            row = shape_row(m, n, k, fp8)
            row["layer"] = name
            rows.append(row)
            for key in per_block:
                per_block[key] += count * float(row.get(key + "_ms", float("nan")))
            log(f"{wl} {name:32s} " + "  ".join(f"{key} {val:.4g}" if isinstance(val, float) else f"{key} {val}"
                                                 for key, val in row.items() if key != "layer"))  # fmt: skip
        # a chunk: 30 blocks x 2 passes (2 steps)
        chunk = {key: 60 * ms for key, ms in per_block.items()}
        log(f"{wl} per chunk (30 blocks x 2 passes), ms: " + ", ".join(f"{k} {v:.2f}" for k, v in chunk.items()))
        out[wl] = {"rows": rows, "per_chunk_ms": chunk}
    return out
