"""`streamer bench model`: one workload (W1-W4, performance notes) in three variants, one process, one card.

Variants: `eager` (the engine's own step), `compile` (the DiT wrapped in torch.compile, mode
"max-autotune"; autoencoder eager), `fast` (fused kernels + the whole step as one CUDA graph,
streamer/model/fast/path.py). Each runs the same engine state machine from a reset: warm-up until the KV
cache is full (compilation / capture time reported separately), then `iters` back-to-back chunks
timed with a device sync each (ms per chunk p50/p99, sustained output fps), then a real-time run at
30 fps input measuring glass-to-glass latency (input frame capture -> its output frame ready;
newest-chunk-wins when the engine falls behind, as the pipeline's one-slot mailbox does).
`--mode stream-batch` runs every variant in sequential mode and then in stream-batch mode (one DiT
forward of batch `steps` per chunk; the fast path captures it too), side by side in one report: a
stream-batch chunk comes out steps - 1 chunks after it went in, and its latency counts from its own
input frames.
FLOPs per chunk are counted once with torch's FlopCounterMode on an eager steady-state chunk, and
achieved TFLOP/s is reported against the card's measured bf16 matmul rate. Weights are whatever the
loader picks for the preset (the shipped tiny weights for W3/W4 when present, else seeded random),
or --checkpoint / --vae (a path, or "random"); speed does not depend on their values, but a pruned
shipped model is narrower than the preset, so the report names the weights ("weights").
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from streamer.bench.model_workloads import WORKLOADS, Workload, matmul_peak_tflops, percentile
from streamer.config import ModelSettings, effective_window
from streamer.config.settings import PromptSettings
from streamer.model.loading import dtype_name
from streamer.prompts import PromptState

log = logging.getLogger(__name__)
BENCH_PROMPT = PromptSettings().initial  # the daemon's default first prompt, "a watercolour painting"
VARIANTS = ("eager", "compile", "fast")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frames(engine: Any, wl: Workload, n: int, seed: int) -> list[torch.Tensor]:
    """n chunks of random (non-constant) camera frames on the device, rotated through during timing."""
    g = torch.Generator().manual_seed(seed)
    shape = (engine.frames_per_latent, wl.height, wl.width, 3)
    return [torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(engine.device) for _ in range(n)]


def _count_flops(step: Callable[[torch.Tensor], Any], frames: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(frames)
    return float(counter.get_total_flops())


def _latency_run(
    step: Callable[[torch.Tensor], Any],
    inputs: list[torch.Tensor],
    device: torch.device,
    chunks: int,
    fps: float,
    frames_per_chunk: int,
    in_flight: int = 0,
) -> dict[str, float]:
    """Real-time paced run: a chunk starts once its last frame has 'arrived' and the engine is free.
    `step` returns the frames of the oldest chunk still inside (the newest of them, when trimmed), or
    None; `in_flight`: chunks pushed before this run and not out yet (a full stream batch: steps - 1),
    whose outputs are not timed."""
    period = 1.0 / fps
    lat: list[float] = []
    dropped = 0
    start = time.perf_counter() + 0.05
    k = 0
    inside: collections.deque[int | None] = collections.deque([None] * in_flight)
    for i in range(chunks):
        ready = start + (k * frames_per_chunk + frames_per_chunk - 1) * period
        now = time.perf_counter()
        if now < ready:
            time.sleep(ready - now)
        else:  # late: jump to the newest complete chunk, dropping the ones in between
            arrived = int((now - start) / period)  # index of the newest frame already captured
            newest = (arrived + 1) // frames_per_chunk - 1
            if newest > k:
                dropped += newest - k
                k = newest
        out = step(inputs[i % len(inputs)])
        _sync(device)
        done = time.perf_counter()
        inside.append(k)
        k += 1
        if out is None:  # a stream batch filling its slots
            continue
        c = inside.popleft()
        if c is not None:
            first = frames_per_chunk - out.shape[0]
            lat += [done - (start + (c * frames_per_chunk + j) * period) for j in range(first, frames_per_chunk)]
    return {
        "latency_p50_ms": 1e3 * percentile(lat, 50),
        "latency_p99_ms": 1e3 * percentile(lat, 99),
        "latency_input_fps": fps,
        "latency_chunks_dropped": dropped,
    }


def run_variant(engine: Any, wl: Workload, variant: str, iters: int, flops: float | None) -> dict[str, Any]:
    """Warm up, time and latency-test one variant on a fresh stream of the engine (in its mode)."""
    from streamer.model.fast.path import FastPath

    dev = engine.device
    result: dict[str, Any] = {"variant": variant, "mode": engine.settings.mode}
    engine.reset()
    fast: FastPath | None = None
    uncompile: Callable[[], None] | None = None
    step: Callable[[torch.Tensor], Any] = engine.step_tensor
    if variant == "fast":
        fast = FastPath(engine, use_graph=dev.type == "cuda")
        step = fast.step
    inputs = _frames(engine, wl, 8, seed=1)
    try:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        # until the KV history is full and the stream batch's slots too (engine.batch: 1, or steps)
        warm = engine.cache.history + engine.batch - 1 + (3 if variant != "eager" else 1)
        for i in range(warm):
            if variant == "compile" and engine.cache.history_full and uncompile is None:
                uncompile = compile_steady_dit(engine, mode="max-autotune")
            step(inputs[i % len(inputs)])
        _sync(dev)
        result["warmup_s"] = time.perf_counter() - t0
        if fast is not None:
            result["capture_s"] = fast.capture_s
            result["graph_captured"] = fast._graph is not None
        times = []
        t_all = time.perf_counter()
        for i in range(iters):
            t1 = time.perf_counter()
            step(inputs[i % len(inputs)])
            _sync(dev)
            times.append(time.perf_counter() - t1)
        total = time.perf_counter() - t_all
        fpc = engine.frames_per_latent
        result |= {
            "ms_p50": 1e3 * percentile(times, 50),
            "ms_p99": 1e3 * percentile(times, 99),
            "fps": fpc * iters / total,
            "ms_per_frame_p99": 1e3 * percentile(times, 99) / fpc,
        }
        if flops:
            result["tflops"] = flops / percentile(times, 50) / 1e12
        result |= _latency_run(step, inputs, dev, max(8, min(iters, 40)), 30.0, fpc, in_flight=engine.batch - 1)
        if dev.type == "cuda":
            result["peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    finally:
        if uncompile is not None:
            uncompile()
        engine.reset()
    return result


def compile_steady_dit(engine: Any, **compile_kwargs: Any) -> Callable[[], None]:
    """Wrap the engine's DiT in `torch.compile(**compile_kwargs)` at steady state; returns the undo.

    Compiled once, never again while the stream runs (tests/bench/test_bench_model_compile.py): the
    forward's only host-side branch is the cache's `history_full`, constant once the cache is full (so
    compiling earlier would add a graph for the filling cache, minutes at max-autotune); every other
    per-chunk value it reads (RoPE positions, ring pointer, slot positions and validity, timesteps, step
    size) is a device tensor updated in place, the positions rewind after `model.rope_refresh_after`
    frames included. The engine calls the wrapper exactly as the module, step size too (`takes_step_size`).
    """
    cache, dit = engine.cache, engine.dit
    if not cache.history_full:
        raise RuntimeError("compile the steady state only: the KV cache is still filling")
    # The forward writes each pass's K/V into the cache in place. Inductor's CUDA graph trees skip a graph
    # that mutates a non-static input ("skipping cudagraphs due to mutated inputs"); the cache storage is
    # allocated once per engine, so its address is static. The cross-attention K/V are too (rewritten in
    # place on a prompt change), which spares a per-call copy into the graph's own input buffers. Unguarded
    # marks: hints for cudagraphs only (a moved tensor re-records); no effect on the CPU or in eager.
    for t in (cache.k, cache.v, engine._cross.k, engine._cross.v):
        torch._dynamo.mark_static_address(t)
    engine.dit = torch.compile(dit, **compile_kwargs)

    def uncompile() -> None:
        engine.dit = dit

    return uncompile


def workload_settings(wl: Workload, device: str, checkpoint: str = "", vae: str = "") -> ModelSettings:
    """The [model] settings of a workload; window/sinks 0/-1 stay 'the preset's default' (effective_window)."""
    return dataclasses.replace(
        ModelSettings(), preset=wl.preset, width=wl.width, height=wl.height, steps=wl.steps,
        window=wl.window, sinks=wl.sinks, dtype=wl.dtype, device=device, mode="sequential",
        checkpoint=checkpoint, vae=vae,
    )  # fmt: skip


