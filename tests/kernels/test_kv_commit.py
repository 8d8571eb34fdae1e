"""kernels/kv_commit.py against its plain-torch reference (advanced indexing)."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import needs_gpu, small_device

from streamer_kernels.kv_commit import commit_frame, commit_frame_ref


def _case(layers: int, heads: int, slots: int, tokens: int, d: int, dtype: torch.dtype, device: str, band: int):
    g = torch.Generator().manual_seed(5)
    storage = torch.randn(2, layers, 1, heads, slots * tokens, d, generator=g).to(dtype).to(device)
    dest = torch.randint(0, slots - 1, (layers,), generator=g).to(device)  # the staged slot is the last
    ang = torch.rand(layers, d // 2, generator=g, dtype=torch.float64) * 6
    ang[:, band:] = 0  # pairs past the time band: a plain copy
    ang[0] = 0  # a layer that keeps its position: a plain copy
    return storage, dest, ang.cos().float().to(device), ang.sin().float().to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [7, 32, 45])
def test_commit_matches_advanced_indexing(dtype: torch.dtype, tokens: int) -> None:
    layers, slots, d, band = 3, 5, 16, 3
    storage, dest, cos, sin = _case(layers, 2, slots, tokens, d, dtype, small_device(), band)
    before = storage.clone()
    got, want = storage.clone(), storage.clone()
    commit_frame(got, slots - 1, dest, cos, sin, tokens)
    commit_frame_ref(want, slots - 1, dest, cos, sin, tokens)
    frames = got.unflatten(4, (-1, tokens))
    rotated = torch.zeros_like(frames, dtype=torch.bool)
    for layer in range(1, layers):
        rotated[0, layer, :, :, int(dest[layer]), :, : 2 * band] = True
    rotated = rotated.flatten(4, 5)
    # copies are exact; rotated keys round once to the cache's dtype (the interpreter truncates to bf16;
    # compiled, x * c - y * s may become one fused multiply-add: an fp32 ulp)
    assert torch.equal(got[~rotated], want[~rotated])
    tol = (1e-6 if storage.is_cuda else 0.0) if dtype == torch.float32 else 2**-7
    torch.testing.assert_close(got[rotated], want[rotated], rtol=tol, atol=tol)
    untouched = torch.ones_like(frames, dtype=torch.bool)
    for layer in range(layers):
        untouched[:, layer, :, :, int(dest[layer])] = False
    assert torch.equal(got[untouched.flatten(4, 5)], before[untouched.flatten(4, 5)])


def test_bad_shapes_are_refused() -> None:
    storage, dest, cos, sin = _case(2, 1, 3, 4, 8, torch.float32, small_device(), 1)
    with pytest.raises(ValueError, match="dest"):
        commit_frame(storage, 2, dest[:1], cos, sin, 4)
    with pytest.raises(ValueError, match="whole slots"):
        commit_frame(storage, 2, dest, cos, sin, 5)
    with pytest.raises(ValueError, match="contiguous"):
        commit_frame(storage.transpose(-1, -2), 2, dest, cos, sin, 4)


@needs_gpu
def test_commit_at_w1_size_on_the_gpu() -> None:
    """wan-1.3b at W1: 30 layers x 12 heads, 1560 tokens a frame, head dim 128, time band 44 dims."""
    storage, dest, cos, sin = _case(30, 12, 4, 1560, 128, torch.bfloat16, "cuda", 22)
    got, want = storage.clone(), storage.clone()
    commit_frame(got, 3, dest, cos, sin, 1560)
    commit_frame_ref(want, 3, dest, cos, sin, 1560)
    torch.testing.assert_close(got, want, rtol=2**-7, atol=2**-7)
    assert torch.equal(got[1], want[1])  # values: copied bit for bit


_COMPILE_FOR_SM90 = """
import os
os.environ["TRITON_INTERPRET"] = "0"  # real compilation: no GPU is needed to compile for one
from triton.compiler import ASTSource, compile
from triton.backends.compiler import GPUTarget
import streamer_kernels.kv_commit as K

fn = K._commit_kernel
names = fn.arg_names
types = {"KV": "*bf16", "DEST": "*i64", "COS": "*fp32", "SIN": "*fp32"}
cx = {"D": 128, "BLOCK_T": K._BLOCK_T}
sig = {n: ("constexpr" if n in cx else types.get(n, "i32")) for n in names}
# what the JIT knows at W1: 16-byte aligned pointers and a slot stride divisible by 16
attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("KV", "DEST", "COS", "SIN", "slot_elems")}
k = compile(
    ASTSource(fn, sig, constexprs={(names.index(n),): v for n, v in cx.items()}, attrs=attrs),
    target=GPUTarget("cuda", 90, 32), options={"num_warps": 4},
)
ptx = k.asm["ptx"]
assert "ld.local" not in ptx, "register spills"
assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx, "K/V rows not moved in 16-byte accesses"
print("compiled")
"""


@pytest.mark.slow
def test_the_commit_kernel_compiles_for_hopper_with_16_byte_accesses() -> None:
    """On CPU too: at W1's head dim the kernel moves K/V in 16-byte loads and stores, without spills."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "compiled" in run.stdout
