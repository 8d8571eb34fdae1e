"""How far one model dtype's output is from another's: the same frames through two engines, PSNR per chunk.

Issue 17's quality gate for `model.dtype = "fp8"`: over a 100-chunk stream with the same inputs, the
decoded output stays >= 35 dB PSNR from the bf16 path. Both engines are built like the bench's (the
workload's preset, size and steps; the same weights: --checkpoint / --vae, or the same seeded random
ones) and run their default path (on a GPU the fast path, one CUDA graph per chunk). The input is a
moving, camera-like scene (smooth gradients and a moving disc), not noise: noise frames would measure
the model on inputs it never sees.

    python -m streamer.bench.dtype_quality W1 --chunks 100 [--reference bfloat16] [--candidate fp8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from streamer.bench.model_workloads import WORKLOADS, Workload, percentile

GATE_DB = 35.0  # issue 17: fp8 output within 35 dB PSNR of bf16 over a 100-chunk stream


def scene(chunks: int, frames_per_chunk: int, height: int, width: int, device: torch.device) -> Iterator[Tensor]:
    """`chunks` chunks [frames, H, W, 3] uint8 of a smooth scene with a disc moving across it."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    for c in range(chunks):
        out = []
        for j in range(frames_per_chunk):
            i = c * frames_per_chunk + j
            cx, cy = width * (0.2 + 0.6 * ((i * 0.01) % 1)), height * (0.5 + 0.2 * math.sin(i * 0.05))
            disc = (((xx - cx) ** 2 + (yy - cy) ** 2) < (0.15 * height) ** 2).float()
            rgb = torch.stack([xx / width, yy / height, 0.3 + 0.6 * disc], -1) * 255
            out.append(rgb.round().to(torch.uint8))
        yield torch.stack(out).to(device)


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two uint8 pictures (inf when equal)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def compare_streams(
    reference: Callable[[Tensor], Tensor | None], candidate: Callable[[Tensor], Tensor | None], chunks: Iterator[Tensor]
) -> dict[str, Any]:
    """Each chunk through both steps; PSNR per chunk that both output, and over all of them."""
    per_chunk: list[float] = []
    sq, n = 0.0, 0
    for frames in chunks:
        a, b = reference(frames), candidate(frames)
        if a is None or b is None:  # the autoencoder's first chunks output nothing
            continue
        per_chunk.append(psnr(a, b))
        sq += float(((a.double() - b.double()) ** 2).sum())
        n += a.numel()
    overall = math.inf if sq == 0 else 10 * math.log10(255**2 / (sq / max(n, 1)))
    finite = [p for p in per_chunk if math.isfinite(p)] or [math.inf]
    return {
        "chunks_compared": len(per_chunk),
        "psnr_db": overall,
        "psnr_min_db": min(finite),
        "psnr_p50_db": percentile(finite, 50),
        "per_chunk_db": [round(p, 2) for p in per_chunk],
    }


def _engine_step(wl: Workload, device: str, checkpoint: str, vae: str) -> tuple[Any, Callable[[Tensor], Tensor | None]]:
    from streamer.bench.model import build_engine
    from streamer.model.builder import new_engine

    engine = build_engine(wl, device, checkpoint=checkpoint, vae=vae)
    engine = new_engine(engine.settings, engine.parts, wl.height, wl.width)  # the daemon's path: fast on a GPU
    engine._set_cross(engine.text.encode(["a watercolour painting"]).to(engine.device))
    return engine, engine.fast.step if engine.fast is not None else engine.step_tensor


def compare_dtypes(
    wl: Workload, reference: str, candidate: str, chunks: int, device: str, *, checkpoint: str = "", vae: str = ""
) -> dict[str, Any]:
    """The gate's measurement: `chunks` chunks through a `reference`-dtype and a `candidate`-dtype engine."""
    ref_engine, ref_step = _engine_step(dataclasses.replace(wl, dtype=reference), device, checkpoint, vae)  # type: ignore[arg-type]
    cand_engine, cand_step = _engine_step(dataclasses.replace(wl, dtype=candidate), device, checkpoint, vae)  # type: ignore[arg-type]
    frames = scene(chunks, ref_engine.frames_per_latent, wl.height, wl.width, ref_engine.device)
    report = compare_streams(ref_step, cand_step, frames)
    dev = ref_engine.device
    return {
        "workload": wl.name, "reference": reference, "candidate": candidate, "chunks": chunks,
        "paths": [e.status() for e in (ref_engine, cand_engine)],
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
        "gate_db": GATE_DB, "passed": report["psnr_db"] >= GATE_DB and report["psnr_min_db"] >= GATE_DB,
    } | report  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workload", choices=sorted(WORKLOADS))
    p.add_argument("--chunks", type=int, default=100)
    p.add_argument("--reference", default="bfloat16")
    p.add_argument("--candidate", default="fp8")
    p.add_argument("--device", default="cuda")
    p.add_argument("--checkpoint", default="")
    p.add_argument("--vae", default="")
    args = p.parse_args(argv)
    report = compare_dtypes(
        WORKLOADS[args.workload], args.reference, args.candidate, args.chunks, args.device,
        checkpoint=args.checkpoint, vae=args.vae,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if k != "per_chunk_db"}, indent=1))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