def build_engine(wl: Workload, device: str, *, checkpoint: str = "", vae: str = "") -> Any:
    """The engine with the DiT and autoencoder the loader picks (checkpoint / vae as model.checkpoint /
    model.vae: "" = shipped tiny weights when present else seeded random, "random", or a path) and a
    random text encoder: the text encoder runs only on prompt changes, never in the measured step. The
    engine starts on BENCH_PROMPT."""
    from streamer.model.engine import ModelTransform
    from streamer.model.loading import (
        LoadedParts,
        dit_weights,
        load_configured_vae,
        load_dit_for,
        resolve_device,
        resolve_dtype,
        vae_weights,
    )
    from streamer.model.text import RandomTextEncoder

    m = workload_settings(wl, device, checkpoint, vae)
    dev = resolve_device(device)
    dtype = resolve_dtype(wl.dtype, dev)
    dit, dit_src = load_dit_for(m, dev, dtype)
    vae_model, vae_src = load_configured_vae(m, dev, dtype)
    text = RandomTextEncoder(dit.cfg.text_len, dit.cfg.text_dim)
    sources = {"DiT": dit_src, "autoencoder": vae_src, "text": text.encoder_id}
    random_parts = [
        name for name, w in (("DiT", dit_weights(m)), ("autoencoder", vae_weights(m))) if w.kind == "random"
    ]
    parts = LoadedParts(dev, dtype, dit, vae_model, text, sources, [*random_parts, "text encoder"])
    return _prompted(ModelTransform(m, parts))


