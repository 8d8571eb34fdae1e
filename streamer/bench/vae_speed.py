"""The fast path's autoencoder (static-buffer ChunkCodec) per fusion and layout, one process, one card.

    python -m streamer.bench.vae_speed W1 W2 --json vae_speed.json [--chunk W1]

For each workload's frame size: a random full-width TAEHV in bf16 (speed does not depend on the values; scaled so activations stay O(1))
under every `ChunkCodec` fusion ("none" = the layers as they are, the old code) in NCHW and NHWC. Each is
first checked over three chunks of carried state against the old codec run in fp32 (encode, and decode
of that latent; error scaled by the reference's largest value): it must stay within 1.5x + 0.01 of the
old codec's own bf16 error (which is itself ~0.05 at full width: bf16 through ~30 layers), then
encode+decode is timed
with triton's do_bench (median; it flushes the L2 cache between runs): eagerly, and as one captured
CUDA graph replay (how the fast path runs it). `--chunk W1` also times the whole fast-path chunk
(FastPath.step, graph replay, random DiT) with each fusion in NCHW, the baseline again at the end.
`--device cpu --tiny` runs the same plumbing at a tiny size (CI); timings there mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch

from streamer.bench.model_workloads import WORKLOADS
from streamer.model.fast.vae import FUSIONS, ChunkCodec
from streamer.model.fast.vae_fused import FusedStream
from streamer.model.vae import TAEHV, TINY_DECODER_WIDTHS, TINY_ENCODER_WIDTH

# A fusion rounds in other places than the old codec (bf16 A and B before their sum, composed weights):
# it passes when its error against an fp32 run of the old codec is within this of the old codec's own.
ROUNDING_SLACK = (1.5, 0.01)  # new <= 1.5 x old + 0.01 (scaled max errors)


def _time_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, return_mode="median"))
    fn()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    return 1e3 * (time.perf_counter() - t0) / 3


def _scaled_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-3))


def _graph_of(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    """fn captured as one CUDA graph (warmed on a side stream first, as the fast path does)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def error_against(gold: ChunkCodec, codec: ChunkCodec, chunks: list[torch.Tensor]) -> float:
    """The largest scaled error of `codec` against `gold` (the old codec in fp32) over the chunks with
    their carried state: encode of each chunk, and decode of gold's latent. Both reset before and after."""
    gold.reset()
    codec.reset()
    worst = 0.0
    cudnn = torch.backends.cudnn
    for x in chunks:
        # fp32 means fp32: cuDNN would run the gold's convolutions in TF32 by default
        with cudnn.flags(enabled=True, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False):
            z_gold = gold.encode(x.float())
            out_gold = gold.decode(z_gold)
        worst = max(worst, _scaled_error(codec.encode(x), z_gold))
        worst = max(worst, _scaled_error(codec.decode(z_gold.to(x.dtype)), out_gold))
    gold.reset()
    codec.reset()
    return worst


def within_rounding(new_error: float, old_error: float) -> bool:
    scale, floor = ROUNDING_SLACK
    return new_error <= scale * old_error + floor


# FusedStream's NHWC rewrites, each timed off against on (the fast path's fusion, alternated): a
# rewrite that stops paying on some card shows here, not only in the whole chunk's time
SWITCHES = ("TRANSPOSED_UPSAMPLE", "STACKED_FRAME_CONV", "FUSED_OUTPUT_CONV")


def bench_codecs(vae: TAEHV, height: int, width: int, device: torch.device) -> list[dict[str, Any]]:
    """One row per (layout, fusion): its error against the old codec in fp32 beside the old codec's own
    (same layout), then eager and graph ms; then, in NHWC, each of SWITCHES off and the default again."""
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = next(vae.parameters()).dtype
    fpl = vae.frames_per_latent
    chunks = [torch.rand(fpl, 3, height, width, device=device, dtype=dtype, generator=gen) for _ in range(3)]
    rows: list[dict[str, Any]] = []
    gold = ChunkCodec(copy.deepcopy(vae).float(), fusion="none")
    for channels_last in (False, True):
        model = copy.deepcopy(vae)  # ChunkCodec(channels_last=True) converts the weights in place
        old_error = error_against(gold, ChunkCodec(model, channels_last=channels_last, fusion="none"), chunks)
        layout = "NHWC" if channels_last else "NCHW"
        for fusion in FUSIONS:
            rows.append(_codec_row(model, layout, fusion, gold, chunks, old_error))
        fusion = ChunkCodec.FUSION if device.type == "cuda" else "torch"
        for switch in SWITCHES if channels_last else ():
            setattr(FusedStream, switch, False)
            try:
                rows.append(_codec_row(model, layout, fusion, gold, chunks, old_error, f"{fusion} -{switch}"))
            finally:
                setattr(FusedStream, switch, True)
            rows.append(_codec_row(model, layout, fusion, gold, chunks, old_error, f"{fusion} again"))
    return rows


def _codec_row(
    model: TAEHV, layout: str, fusion: str, gold: ChunkCodec, chunks: list[torch.Tensor], old_error: float,
    label: str = "",
) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {"layout": layout, "fusion": label or fusion}
    device = chunks[0].device
    if fusion == "cudnn" and device.type != "cuda":
        row["skipped"] = "cuDNN's fused convolutions need a CUDA GPU"
        return row
    try:
        codec = ChunkCodec(model, channels_last=layout == "NHWC", fusion=fusion)
        row["max_scaled_error"] = error_against(gold, codec, chunks)
        row["old_max_scaled_error"] = old_error
        row["equal"] = within_rounding(row["max_scaled_error"], old_error)
        x = chunks[0]
        step = lambda c=codec: c.decode(c.encode(x))  # noqa: E731
        row["eager_ms"] = _time_ms(step, device)
        if device.type == "cuda":
            graph = _graph_of(step)
            row["graph_ms"] = _time_ms(graph.replay, device)
            del graph
    except Exception as e:  # one variant failing (e.g. cuDNN refusing a fusion) must not hide the rest
        row["error"] = f"{type(e).__name__}: {e}"[:300]
    return row


