"""`python -m experiments.megakernel.bench` (from the checkout root): one tiny-preset DiT block at W3 sizes, fast path vs megakernel.

Compares, in one process on one card, bf16, random weights, a full KV cache (window 6 incl. 3 sinks,
1024 tokens per frame = 6144 keys): (a) the block as the fast path runs it (streamer/model/fast/ops.py:
fused Triton glue + cuBLAS + the attention picker's backend, 13 kernels), (b) the persistent
megakernel (block_megakernel.py beside this file) in a few tile configurations, and (c) the whole DiT forward
(4 blocks + head) with the megakernel switch off and on. Each variant is captured as ONE CUDA graph
holding `reps` back-to-back calls (so graph-launch latency is amortised and inter-kernel gaps are
counted as they are in the fast path's chunk graph); every replay is timed with CUDA events and
divided by `reps`. Warm-up (compilation, backend picking) and capture are excluded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from experiments.megakernel.block_megakernel import (
    INTERPRETER_CONFIG,
    BlockWeights,
    MegakernelConfig,
    MegakernelWorkspace,
    block_megakernel,
    block_modulation,
    default_config,
)
from streamer.bench.model_workloads import percentile
from streamer.model.cache import CrossAttnKV, KVCache
from streamer.model.dit import DiT, DiTBlock, build
from streamer.model.fast.ops import FusedOps
from streamer.model.rope import rope_tables
from streamer.model.shortcut import ShortcutDiT
from streamer_kernels.backend import triton
from streamer_kernels.modulated_layernorm import modulated_layernorm


class MegakernelDiT:
    """The fast path's DiT with every steady-state block as ONE persistent kernel (the experiment).

    Not used by the fast path: it measured slower at W3 (README.md beside this file). `enabled = False`,
    or a cache still filling (masked attention), runs the fast path's forward unchanged (DiT.forward
    with FusedOps); the steady state runs the same embed, head and unpatchify around the megakernels.
    """

    def __init__(self, dit: DiT) -> None:
        self.dit = dit
        self.ops = FusedOps(dit)  # fuses each block's q/k/v weights into one buffer first (values unchanged)
        # views of the fused parameters: checkpoint loads into the DiT still reach the kernel
        self.weights = [BlockWeights.from_block(blk) for blk in dit.blocks]  # type: ignore[arg-type]
        self.workspace: MegakernelWorkspace | None = None
        self.enabled = True

    @torch.no_grad()
    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: CrossAttnKV,
        cache: KVCache,
        step_size: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As the fast path's DiT call: x [B, in_dim, F, H, W], t [B, F] or [B], step_size as a
        ShortcutDiT's (it enters the time embedding) -> v [B, out_dim, F, H, W] (acc dtype)."""
        dit, cfg = self.dit, self.dit.cfg
        if not self.enabled or not cache.history_full:
            told = {} if step_size is None else {"step_size": step_size}
            return dit(x, t, context, cache, ops=self.ops, **told)  # type: ignore[no-any-return]
        acc = dit.acc_dtype
        b, _, f_in, h_in, w_in = x.shape
        pt, ph, pw = cfg.patch_size
        grid = (f_in // pt, h_in // ph, w_in // pw)
        if t.dim() == 1:
            t = t[:, None].expand(b, grid[0])
        e, e0 = dit.time_embed(t, step_size) if isinstance(dit, ShortcutDiT) else dit.time_embed(t)
        tokens = dit.patch_embedding(x.to(dit.dtype)).flatten(2).transpose(1, 2).to(acc).contiguous()
        cache.check_chunk(grid[0], grid[1] * grid[2])
        cos, sin = rope_tables(cache.positions(grid[0]), grid[1], grid[2], cfg.head_dim, cfg.rope_theta,
                               dtype=torch.float32)  # fmt: skip
        ws = self.workspace
        if ws is None or ws.shape[:2] != tokens.shape[:2]:  # allocated before capture: barrier words start at 0
            nsplit = default_config(tokens.device).nsplit
            ws = self.workspace = MegakernelWorkspace(
                b, tokens.shape[1], cfg.dim, cfg.num_heads, nsplit, dit.dtype, tokens.device
            )
        for i, blk in enumerate(dit.blocks):
            k, v = context.layer(i)
            block_megakernel(
                self.weights[i], tokens, block_modulation(blk, e0), cos, sin, cache.k[i], cache.v[i],  # type: ignore[arg-type]
                cache.stage_offset, k, v, out=tokens, workspace=ws,
            )  # fmt: skip
        shift, scale, head_dtype = dit.head.shift_scale(e)
        h = modulated_layernorm(tokens, shift, scale, cfg.eps, head_dtype)
        return dit.unpatchify(dit.head(h).to(acc), grid)


CONFIGS = {
    "default": MegakernelConfig(),
    "warps8": MegakernelConfig(num_warps=8),
    "bmc16": MegakernelConfig(bm=32, bmc=16),
    "split4_bma128": MegakernelConfig(bma=128, nsplit=4, num_warps=8),
    "split1": MegakernelConfig(nsplit=1),
}


def _time_graph(fn: Callable[[], Any], reps: int, iters: int, warmup: int = 3) -> dict[str, float]:
    """µs per call p50/p99: `reps` calls captured as one graph, replayed `iters` times (event-timed)."""
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():  # --smoke on a CPU: exercise the code path, no timing
        return {"us_p50": float("nan"), "us_p99": float("nan"), "iters": 0, "reps": reps}
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    for _ in range(10):
        graph.replay()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / reps)
    return {"us_p50": percentile(times, 50), "us_p99": percentile(times, 99), "iters": iters, "reps": reps}