def in_mode(engine: Any, mode: str) -> Any:
    """A fresh engine on the same loaded parts in another [model] mode ("sequential", "stream-batch")."""
    from streamer.model.engine import ModelTransform

    return _prompted(ModelTransform(dataclasses.replace(engine.settings, mode=mode), engine.parts))


def _prompted(engine: Any) -> Any:
    """The engine with BENCH_PROMPT applied, as the daemon applies its first prompt. `step_tensor` reads
    no prompt, so without this every chunk would attend to the zero conditioning of a new engine: 1
    distinct text position, where a real prompt has its tokens plus the padding's."""
    engine.prompts.sync(PromptState(text=BENCH_PROMPT))
    return engine


def bench_model(
    wl: Workload,
    variants: list[str],
    iters: int,
    device: str,
    *,
    checkpoint: str = "",
    vae: str = "",
    mode: str = "sequential",
) -> dict[str, Any]:
    """The variants in sequential mode; with mode "stream-batch", in stream-batch mode after them."""
    engine = build_engine(wl, device, checkpoint=checkpoint, vae=vae)
    dev = engine.device
    window, sinks = effective_window(engine.settings)
    cfg = engine.dit.cfg
    weights = {
        "DiT": engine.parts.sources["DiT"], "autoencoder": engine.parts.sources["autoencoder"],
        "dit_shape": f"dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads x {cfg.head_dim}, ffn {cfg.ffn_dim}",
    }  # fmt: skip
    report: dict[str, Any] = {
        "workload": wl.name, "preset": wl.preset, "resolution": f"{wl.width}x{wl.height}", "steps": wl.steps,
        "dtype": dtype_name(engine.dtype), "window": window, "sinks": sinks, "frames_per_chunk": engine.frames_per_latent,
        "weights": weights,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "variants": [],
        "modes": ["sequential"] if mode == "sequential" else ["sequential", mode],
    }  # fmt: skip
    if dev.type == "cuda":
        report["matmul_peak_tflops"] = matmul_peak_tflops(dev)
    # FLOPs of one steady-state chunk (eager, cache full), counted before any variant runs
    inputs = _frames(engine, wl, engine.cache.history + 2, seed=2)
    for f in inputs[:-1]:
        engine.step_tensor(f)
    report["tflop_per_chunk"] = _count_flops(engine.step_tensor, inputs[-1]) / 1e12
    report["prompt_keys"] = _prompt_keys(engine)
    flops = report["tflop_per_chunk"] * 1e12  # a stream-batch chunk costs the same: its passes run batched
    for mode in report["modes"]:
        if mode != engine.settings.mode:
            engine.close()  # its KV cache; the parts (weights) stay for the next engine
            engine = in_mode(engine, mode)
        for v in variants:
            report["variants"].append(_variant_row(engine, wl, v, iters, flops, report))
    return report


def _prompt_keys(engine: Any) -> dict[str, int] | None:
    """How many of the prompt's text_len cross-attention positions are distinct (the rest repeat the
    padding's one K/V): the fast path's cross-attention reads only these, so its speed depends on it."""
    starts = engine.state.cross.starts
    if starts is None:
        return None
    return {"distinct": int(starts.max()) + 1, "of": int(engine.state.cross.k.shape[-2])}


