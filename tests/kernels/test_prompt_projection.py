"""kernels/prompt_projection.py: the o projection with a short prompt's values folded in (P @ U) equals the
plain projection of the attention over every key, in the interpreter at tiny sizes and on the card at W1's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_asserts import assert_matches, needs_gpu, small_device
from test_prompt_attention import _prompt_kv, _starts

from streamer.model.cache import fold_values
from streamer_kernels.prompt_attention import prompt_attention, prompt_attention_ref
from streamer_kernels.prompt_projection import prompt_projection, prompt_projection_ref


def _cross_attention(q, k, v, weight, bias, fold, block_m=16, block_n=16):  # noqa: ANN001, ANN202
    """The fast path's pair: the prompt kernel (weights where they fold) and the projection."""
    B, Sq, H, D = q.shape
    starts = _starts(k, v)
    # NaN where prompt_attention writes nothing: the projection must read only what it writes
    probs = torch.full((B, Sq, H, fold), float("nan"), dtype=q.dtype, device=q.device)
    o = prompt_attention(q, k, v, starts, block_m=block_m, block_n=block_n, probs=probs)
    u = fold_values(v.transpose(1, 2), weight, fold)  # v as CrossAttnKV holds it: [B, H, L, D]
    return prompt_projection(probs, u, o.view(B, Sq, H * D), weight, bias, starts, block_m=block_m, block_n=32)


def _want(q, k, v, weight, bias):  # noqa: ANN001, ANN202
    B, Sq, H, D = q.shape
    return F.linear(prompt_attention_ref(q, k, v).reshape(B, Sq, H * D), weight.float(), bias.float())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize(
    "B, Sq, L, H, tokens, fold",
    [
        (1, 5, 64, 2, [3], 32),  # folded: 4 distinct keys, one step of 32 per head
        (2, 40, 80, 2, [31, 32], 32),  # the last key that folds; one key more: the plain projection
        (2, 33, 48, 3, [0, 47], 32),  # every key a copy (one key, folded); no copies (plain)
        (1, 17, 90, 2, [40], 64),  # 41 keys: two steps per head of the fold's two
        (1, 9, 100, 3, [70], 128),  # 71 keys: three steps per head of four
    ],
)
def test_folded_projection_equals_the_projection_of_every_key(B, Sq, L, H, tokens, fold, dtype):
    dev = small_device()
    g = torch.Generator().manual_seed(3)
    k, v = _prompt_kv(B, L, H, 32, tokens, dtype)
    q = torch.randn(B, Sq, H, 32, generator=g).to(dtype)
    weight = (torch.randn(48, H * 32, generator=g) / (H * 32) ** 0.5).to(dtype)
    bias = torch.randn(48, generator=g).to(dtype)
    want = _want(q, k, v, weight, bias)
    out = _cross_attention(*(t.to(dev) for t in (q, k, v, weight, bias)), fold)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-5
    assert out.dtype == dtype
    assert_matches(out, want, dtype, f"{tokens} tokens, fold {fold}", rtol=tol, atol=tol)


def test_unused_inputs_are_not_read():
    """Per batch row only one of P and O is read, and of P and U only the key steps up to n's: NaN in the
    rest changes nothing. (A folded row's weights from n + 1 to the end of n's step are zeros, as
    prompt_attention writes them.)"""
    dev = small_device()
    g = torch.Generator().manual_seed(4)
    B, Sq, H, D, fold, N = 2, 20, 2, 16, 64, 24
    starts = torch.tensor([5, 64], dtype=torch.int32)  # row 0 folds (keys 0..5: step 0 of 2), row 1 does not
    probs = torch.rand(B, Sq, H, fold, generator=g)
    u = torch.randn(B, H, fold, N, generator=g)
    o = torch.randn(B, Sq, H * D, generator=g)
    weight, bias = torch.randn(N, H * D, generator=g), torch.randn(N, generator=g)
    probs[0, :, :, 6:] = 0.0
    want = prompt_projection_ref(probs, u, o, weight, bias, starts)
    probs[0, :, :, 32:], u[0, :, 32:], probs[1], u[1], o[0] = (float("nan"),) * 5
    out = prompt_projection(*(t.to(dev) for t in (probs, u, o, weight, bias, starts)), block_m=16, block_n=16)
    assert_matches(out, want, torch.float32, "NaN in the unread parts")


