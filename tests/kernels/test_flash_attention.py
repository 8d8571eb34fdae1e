"""kernels/flash_attention.py against its fp32 reference: the interpreter at tiny sizes, the card at W1/W2."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu, small_device

from streamer_kernels.flash_attention import (
    CONFIGS,
    FlashConfig,
    FlashUnsupported,
    flash_attention,
    flash_attention_ref,
)

TINY = FlashConfig(block_m=16, block_n=16, num_warps=4, num_stages=1)
TINY_INLINE_MERGE = FlashConfig(block_m=16, block_n=16, num_warps=4, num_stages=1, inline_merge=True)


def _qkv(B: int, sq: int, sk: int, H: int, D: int, device: str, dtype: torch.dtype = torch.bfloat16):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    return [torch.randn(B, s, H, D, generator=g).to(dtype).to(device) for s in (sq, sk, sk)]


def _check(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, name: str) -> None:
    # bf16 output of an fp32 computation; P is rounded to bf16 before P @ V, as in every flash kernel
    assert_matches(out, flash_attention_ref(q, k, v), torch.bfloat16, name, rtol=2e-2, atol=2e-2)


# (B, Sq, Sk, H, D): Sq and Sk not multiples of 16, several heads and batches, Sk < one block
SHAPES = [(1, 5, 5, 1, 16), (1, 40, 100, 2, 32), (2, 33, 47, 3, 16), (1, 16, 64, 2, 16), (1, 20, 9, 2, 16)]


@pytest.mark.parametrize("cfg", [TINY, TINY_INLINE_MERGE], ids=lambda c: c.name)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("programs", [1, 3, 7, 1000, None])
def test_matches_reference_for_any_split(shape, programs, cfg):
    """1 program: no split; 3 and 7: tiles shared by two or more programs; 1000: one iteration each."""
    q, k, v = _qkv(*shape, small_device())
    _check(flash_attention(q, k, v, cfg, programs=programs), q, k, v, f"{shape} P={programs}")


@pytest.mark.parametrize(
    "cfg",
    [
        FlashConfig(16, 16, 4, 1, per_sm=0),
        FlashConfig(32, 64, 4, 1),
        FlashConfig(64, 32, 4, 1, per_sm=2),
        FlashConfig(16, 32, 4, 1, tma=True),  # tensor descriptors: the interpreter emulates them too
        FlashConfig(16, 16, 4, 1, tma=True, inline_merge=True),
        FlashConfig(32, 16, 4, 1, per_sm=2, inline_merge=True),
    ],
    ids=lambda c: c.name,
)
def test_plain_schedule_wider_blocks_and_tma(cfg):
    q, k, v = _qkv(2, 70, 130, 2, 32, small_device())
    _check(flash_attention(q, k, v, cfg, programs=None if cfg.per_sm != 1 else 5), q, k, v, cfg.name)


def test_strided_cache_layout():
    """The fast path passes q and the KV cache as [B, H, S, D] memory seen as [B, S, H, D]: no copies."""
    dev = small_device()
    g = torch.Generator().manual_seed(3)
    cache = torch.randn(2, 1, 3, 90, 32, generator=g).to(torch.bfloat16).to(dev)  # [k/v, B, H, S, D]
    k, v = cache[0, :, :, :70].transpose(1, 2), cache[1, :, :, :70].transpose(1, 2)
    q = torch.randn(1, 3, 25, 32, generator=g).to(torch.bfloat16).to(dev).transpose(1, 2)
    assert not k.is_contiguous() and not q.is_contiguous()
    out = flash_attention(q, k, v, TINY, programs=4)
    assert out.shape == (1, 25, 3, 32) and out.is_contiguous()
    _check(out, q, k, v, "strided")


def test_large_scores_stay_finite():
    """Scores of +-60 (after scaling) must not overflow the online softmax or its cross-program merge."""
    q, k, v = _qkv(1, 24, 50, 1, 16, small_device())
    q = (q.float() * 30).to(torch.bfloat16)
    _check(flash_attention(q, k, v, TINY, programs=3), q, k, v, "large scores")


def test_unsupported_inputs_are_refused():
    q, k, v = _qkv(1, 4, 4, 1, 24, small_device())
    with pytest.raises(FlashUnsupported, match="head dim"):
        flash_attention(q, k, v, TINY)
    q, k, v = _qkv(1, 4, 4, 1, 16, small_device(), torch.float32)
    with pytest.raises(FlashUnsupported, match="dtypes"):
        flash_attention(q, k, v, TINY)
    q, k, v = _qkv(1, 4, 4, 2, 16, small_device())
    with pytest.raises(FlashUnsupported, match="need"):
        flash_attention(q, k[:, :, :1], v[:, :, :1], TINY)


def test_config_names_are_unique():
    assert len({c.name for c in CONFIGS}) == len(CONFIGS)


@needs_gpu
@pytest.mark.parametrize("shape", [(1, 1560, 9360, 12, 128), (1, 1024, 6144, 12, 128), (2, 333, 999, 3, 128)])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_gpu_real_shapes(shape, cfg):
    q, k, v = _qkv(*shape, "cuda")
    try:
        out = flash_attention(q, k, v, cfg)
    except Exception as e:  # a config the card's Triton cannot compile (shared memory, TMA, warp spec)
        pytest.skip(f"{cfg.name} does not compile here: {type(e).__name__}: {e}")
    assert_matches(out, flash_attention_ref(q, k, v), torch.bfloat16, cfg.name, max_bad_fraction=1e-4)


@needs_gpu
def test_gpu_cuda_graph_capture():
    q, k, v = _qkv(1, 1560, 9360, 12, 128, "cuda")
    flash_attention(q, k, v)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = flash_attention(q, k, v)
    for t in (q, k, v):
        t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    assert_matches(out, flash_attention_ref(q, k, v), torch.bfloat16, "graph replay", max_bad_fraction=1e-4)


def test_bench_plumbing_on_the_interpreter(tmp_path, capsys):
    """`python -m streamer_kernels.bench attention --tiny`: every candidate checked, the JSON written."""
    import json

    from streamer_kernels.bench import main

    path = tmp_path / "attention.json"
    assert main(["attention", "--tiny", "--json", str(path)]) == 0
    res = json.loads(path.read_text())
    rows = res["shapes"]["tiny"]["candidates"]
    triton_rows = {n: r for n, r in rows.items() if n.startswith("triton ")}
    assert len(triton_rows) == 2 and all(r["correct"] and r["max_abs_err"] < 2e-2 for r in triton_rows.values())
    assert "triton m16n16w4s1-sk1" in capsys.readouterr().out
    cross = res["shapes"]["tiny cross"]["candidates"]  # a padded prompt: the prompt kernel, no stream-K config
    assert [n for n in cross if n.startswith("triton ")] == ["triton prompt m16 (distinct keys)"]
    assert cross["triton prompt m16 (distinct keys)"]["correct"]


_COMPILE_FOR_SM90 = """
import os, sys
os.environ["TRITON_INTERPRET"] = "0"  # real compilation: no GPU is needed to compile for one
from triton import compile
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import streamer_kernels.flash_attention as F