def _variant_row(engine: Any, wl: Workload, v: str, iters: int, flops: float, report: dict[str, Any]) -> dict[str, Any]:
    mode = engine.settings.mode
    if v == "fast" and engine.device.type != "cuda":
        return {"variant": v, "mode": mode, "skipped": "the fast path needs a CUDA GPU (graph capture)"}
    if mode == "stream-batch" and engine.batch == 1:
        return {"variant": v, "mode": mode, "skipped": "stream-batch needs steps >= 2 (at 1 step it is sequential)"}
    log.info("bench %s: %s (%s) ...", wl.name, v, mode)
    try:
        res = run_variant(engine, wl, v, iters, flops)
    except Exception as e:  # report and go on: one failing variant must not hide the others
        log.exception("variant %s (%s) failed", v, mode)
        res = {"variant": v, "mode": mode, "error": f"{type(e).__name__}: {e}"}
    if "tflops" in res and "matmul_peak_tflops" in report:
        res["pct_matmul_peak"] = 100 * res["tflops"] / report["matmul_peak_tflops"]
    log.info("bench %s %s: %s", wl.name, v, json.dumps(res))  # survives a run cut short later
    return res


def _prompt_note(keys: dict[str, int] | None) -> str:
    return "" if keys is None else f"; prompt: {keys['distinct']} of {keys['of']} text positions distinct"


def format_table(report: dict[str, Any]) -> str:
    head = (
        f"{report['workload']}: {report['preset']} {report['resolution']} {report['steps']} steps {report['dtype']} "
        f"on {report['device']} (torch {report['torch']}), {report['tflop_per_chunk']:.2f} TFLOP/chunk"
    )
    w = report["weights"]
    rows = [
        head,
        f"window {report['window']} ({report['sinks']} sinks); DiT: {w['DiT']} [{w['dit_shape']}]; "
        f"autoencoder: {w['autoencoder']}" + _prompt_note(report.get("prompt_keys")),
        "variant  | mode         | ms/chunk p50 | p99    | fps    | g2g p50 ms | p99 ms | TFLOP/s | %peak | peak GB "
        "| warm-up s",
    ]
    for r in report["variants"]:
        name = f"{r['variant']:8s} | {r.get('mode', 'sequential'):12s}"
        if "ms_p50" not in r:
            rows.append(f"{name} | {r.get('skipped') or r.get('error')}")
            continue
        rows.append(
            f"{name} | {r['ms_p50']:12.2f} | {r['ms_p99']:6.2f} | {r['fps']:6.1f} | "
            f"{r['latency_p50_ms']:10.1f} | {r['latency_p99_ms']:6.1f} | {r.get('tflops', 0):7.1f} | "
            f"{r.get('pct_matmul_peak', 0):5.1f} | {r.get('peak_mem_gb', 0):7.2f} | {r['warmup_s']:.1f}"
            + (f" (capture {r['capture_s']:.2f})" if "capture_s" in r else "")
        )
    return "\n".join(rows)


def bench_model_command(args: argparse.Namespace) -> int:
    """Entry point of `streamer bench model` (arguments declared in streamer/cli.py)."""
    name = str(args.workload).upper() if str(args.workload).upper() in WORKLOADS else str(args.workload)
    if name not in WORKLOADS and name != "custom":
        print(f"unknown workload {args.workload!r}; choose one of {', '.join(WORKLOADS)} or custom")
        return 2
    wl = WORKLOADS.get(name, WORKLOADS["W4"])
    over = {k: getattr(args, k) for k in ("preset", "width", "height", "steps", "dtype") if getattr(args, k, None)}
    if over:
        wl = dataclasses.replace(wl, name=name if name != "custom" else "custom", **over)
    variants = [v.strip() for v in str(args.variants).split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
        return 2
    if args.iters < 1:
        print("--iters must be at least 1")
        return 2
    device = args.device if args.device != "auto" else wl.device
    checkpoint, vae = getattr(args, "checkpoint", None) or "", getattr(args, "vae", None) or ""
    if getattr(args, "gpus", 1) != 1:  # the pipelined engine over stage processes: its own measurement
        from streamer.bench.model_pipelined import bench_pipelined, format_pipelined

        res = bench_pipelined(wl, args.gpus, args.mode, args.iters, device, args.fps, checkpoint=checkpoint, vae=vae)
        print(json.dumps(res, indent=1) if args.json else format_pipelined(res))
        return 0
    mode = getattr(args, "mode", "sequential")
    report = bench_model(wl, variants, args.iters, device, checkpoint=checkpoint, vae=vae, mode=mode)
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    return 0 if all("error" not in r for r in report["variants"]) else 1
