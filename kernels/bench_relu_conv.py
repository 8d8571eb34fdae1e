"""The decoder's end at W1 size: kernels/relu_conv_out.py per (rows, stages) against cuDNN's pair.

    python -m streamer_kernels.bench relu_conv [--json PATH]   # a CUDA GPU; seconds

[4, 64, 480, 832] bf16 channels_last -> 3 channels. Each variant is first checked against the fp32
reference (the bf16 rule of tests/kernels), then timed (median of triton.testing.do_bench, which flushes
L2 between runs). cuDNN's pair is the ReLU pass then `F.conv2d`, what the codec ran before the kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from streamer_kernels.relu_conv_out import pack_weight, relu_conv3x3, relu_conv3x3_ref

VARIANTS = ((1, 1), (1, 2), (4, 2), (8, 1), (8, 2), (8, 3), (16, 2))  # (rows per program, stages)
SHAPE = (4, 64, 480, 832)


def run(log: Callable[[str], None] = print) -> dict[str, object]:
    from triton.testing import do_bench

    g = torch.Generator(device="cuda").manual_seed(0)
    t, c, h, w = SHAPE
    x = torch.randn(SHAPE, device="cuda", generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(3, c, 3, 3, device="cuda", generator=g) / (9 * c) ** 0.5).to(torch.bfloat16)
    b = torch.randn(3, device="cuda", generator=g).to(torch.bfloat16)
    want = relu_conv3x3_ref(x, wt, b)
    taps, bias = pack_weight(wt, b, torch.bfloat16)
    candidates: dict[str, Callable[[], torch.Tensor]] = {
        "cuDNN: relu then conv": lambda: F.conv2d(x.relu(), wt, b, padding=1),
    }
    for rows, stages in VARIANTS:
        candidates[f"kernel rows={rows} stages={stages}"] = functools.partial(
            relu_conv3x3, x, taps, bias, 3, rows=rows, stages=stages
        )
    results: dict[str, object] = {"shape": list(SHAPE), "candidates": {}}
    for name, fn in candidates.items():
        err = float((fn().float() - want).abs().max())
        ok = err <= 1e-2 + 1e-2 * float(want.abs().max())
        row: dict[str, object] = {"max_abs_err": err, "correct": ok}
        if ok:
            row["ms"] = float(do_bench(fn, return_mode="median"))
        results["candidates"][name] = row  # type: ignore[index]
        log(f"{name:28s} " + (f"{row['ms']:.4f} ms" if "ms" in row else "WRONG") + f"  err {err:.2e}")
    return results