def build(fn, constexprs, num_warps, num_stages=3):
    names = fn.arg_names
    sig = {n: "constexpr" if n in constexprs else "*bf16" if n in "Q K V Out" else "i32" for n in names}
    sig.update(PO="*fp32", PML="*fp32", **({"qk_scale": "fp32", "Arrivals": "*i32"} if "qk_scale" in names else {}))
    # what Triton's launcher specialises at W1: 16-aligned pointers and strides, so loads vectorise
    div16 = [n for n in names if n[0] in "QKVOP" or n[0] == "s" or n == "Sk"]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div16 if n not in constexprs}
    cx = {(names.index(n),): v for n, v in constexprs.items()}
    opts = {"num_warps": num_warps, "num_stages": num_stages}
    return compile(ASTSource(fn, sig, constexprs=cx, attrs=attrs), target=GPUTarget("cuda", 90, 32), options=opts)

for c in F.CONFIGS:
    cx = dict(BLOCK_M=c.block_m, BLOCK_N=c.block_n, HEAD_DIM=128, USE_TMA=c.tma, INLINE_MERGE=c.inline_merge,
              F32=False)
    k = build(F._flash_attn_fwd_kernel, cx, c.num_warps, c.num_stages)
    ops = k.asm["ttgir"]
    pipelined = "async_tma_copy" in ops if c.tma else "async_copy_global_to_local" in ops
    print(c.name, k.metadata.shared, "pipelined" if pipelined else "NOT PIPELINED", flush=True)
    assert pipelined and k.metadata.shared <= 232448, c.name  # 227 KB: an H100 block's shared memory
build(F._flash_attn_merge_kernel, dict(BLOCK_M=128, HEAD_DIM=128), 8)
"""


@pytest.mark.slow
def test_every_config_compiles_for_hopper():
    """On CPU too: each config compiles for sm_90, its key loop pipelined, in an H100's shared memory."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert run.stdout.count("pipelined") == len(CONFIGS), run.stdout


def test_the_environment_names_the_default_config(monkeypatch):
    """$STREAMER_FLASH_CONFIG picks a config of CONFIGS by name (the whole-chunk A/B's switch); a name
    that is not there is refused with the known names, not ignored."""
    from streamer_kernels.flash_attention import CONFIG_ENV, DEFAULT_CONFIG, default_config

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert default_config() == DEFAULT_CONFIG
    other = next(c for c in CONFIGS if c != DEFAULT_CONFIG)
    monkeypatch.setenv(CONFIG_ENV, other.name)
    assert default_config() == other
    monkeypatch.setenv(CONFIG_ENV, "m1n1")
    with pytest.raises(ValueError, match=DEFAULT_CONFIG.name):  # the known names are listed
        default_config()


def test_bench_takes_only_the_shapes_asked_for(tmp_path):
    """`--shapes W1` (the device call's first step) skips the other shapes; a prefix that matches none
    leaves the JSON's shapes empty, not the whole set."""
    import json

    from streamer_kernels.bench import main

    path = tmp_path / "attention.json"
    assert main(["attention", "--tiny", "--shapes", "W1", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["shapes"] == {}
    assert main(["attention", "--tiny", "--shapes", "tiny cross", "--json", str(path)]) == 0
    assert list(json.loads(path.read_text())["shapes"]) == ["tiny cross"]
    assert main(["attention", "--tiny", "--shapes", "ti", "--json", str(path)]) == 0
    assert list(json.loads(path.read_text())["shapes"]) == ["tiny", "tiny cross"]
