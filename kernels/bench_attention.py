"""Attention at W1 and W2 shapes: cuDNN SDPA, flash SDPA and every config of the Triton stream-K kernel;
and W1's cross-attention to a zero-padded prompt: SDPA over all 512 keys against the prompt kernel
(kernels/prompt_attention.py), which reads the padding's repeated key once.

    python -m streamer_kernels.bench attention [--json PATH]   # a CUDA GPU; about a minute with the JIT
    python -m streamer_kernels.bench attention --shapes "W1 cross"   # only the cross-attention rows
    python -m streamer_kernels.bench attention --tiny          # the plumbing on CPU, under the interpreter

Each candidate is first checked against the fp32 reference (max abs error and the picker's relative
error); only the correct ones are timed (median of triton.testing.do_bench). TFLOP/s count
4 * B * Sq * Sk * H * D (every key, the repeated ones too, for the cross-attention). Last, the AttentionPicker picks among cuDNN, the other SDPA backends and the
Triton kernel's `default_config()`, as the fast path would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch

from streamer_kernels.attention import AttentionPicker, AttnFn, available_backends
from streamer_kernels.backend import triton
from streamer_kernels.flash_attention import (
    CONFIGS,
    FlashConfig,
    default_config,
    flash_attention,
    flash_attention_ref,
)
from streamer_kernels.prompt_attention import prompt_attention

# (B, Sq, Sk, H, D, prompt tokens): a chunk's queries against the whole rolling cache (7 chunks: 6 past +
# its own), tokens None; or against a prompt's 512 K/V whose positions from `tokens` on are padding
# (one repeated key; 7: the default prompt "a watercolour painting", 512: no padding)
SHAPES = {
    "W1 480x832": (1, 1560, 9360, 12, 128, None),
    "W2 512x512": (1, 1024, 6144, 12, 128, None),
    **{f"W1 cross {n} tokens": (1, 1560, 512, 12, 128, n) for n in (7, 77, 512)},
}
# tiny: 3 q-tiles x 2 heads x 7 key blocks over the interpreter's 4 programs, so tiles are shared
TINY_SHAPES = {"tiny": (1, 40, 100, 2, 32, None), "tiny cross": (1, 40, 48, 2, 32, 9)}
TINY_CONFIGS = (FlashConfig(16, 16, 4, 1), FlashConfig(32, 16, 4, 1, per_sm=0))
MAX_ABS_ERR = 2e-2  # bf16 output (ulp 2^-8 relative) of values well under 1; the picker also wants rel < 1e-2
MAX_REL_ERR = 1e-2


def _candidates(device: torch.device, tiny: bool, starts: torch.Tensor | None) -> dict[str, AttnFn]:
    sdpa = available_backends(device)
    found = {f"{n} SDPA": sdpa[n] for n in ("cudnn", "flash") if n in sdpa} or {"sdpa": sdpa["sdpa"]}
    if "fa3" in sdpa:  # FlashAttention-3, where installed
        found["fa3"] = sdpa["fa3"]
    if starts is not None:  # a prompt's K/V: the prompt kernel instead of the stream-K configs
        for bm in (16,) if tiny else (128, 64):  # 64-row tiles: 300 programs at W1 in place of 156
            blocks = {"block_m": bm, "block_n": 16 if tiny else 64}
            found[f"triton prompt m{bm} (distinct keys)"] = partial(prompt_attention, starts=starts, **blocks)
        return found
    for cfg in TINY_CONFIGS if tiny else CONFIGS:
        found[f"triton {cfg.name}"] = partial(flash_attention, config=cfg)
    return found


def _measure(fn: AttnFn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ref: torch.Tensor, flops: int):
    row: dict[str, object] = {}
    t0 = time.perf_counter()
    try:
        out = fn(q, k, v).float()
    except Exception as e:  # a config this card's Triton cannot compile: reported, not fatal
        row["error"] = f"{type(e).__name__}: {e}"[:400]
        return row
    row["first_call_s"] = time.perf_counter() - t0  # the JIT compile, for the Triton configs
    diff = out - ref
    row["max_abs_err"] = max_abs = float(diff.abs().max())
    row["rel_err"] = rel = float(diff.norm() / ref.norm())
    row["correct"] = max_abs <= MAX_ABS_ERR and rel < MAX_REL_ERR
    if row["correct"] and q.is_cuda:
        from triton.testing import do_bench  # needs CUDA events

        ms = do_bench(lambda: fn(q, k, v), return_mode="median")
        row["ms"], row["TFLOPs"] = ms, flops / ms / 1e9
    return row


def run(tiny: bool = False, log: Callable[[str], None] = print, shapes: str = "") -> dict[str, object]:
    """Check and time every candidate per shape; tiny: the interpreter's sizes on CPU, no timing;
    shapes: only the shapes whose label starts with one of these comma-separated prefixes ("W1")."""
    dev = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    results: dict[str, object] = {}
    prefixes = tuple(p for p in shapes.split(",") if p)
    for label, (B, sq, sk, H, D, tokens) in (TINY_SHAPES if tiny else SHAPES).items():
        if prefixes and not label.startswith(prefixes):
            continue
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(B, s, H, D, device=dev, dtype=torch.bfloat16, generator=g) for s in (sq, sk, sk))
        starts = None
        if tokens is not None:  # the padding: every position from `tokens` on holds one key and value
            k[:, tokens:], v[:, tokens:] = k[:, -1:], v[:, -1:]
            starts = torch.tensor([min(tokens, sk - 1)], dtype=torch.int32, device=dev)  # a run of one: none
        ref = flash_attention_ref(q, k, v)
        flops = 4 * B * sq * sk * H * D
        rows = {}
        for name, fn in _candidates(dev, tiny, starts).items():
            rows[name] = row = _measure(fn, q, k, v, ref, flops)
            log(f"{label:12s} {name:36s} " + _fmt(row))
        timed = {n: r["ms"] for n, r in rows.items() if "ms" in r}
        entry: dict[str, object] = {"shape": [B, sq, sk, H, D], "candidates": rows}
        entry["fastest"] = min(timed, key=timed.__getitem__) if timed else None
        if dev.type == "cuda":
            entry["picked"] = AttentionPicker().pick(q, k, v)
        log(f"{label:12s} fastest: {entry['fastest']}  picker: {entry.get('picked')}")
        results[label] = entry
    card = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (interpreter)"
    versions = {"triton": triton.__version__, "torch": torch.__version__}
    return {"card": card, **versions, "default_config": default_config().name, "shapes": results}


def _fmt(row: dict[str, object]) -> str:
    if "error" in row:
        return f"ERROR {str(row['error']).splitlines()[0][:160]}"
    s = f"err {row['max_abs_err']:.2e} (rel {row['rel_err']:.1e}) first call {row['first_call_s']:.1f} s"
    if not row["correct"]:
        return s + "  WRONG: not timed"
    if "ms" in row:
        s = f"{row['ms']:.4f} ms {row['TFLOPs']:6.1f} TFLOP/s  " + s
    return s