def _triton_version() -> str:
    return str(triton.__version__)  # the backend's import: it chose the interpreter first (--smoke on a CPU)


def run(
    iters: int = 300, reps: int = 10, budget_s: float = 200.0, out: str | None = None, smoke: bool = False
) -> dict[str, Any]:
    """Measure and return the results (also printed as JSON after each variant, and saved to `out`)."""
    t_start = time.perf_counter()
    dev = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.bfloat16
    torch.manual_seed(0)
    dit = build("tiny", device=dev, dtype=dtype)
    cfg = dit.cfg
    hp = wp = 2 if smoke else 32  # W3: 512x512 frames -> 64x64 latents -> 32x32 tokens
    s = hp * wp
    cache = KVCache(cfg, batch=1, tokens_per_frame=s, window=6, sinks=3, dtype=dtype, device=dev)
    cache.storage.normal_()
    cache.committed = cache.history  # steady state: history full, no mask
    kv = dit.cross_kv(torch.randn(1, 20, cfg.text_dim, device=dev))
    fused = MegakernelDiT(dit)
    x = torch.randn(1, s, cfg.dim, device=dev)
    _, e0 = dit.time_embed(torch.full((1, 1), 700.0, device=dev))
    layer = 1
    blk = dit.blocks[layer]
    if not isinstance(blk, DiTBlock):
        raise TypeError(f"dit.blocks[{layer}] is a {type(blk).__name__}, not a DiTBlock")
    mod = block_modulation(blk, e0.float())
    cos, sin = rope_tables(cache.positions(1), hp, wp, cfg.head_dim, cfg.rope_theta, dtype=torch.float32)
    k_txt, v_txt = kv.layer(layer)
    result: dict[str, Any] = {
        "card": "cpu (smoke)" if smoke else torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "shape": {"tokens": s, "keys": cache.stage_offset + s, "dim": cfg.dim, "heads": cfg.num_heads},
        "method": f"one CUDA graph of {reps} back-to-back calls, {iters} event-timed replays, per call",
    }

    def save() -> None:
        if out:
            with open(out, "w") as f:
                json.dump(result, f, indent=1)
        print(json.dumps(result), flush=True)

    # (a) the block as the fast path runs it (DiTBlock on FusedOps): residual x -> new residual, the
    # next block's LN included (this block's shift/scale stand in for the next one's)
    def fast_block() -> torch.Tensor:
        m, ops = mod, fused.ops
        h = ops.modulated_norm(x, m[:, :, 0], m[:, :, 1], cfg.eps, dtype)  # the previous block's tail
        t, _ = blk(x, h, m, (m[:, :, 0], m[:, :, 1], dtype), (cos, sin), (k_txt, v_txt), cache=cache, layer=layer,
                   ops=ops)  # fmt: skip
        return t  # type: ignore[no-any-return]

    with torch.no_grad():
        want = fast_block()
        result["fast_block"] = _time_graph(fast_block, reps, iters)
        result["fast_block"]["kernels"] = 14  # incl. the LN the previous block's tail does
        save()
        w = BlockWeights.from_block(blk)
        configs = {"interpreter": INTERPRETER_CONFIG} if smoke else CONFIGS
        for name, mk in configs.items():
            if time.perf_counter() - t_start > budget_s:
                result.setdefault("skipped_configs", []).append(name)
                continue
            try:
                ws = MegakernelWorkspace(1, s, cfg.dim, cfg.num_heads, mk.nsplit, dtype, dev)
                xo = torch.empty_like(x)
                t0 = time.perf_counter()

                def mega(mk: MegakernelConfig = mk, ws: MegakernelWorkspace = ws, xo: torch.Tensor = xo) -> None:
                    block_megakernel(w, x, mod, cos, sin, cache.k[layer], cache.v[layer], cache.stage_offset,
                                     k_txt, v_txt, out=xo, workspace=ws, config=mk)  # fmt: skip

                mega()
                if not smoke:
                    torch.cuda.synchronize()
                compile_s = time.perf_counter() - t0
                err = float((xo - want).norm() / (want - x).norm())
                r: dict[str, Any] = dict(_time_graph(mega, reps, iters))
                r.update(compile_s=round(compile_s, 2), rel_err_vs_fast=err, config=dataclasses.asdict(mk))
            except Exception as e:  # a config the compiler rejects (e.g. shared memory) is reported, not fatal
                r = {"error": f"{type(e).__name__}: {e}"[:500]}
            result[f"mega_{name}"] = r
            save()
        # (c) the whole DiT forward (4 blocks + head), the switch off and on
        xin = torch.randn(1, 16, 1, 2 * hp, 2 * wp, device=dev)
        tin = torch.full((1, 1), 700.0, device=dev)
        for flag in (False, True):
            fused.enabled = flag
            result[f"dit_forward_megakernel_{flag}"] = _time_graph(lambda: fused(xin, tin, kv, cache), 2, iters // 2)
            save()
        fused.enabled = False
        v0 = fused(xin, tin, kv, cache)
        fused.enabled = True
        v1 = fused(xin, tin, kv, cache)
        result["dit_forward_rel_diff"] = float((v1 - v0).norm() / v0.norm())
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    save()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--budget", type=float, default=200.0, help="seconds; configs past it are skipped")
    ap.add_argument("--json", default=None, help="write the results here too")
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton interpreter, 4 tokens: checks the script runs")
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("needs a CUDA GPU (or --smoke)")
        return 2
    run(args.iters, args.reps, args.budget, args.json, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

