"""kernels/prompt_attention.py: the attention over a prompt's distinct keys equals the attention over all
of them (its fp32 reference), in the interpreter at tiny sizes and on the card at W1's."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu, small_device

from streamer.model.cache import tail_start
from streamer_kernels.prompt_attention import prompt_attention, prompt_attention_ref


def _prompt_kv(B: int, L: int, H: int, D: int, tokens: list[int], dtype: torch.dtype, seed: int = 0):
    """k, v [B, L, H, D] whose rows past tokens[b] all copy one padding row, as a zero-padded prompt's."""
    g = torch.Generator().manual_seed(seed)
    k, v = (torch.randn(B, L, H, D, generator=g) for _ in range(2))
    pad_k, pad_v = torch.randn(H, D, generator=g), torch.randn(H, D, generator=g)
    for b, n in enumerate(tokens):
        k[b, n:], v[b, n:] = pad_k, pad_v
    return k.to(dtype), v.to(dtype)


def _starts(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return tail_start(k.transpose(1, 2), v.transpose(1, 2))  # the [B, H, L, D] layout of CrossAttnKV


def test_tail_start_finds_the_run_of_copies_of_the_last_row():
    k, v = _prompt_kv(4, 12, 2, 8, [3, 11, 12, 0], torch.float32)
    # 3 tokens: rows 3..11 copy one row; 11 tokens: row 11 alone (a run of one); 12: nothing repeated;
    # 0 tokens: all twelve rows are copies
    assert _starts(k, v).tolist() == [3, 11, 11, 0]
    assert _starts(k, v).dtype == torch.int32


def test_a_key_copy_with_another_value_is_not_part_of_the_run():
    k, v = _prompt_kv(1, 10, 2, 8, [4], torch.float32)
    v[0, 6, 1, 3] += 1.0  # row 6's key still matches the padding, its value in one head does not
    assert _starts(k, v).tolist() == [7]
    k[0, 8, 0, 0] = float("nan")  # NaN equals nothing: that row is distinct too
    assert _starts(k, v).tolist() == [9]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize(
    "B, Sq, L, H, tokens",
    [
        (1, 5, 64, 1, [3]),  # one short q-tile, the distinct keys inside one key block
        (2, 40, 64, 2, [20, 63]),  # batch rows with different runs; the second repeats nothing
        (1, 33, 50, 3, [31]),  # the run's key is the first of the second key block (block_n 16: 31, 32)
        (2, 17, 48, 2, [0, 47]),  # every key a copy; no copies at all
    ],
)
def test_matches_attention_over_every_key(B, Sq, L, H, tokens, dtype):
    dev = small_device()
    k, v = _prompt_kv(B, L, H, 32, tokens, dtype)
    q = torch.randn(B, Sq, H, 32, generator=torch.Generator().manual_seed(1)).to(dtype)
    q, k, v = q.to(dev), k.to(dev), v.to(dev)
    out = prompt_attention(q, k, v, _starts(k, v), block_m=16, block_n=16)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-5
    assert_matches(out, prompt_attention_ref(q, k, v), dtype, f"{tokens}", rtol=tol, atol=tol)


def test_the_copies_are_not_read():
    """With the run's start given, the rows after it may hold anything (NaN here): the result is still
    the attention over a prompt whose rows there copy the run's first row."""
    dev = small_device()
    k, v = _prompt_kv(1, 40, 2, 16, [9], torch.float32)
    q = torch.randn(1, 21, 2, 16, generator=torch.Generator().manual_seed(2))
    want = prompt_attention_ref(q, k, v)
    k[0, 10:], v[0, 10:] = float("nan"), float("nan")
    starts = torch.tensor([9], dtype=torch.int32)
    out = prompt_attention(q.to(dev), k.to(dev), v.to(dev), starts.to(dev), block_m=16, block_n=16)
    assert_matches(out, want, torch.float32, "NaN past the run's first row")


def test_strided_cross_kv_layout_and_bad_shapes():
    """The fast path passes CrossAttnKV's [B, H, L, D] memory seen as [B, L, H, D]: no copies."""
    dev = small_device()
    k, v = _prompt_kv(1, 32, 2, 16, [5], torch.float32)
    kh, vh = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()  # [B, H, L, D] memory
    q = torch.randn(1, 9, 2, 16)
    out = prompt_attention(q.to(dev), kh.to(dev).transpose(1, 2), vh.to(dev).transpose(1, 2),
                           tail_start(kh, vh).to(dev), block_m=16, block_n=16)  # fmt: skip
    assert_matches(out, prompt_attention_ref(q, k, v), torch.float32, "strided")
    with pytest.raises(ValueError, match="starts"):
        prompt_attention(q, k, v, torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="head dim"):
        prompt_attention(q[..., :12], k[..., :12], v[..., :12], torch.zeros(1, dtype=torch.int32))


def test_the_picker_checks_the_kernel_once_per_shape(monkeypatch):
    """`AttentionPicker.prompt` (the fast path's cross-attention) uses the kernel once it has matched the
    reference over every key for that shape; checked again for a new shape only."""
    import streamer_kernels.prompt_attention as module
    from streamer_kernels.attention import AttentionPicker

    dev = small_device()
    k, v = _prompt_kv(1, 48, 2, 32, [6], torch.float32)
    q = torch.randn(1, 20, 2, 32)
    q, k, v = q.to(dev), k.to(dev), v.to(dev)
    calls = []
    real = module.prompt_attention
    monkeypatch.setattr(module, "prompt_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    picker = AttentionPicker()
    for _ in range(3):
        out = picker.prompt(q, k, v, _starts(k, v))
        assert_matches(out, prompt_attention_ref(q, k, v), torch.float32, "picked")
    assert list(picker.prompt_ok.values()) == [True]
    assert len(calls) == 4  # the check, then one per call
    forced = AttentionPicker(only="sdpa")  # a picker forced to one backend uses it, over every key
    assert_matches(forced.prompt(q, k, v, _starts(k, v)), prompt_attention_ref(q, k, v), torch.float32, "forced")
    assert len(calls) == 4 and not forced.prompt_ok


@pytest.mark.parametrize("broken", ["wrong", "raises"])
def test_a_failing_kernel_falls_back_to_every_key(monkeypatch, caplog, broken):
    """A kernel that is wrong or fails on this card is not used: the picked backend attends to every key
    (the same function), and the log says so."""
    import streamer_kernels.prompt_attention as module
    from streamer_kernels.attention import AttentionPicker

    def bad(q, k, v, starts, **kw):  # noqa: ANN001, ANN202 - the kernel's signature
        if broken == "raises":
            raise RuntimeError("no kernel image for this card")
        return torch.zeros_like(q)

    monkeypatch.setattr(module, "prompt_attention", bad)
    k, v = _prompt_kv(1, 48, 2, 32, [6], torch.float32)
    q = torch.randn(1, 20, 2, 32)
    picker = AttentionPicker()
    out = picker.prompt(q, k, v, _starts(k, v))
    assert_matches(out, prompt_attention_ref(q, k, v), torch.float32, "fallback", rtol=1e-4, atol=1e-4)
    assert list(picker.prompt_ok.values()) == [False]
    assert "attending to every key" in caplog.text


@needs_gpu
@pytest.mark.parametrize("tokens", [1, 21, 130, 511, 512])
def test_w1_cross_attention_on_the_card(tokens):
    """W1's shapes: 1560 queries, 12 heads x 128, a 512-token prompt padded after `tokens` tokens."""
    k, v = _prompt_kv(1, 512, 12, 128, [tokens], torch.bfloat16)
    q = torch.randn(1, 1560, 12, 128).to(torch.bfloat16)
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    starts = _starts(k, v)
    assert starts.item() == min(tokens, 511)
    out = prompt_attention(q, k, v, starts)
    assert_matches(out, prompt_attention_ref(q, k, v), torch.bfloat16, f"{tokens} tokens", rtol=2e-2, atol=2e-2)


_COMPILE_FOR_SM90 = """
import os
os.environ["TRITON_INTERPRET"] = "0"  # real compilation: no GPU is needed to compile for one
from triton.compiler import ASTSource, compile
from triton.backends.compiler import GPUTarget
import streamer_kernels.prompt_attention as K

fn = K._prompt_attn_kernel
names = fn.arg_names
types = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "Probs": "*bf16", "Starts": "*i32",
         "qk_scale": "fp32"}
div16 = [n for n in names if n in types and n != "qk_scale"] + [n for n in names if n[0] == "s" and n != "Sq"]
attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div16}
# prompt_attention's default tile, the bench's other one, and the default with the weights for the fold
for block_m, warps, fold in ((64, 4, 0), (128, 8, 0), (64, 4, 128)):
    cx = {"BLOCK_M": block_m, "BLOCK_N": 64, "HEAD_DIM": 128, "FOLD_KEYS": fold, "FOLD_BLOCK": max(16, fold),
          "KEY_STEP": 32, "F32": False}
    sig = {n: ("constexpr" if n in cx else types.get(n, "i32")) for n in names}
    k = compile(
        ASTSource(fn, sig, constexprs={(names.index(n),): v for n, v in cx.items()}, attrs=attrs),
        target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 2},
    )
    ptx = k.asm["ptx"]
    assert "ld.local" not in ptx, f"register spills at {block_m} rows, fold {fold}"
    assert "wgmma" in ptx, f"no Hopper tensor-core product at {block_m} rows, fold {fold}"
    print("compiled", block_m, fold, k.metadata.shared)
"""


@pytest.mark.slow
def test_the_kernel_compiles_for_hopper():
    """On CPU too: W1's config compiles for sm_90 with wgmma and no spills. With this Python's Triton;
    `tools/device/compile_check.sh` runs it with the device's."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert run.stdout.count("compiled") == 3, run.stdout
