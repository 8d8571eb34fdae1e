"""Where a fast-path chunk spends its GPU time: kernel totals by name and by kind (CUDA only).

    python -m streamer.bench.model_profile W1 [--chunks 4] [--dtype fp8] [--ops]

Runs the fused step eagerly at steady state (the same kernels the captured graph replays) under
torch.profiler and sums device time per kernel over `chunks` chunks. `--ops` also lists the PyTorch ops
that launched the time, with their input shapes: the kernel names of copies, index writes and
concatenations ("other": 5.6 ms of W1's chunk on 2026-12-07) do not say which line of ours made them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import defaultdict

import torch

from streamer.bench.model import build_engine
from streamer.bench.model_workloads import WORKLOADS

KINDS = (
    ("attention", ("fmha", "flash", "attn", "cudnn_generated_fort_native_sdpa", "sdpa")),
    ("matmul", ("gemm", "nvjet", "sm90_xmma", "cutlass", "cublas", "f8f8bf16", "rowwise")),
    ("conv", ("conv", "implicit_convolve", "winograd", "nchw", "nhwc")),
    (
        "fused triton",
        (
            "_gated_mod_ln",
            "_qk_norm_rope",
            "_bias_gelu",
            "_to_model",
            "_to_rgb",
            "_to_yuv",
            "_shift_add_relu",
            "_add_relu",
            "_quantize_rows",
        ),
    ),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k.lower() in low for k in keys):
            return kind
    return "other"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workload", default="W1", nargs="?")
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--dtype", choices=["bfloat16", "fp8"], default=None, help="the workload's own (bf16) if left out")
    p.add_argument("--ops", action="store_true", help="also the top ops by device time, with input shapes")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from streamer.model.fast.path import FastPath

    wl = WORKLOADS[args.workload]
    if args.dtype:
        wl = dataclasses.replace(wl, dtype=args.dtype)
    engine = build_engine(wl, "cuda")
    fast = FastPath(engine, use_graph=False)
    frames = torch.randint(0, 256, (engine.frames_per_latent, wl.height, wl.width, 3), dtype=torch.uint8).cuda()
    for _ in range(engine.cache.history + 2):
        fast.step(frames)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if args.ops else [])
    with torch.profiler.profile(activities=activities, record_shapes=args.ops) as prof:
        for _ in range(args.chunks):
            fast.step(frames)
        torch.cuda.synchronize()
    per_kernel: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[ev.name] += ev.device_time_total / 1e3 / args.chunks  # ms per chunk
            counts[ev.name] += 1
    by_kind: dict[str, float] = defaultdict(float)
    for name, ms in per_kernel.items():
        by_kind[kind_of(name)] += ms
    total = sum(per_kernel.values())
    print(f"{args.workload} {wl.dtype}: {total:.2f} ms of kernels per chunk on {torch.cuda.get_device_name()}")
    for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:14s} {ms:8.2f} ms  {100 * ms / total:5.1f} %")
    for name, ms in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:30]:
        print(f"  {ms:8.3f} ms  x{counts[name] // args.chunks:<4d} {kind_of(name):12s} {name[:110]}")
    if args.ops:
        print("ops by device time (ms per chunk, calls per chunk, input shapes):")
        for name, shapes, ms, calls in op_rows(prof, args.chunks):
            print(f"  {ms:8.3f} ms  x{calls:<4d} {name:32s} {shapes[:120]}")
    x = torch.rand(engine.frames_per_latent, 3, wl.height, wl.width, device="cuda", dtype=engine.dtype)
    for channels_last in (False, True):
        print(
            f"autoencoder encode+decode, channels_last={channels_last}: {time_codec(engine, x, channels_last):.2f} ms"
        )
    return 0


def op_rows(prof: torch.profiler.profile, chunks: int, top: int = 30) -> list[tuple[str, str, float, int]]:
    """(op, input shapes, ms per chunk, calls per chunk) of the aten ops with the most device time of their
    own (their kernels, not their children's), from a profile taken with record_shapes; on a profile of
    CPU activity only (tests) the CPU time stands in."""
    rows = []
    for ev in prof.key_averages(group_by_input_shape=True):
        if not ev.key.startswith("aten::"):
            continue
        us = ev.self_device_time_total or (0 if torch.cuda.is_available() else ev.self_cpu_time_total)
        if us > 0:
            rows.append((ev.key, str(ev.input_shapes), us / 1e3 / chunks, ev.count // chunks))
    return sorted(rows, key=lambda r: -r[2])[:top]


def time_codec(engine: object, x: torch.Tensor, channels_last: bool) -> float:
    from triton.testing import do_bench

    from streamer.model.fast.vae import ChunkCodec

    vae = engine.vae  # type: ignore[attr-defined]
    vae.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    codec = ChunkCodec(vae, channels_last=channels_last)
    return float(do_bench(lambda: codec.decode(codec.encode(x)), return_mode="median"))


if __name__ == "__main__":
    sys.exit(main())