def bench_chunk(workload: str, iters: int) -> list[dict[str, Any]]:
    """The whole fast-path chunk (graph replay) per fusion in NCHW, the "none" baseline first and last."""
    from streamer.bench.model import _frames, build_engine
    from streamer.model.fast.path import FastPath

    wl = WORKLOADS[workload]
    engine = build_engine(wl, "cuda", checkpoint="random", vae="random")
    inputs = _frames(engine, wl, 4, seed=1)
    rows = []
    old = ChunkCodec.FUSION
    try:
        for fusion in ("none", *[f for f in FUSIONS if f != "none"], "none"):
            ChunkCodec.FUSION = fusion
            engine.reset()
            try:
                fast = FastPath(engine)
                for i in range(engine.cache.history + 3):
                    fast.step(inputs[i % len(inputs)])
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                times = []
                for i in range(iters):
                    start.record()
                    fast.step(inputs[i % len(inputs)])
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end))
                times.sort()
                rows.append({"fusion": fusion, "graph": fast._graph is not None, "ms_p50": times[len(times) // 2]})
                del fast
            except Exception as e:  # as in bench_codecs: report it, time the others
                rows.append({"fusion": fusion, "error": f"{type(e).__name__}: {e}"[:300]})
            torch.cuda.empty_cache()
    finally:
        ChunkCodec.FUSION = old
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workloads", nargs="*", default=["W1", "W2"], choices=sorted(WORKLOADS))
    p.add_argument("--json", default="", help="write the report here")
    p.add_argument("--chunk", nargs="*", default=[], help="workloads whose whole fast-path chunk is timed too")
    p.add_argument("--chunk-iters", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny widths at 1/16 of each side, fp32 (plumbing)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.tiny:
        vae = TAEHV(True, encoder_width=TINY_ENCODER_WIDTH, decoder_widths=TINY_DECODER_WIDTHS)
    else:
        vae = TAEHV(True)
    for param in vae.parameters():  # O(1) activations through every layer, so the equality check sees real values
        torch.nn.init.normal_(param, std=1 / param[0].numel() ** 0.5)
    dtype = torch.bfloat16 if device.type == "cuda" and not args.tiny else torch.float32
    vae = vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "fast_path_fusion": ChunkCodec.FUSION,
        "codec": {},
        "chunk": {},
    }
    for name in args.workloads:
        wl = WORKLOADS[name]
        h, w = (wl.height // 16 // 8 * 8, wl.width // 16 // 8 * 8) if args.tiny else (wl.height, wl.width)
        report["codec"][name] = {"height": h, "width": w, "rows": bench_codecs(vae, h, w, device)}
        _save(report, args.json)  # what is measured survives a later crash or timeout
    del vae  # the chunk bench builds its own engine
    for name in args.chunk:
        if device.type != "cuda":
            report["chunk"][name] = {"skipped": "the fast path's graph needs a CUDA GPU"}
            continue
        torch.cuda.empty_cache()
        report["chunk"][name] = {"rows": bench_chunk(name, args.chunk_iters)}
    print(format_report(report))
    _save(report, args.json)
    rows = [r for wl in report["codec"].values() for r in wl["rows"]]
    rows += [r for ch in report["chunk"].values() for r in ch.get("rows", [])]
    failed = [r for r in rows if r.get("equal") is False or "error" in r]
    return 1 if failed else 0


def _save(report: dict[str, Any], path: str) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)


def fastest(rows: list[dict[str, Any]]) -> list[str]:
    """Per layout, the passing fusion with the lowest graph-replay time (eager where there is no graph)."""
    out = []
    for layout in ("NCHW", "NHWC"):
        ok = [r for r in rows if r["layout"] == layout and r["fusion"] in FUSIONS and r.get("equal")]
        if ok:
            best = min(ok, key=lambda r: r.get("graph_ms", r["eager_ms"]))
            out.append(f"{layout} {best['fusion']} ({best.get('graph_ms', best['eager_ms']):.2f} ms)")
    return out


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['device']}, {report['dtype']}, torch {report['torch']}, {report['date']}"]
    for name, wl in report["codec"].items():
        lines.append(f"{name} ({wl['height']}x{wl['width']}): encode+decode of one chunk")
        for r in wl["rows"]:
            head = f"  {r['layout']} {r['fusion']:24s}"
            if "skipped" in r or "error" in r:
                lines.append(f"{head} {r.get('skipped') or r.get('error')}")
                continue
            graph = f"  graph {r['graph_ms']:7.2f} ms" if "graph_ms" in r else ""
            ok = "equal" if r["equal"] else "NOT EQUAL"
            err = f"{r['max_scaled_error']:.4f} vs fp32, old {r['old_max_scaled_error']:.4f}"
            lines.append(f"{head} eager {r['eager_ms']:7.2f} ms{graph}  {ok} ({err})")
        lines.append(f"  fastest that passed: {', '.join(fastest(wl['rows']))}")
    for name, ch in report["chunk"].items():
        if "skipped" in ch:
            lines.append(f"{name} whole chunk: {ch['skipped']}")
            continue
        lines += [f"{name} whole fast-path chunk (NCHW):"]
        for r in ch["rows"]:
            what = r["error"] if "error" in r else f"{r['ms_p50']:7.2f} ms p50 (graph {r['graph']})"
            lines.append(f"  {r['fusion']:6s} {what}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