def test_fold_values_and_bad_shapes():
    g = torch.Generator().manual_seed(5)
    v = torch.randn(1, 2, 10, 8, generator=g)
    weight = torch.randn(12, 16, generator=g)
    u = fold_values(v, weight, 16)
    assert u.shape == (1, 2, 16, 12)
    # key j of head h projected alone: the row that puts v[h, j] in head h's slot of the input, zeros elsewhere
    x = torch.zeros(16)
    x[8:] = v[0, 1, 4]
    torch.testing.assert_close(u[0, 1, 4], weight @ x, rtol=1e-5, atol=1e-5)
    assert u[0, :, 10:].abs().max() == 0  # past the prompt's L positions: zeros
    probs, o = torch.zeros(1, 3, 2, 16), torch.zeros(1, 3, 16)
    with pytest.raises(ValueError, match="probs"):
        prompt_projection(probs, u[:, :, :8], o, weight, torch.zeros(12), torch.zeros(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="contiguous"):
        prompt_projection(probs, u, o, weight.t().contiguous().t(), torch.zeros(12), torch.zeros(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="multiple of 32"):  # F in whole key steps
        prompt_projection(probs, u, o, weight, torch.zeros(12), torch.zeros(1, dtype=torch.int32))
    kv = torch.zeros(1, 10, 2, 16)
    with pytest.raises(ValueError, match="multiple of 32"):
        prompt_attention(torch.zeros(1, 3, 2, 16), kv, kv, torch.zeros(1, dtype=torch.int32), probs=probs)


@needs_gpu
@pytest.mark.parametrize("tokens", [1, 6, 40, 127, 128, 512])
def test_w1_cross_attention_projected_on_the_card(tokens):
    """W1's shapes: 1560 queries, 12 heads x 128, a 512-token prompt padded after `tokens` tokens, and the
    1536 x 1536 o projection; the fast path's fold of 128 keys (folded up to 127 tokens, plain after)."""
    g = torch.Generator().manual_seed(6)
    k, v = _prompt_kv(1, 512, 12, 128, [tokens], torch.bfloat16)
    q = torch.randn(1, 1560, 12, 128, generator=g).to(torch.bfloat16)
    weight = (torch.randn(1536, 1536, generator=g) / 1536**0.5).to(torch.bfloat16)
    bias = torch.randn(1536, generator=g).to(torch.bfloat16)
    want = _want(q, k, v, weight, bias)
    out = _cross_attention(*(t.cuda() for t in (q, k, v, weight, bias)), 128, block_m=64, block_n=64)
    assert_matches(out, want, torch.bfloat16, f"{tokens} tokens", rtol=2e-2, atol=2e-2)


_COMPILE_FOR_SM90 = """
import os
os.environ["TRITON_INTERPRET"] = "0"  # real compilation: no GPU is needed to compile for one
from triton.compiler import ASTSource, compile
from triton.backends.compiler import GPUTarget
import streamer_kernels.prompt_projection as K

fn = K._prompt_proj_kernel
names = fn.arg_names
types = {n: "*bf16" for n in ("P", "U", "Attn", "W", "Bias", "Out")} | {"Starts": "*i32"}
div16 = [n for n in names if n in types] + [n for n in names if n[0] == "s" and n != "Sq"] + ["N", "K"]
attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div16}
cx = {"HEADS": 12, "FOLD_KEYS": 128, "BLOCK_M": 128, "BLOCK_N": 128, "KEY_STEP": 32, "BLOCK_K": 64, "F32": False}
sig = {n: ("constexpr" if n in cx else types.get(n, "i32")) for n in names}
k = compile(
    ASTSource(fn, sig, constexprs={(names.index(n),): v for n, v in cx.items()}, attrs=attrs),
    target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_stages": 3},
)
ptx = k.asm["ptx"]
assert "ld.local" not in ptx, "register spills"
assert "wgmma" in ptx, "no Hopper tensor-core product"
print("compiled", k.metadata.shared)
"""


@pytest.mark.slow
def test_the_kernel_compiles_for_hopper():
    """On CPU too: W1's config compiles for sm_90 with wgmma and no spills. With this Python's Triton;
    `tools/device/compile_check.sh` runs it with the device's."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "compiled" in run.stdout, run.stdout
