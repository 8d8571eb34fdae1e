"""Time each fused kernel against its unfused plain-torch reference at W1 sizes (run on a CUDA GPU).

    python -m streamer_kernels.bench [--json PATH]
    python -m streamer_kernels.bench attention [--json PATH] [--tiny] [--shapes W1]   # only attention: kernels/bench_attention.py
    python -m streamer_kernels.bench matmul [--json PATH]   # the projections, bf16 vs FP8: kernels/bench_matmul.py

Reports ms (median of triton.testing.do_bench), achieved GB/s over the minimum bytes each op must
move, the speed-up over the reference, and the measured copy bandwidth and bf16 matmul rate that
serve as the card's ceilings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch

from streamer.model.rope import rope_tables
from streamer_kernels.attention import AttentionPicker, available_backends
from streamer_kernels.backend import triton
from streamer_kernels.bias_gelu import bias_gelu, bias_gelu_ref
from streamer_kernels.frame_convert import frame_to_model, frame_to_model_ref, model_to_frame, model_to_frame_ref
from streamer_kernels.modulated_layernorm import gated_modulated_layernorm, gated_modulated_layernorm_ref
from streamer_kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref
from streamer_kernels.shift_add_relu import shift_add_relu, shift_add_relu_ref

# through the kernels' backend, which picks the interpreter on CPU (`attention --tiny`) before Triton loads
do_bench = triton.testing.do_bench


def ceilings() -> dict[str, float]:
    """Measured copy bandwidth (GB/s, read + write) and bf16 matmul rate (TFLOP/s) of this card."""
    a = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), return_mode="median")
    n = 8192
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    mm = do_bench(lambda: x @ y, return_mode="median")
    return {"copy_GBps": 2 * a.numel() / ms / 1e6, "matmul_bf16_TFLOPs": 2 * n**3 / mm / 1e9}


def _row(name: str, fast: Callable[[], object], ref: Callable[[], object], nbytes: int) -> dict[str, float | str]:
    t_fast = do_bench(fast, return_mode="median")
    t_ref = do_bench(ref, return_mode="median")
    return {"op": name, "fused_ms": t_fast, "ref_ms": t_ref, "speedup": t_ref / t_fast, "GBps": nbytes / t_fast / 1e6}


def run() -> dict[str, object]:
    dev, bf = "cuda", torch.bfloat16
    T, D, FFN, H = 1560, 1536, 8960, 12
    rows = []
    x = torch.randn(1, T, D, device=dev, dtype=torch.float32)
    y = torch.randn(1, T, D, device=dev, dtype=bf)
    e0 = torch.randn(1, 1, 6, D, device=dev)
    g, sh, sc = e0[:, :, 2], e0[:, :, 0], e0[:, :, 1]
    rows.append(
        _row(
            "gated_modulated_layernorm",
            lambda: gated_modulated_layernorm(x, y, g, sh, sc, out_dtype=bf),
            lambda: gated_modulated_layernorm_ref(x, y, g, sh, sc, out_dtype=bf),
            T * D * (4 + 2 + 4 + 2),
        )
    )
    qkv = torch.randn(1, T, 3 * D, device=dev, dtype=bf)
    q, k, v = qkv.split(D, dim=-1)
    wq, wk = torch.randn(D, device=dev, dtype=bf), torch.randn(D, device=dev, dtype=bf)
    cos, sin = rope_tables(torch.tensor([5], device=dev), 30, 52, 128)
    cache = torch.empty(2, 1, 7 * T, H, 128, device=dev, dtype=bf)
    rows.append(
        _row(
            "qk_norm_rope+cache write",
            lambda: qk_norm_rope(q, k, v, wq, wk, cos, sin, H, k_out=cache[0, :, :T], v_out=cache[1, :, :T]),
            lambda: qk_norm_rope_ref(q, k, v, wq, wk, cos, sin, H),
            T * D * 2 * 6,
        )
    )
    h = torch.randn(T, FFN, device=dev, dtype=bf)
    bias = torch.randn(FFN, device=dev, dtype=bf)
    rows.append(_row("bias_gelu", lambda: bias_gelu(h, bias), lambda: bias_gelu_ref(h, bias), T * FFN * 4))
    # TAEHV's widest MemBlocks at W1 (2 frames of 64 channels at 240x416): y = [A | B], mem = one frame
    ys = torch.randn(2, 128, 240, 416, device=dev, dtype=bf)
    mem = torch.randn(64, 240, 416, device=dev, dtype=bf)
    rows.append(
        _row(
            "shift_add_relu 2x64x240x416",
            lambda: shift_add_relu(ys, mem),
            lambda: shift_add_relu_ref(ys, mem),
            ys.numel() * 2 + mem.numel() * 2 * 2 + ys.numel(),  # read y and mem, write half of y and mem
        )
    )
    cam = torch.randint(0, 256, (4, 720, 1280, 3), dtype=torch.uint8, device=dev)
    rows.append(
        _row(
            "frame_to_model 720p->480x832 x4",
            lambda: frame_to_model(cam, 480, 832, dtype=bf),
            lambda: frame_to_model_ref(cam, 480, 832, dtype=bf),
            cam.numel() + 4 * 3 * 480 * 832 * 2,
        )
    )
    img = torch.rand(4, 3, 480, 832, device=dev, dtype=bf)
    for fmt in ("rgb", "i420"):
        rows.append(
            _row(
                f"model_to_frame 480x832->720p {fmt} x4",
                lambda fmt=fmt: model_to_frame(img, 720, 1280, fmt=fmt),  # type: ignore[misc]
                lambda fmt=fmt: model_to_frame_ref(img, 720, 1280, fmt=fmt),  # type: ignore[misc]
                img.numel() * 2 + 4 * 720 * 1280 * (6 if fmt == "rgb" else 3) // 2,
            )
        )
    attn: dict[str, dict[str, float]] = {}
    for label, tok in (("W1 480x832", 1560), ("W2 512x512", 1024)):
        qa = torch.randn(1, tok, H, 128, device=dev, dtype=bf)
        ka = torch.randn(1, 7 * tok, H, 128, device=dev, dtype=bf)
        va = torch.randn_like(ka)
        flops = 4 * tok * 7 * tok * H * 128
        attn[label] = {}
        for name, fn in available_backends(qa.device).items():
            try:
                ms = do_bench(lambda fn=fn, q=qa, k=ka, v=va: fn(q, k, v), return_mode="median")  # type: ignore[misc]
            except RuntimeError as e:
                print(f"attention {name} refused {label}: {e}", file=sys.stderr)
                continue
            attn[label][name] = ms
            attn[label][name + "_TFLOPs"] = flops / ms / 1e9
        attn[label]["picked"] = AttentionPicker().pick(qa, ka, va)  # type: ignore[assignment]
    return {"card": torch.cuda.get_device_name(), "ceilings": ceilings(), "kernels": rows, "attention": attn}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", choices=["all", "attention", "matmul"], default="all")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--tiny", action="store_true", help="attention only: tiny sizes on CPU (the interpreter)")
    p.add_argument("--shapes", default="", help="attention only: these shapes (label prefixes, e.g. W1 or W1,W2)")
    args = p.parse_args(argv)
    if args.what == "attention":
        from streamer_kernels import bench_attention

        res = bench_attention.run(tiny=args.tiny, log=lambda line: print(line, flush=True), shapes=args.shapes)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1, default=str)
        return 0
    if not torch.cuda.is_available():
        print("kernels.bench needs a CUDA GPU", file=sys.stderr)
        return 2
    if args.what == "matmul":
        from streamer_kernels import bench_matmul

        res = bench_matmul.run(log=lambda line: print(line, flush=True))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1, default=str)
        return 0
    res = run()
    print(f"card: {res['card']}  ceilings: {res['ceilings']}")
    for r in res["kernels"]:  # type: ignore[attr-defined]
        print(
            f"{r['op']:40s} fused {r['fused_ms']:.4f} ms  ref {r['ref_ms']:.4f} ms  "
            f"x{r['speedup']:.2f}  {r['GBps']:.0f} GB/s"
        )
    for label, t in res["attention"].items():  # type: ignore[attr-defined]
        print(f"attention {label}: {t}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
