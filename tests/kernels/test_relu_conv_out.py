"""kernels/relu_conv_out.py against its fp32 reference (interpreter on CPU, compiled on a GPU)."""

from __future__ import annotations

import pytest
import torch
from kernel_asserts import assert_matches, needs_gpu, small_device

from streamer_kernels.relu_conv_out import pack_weight, relu_conv3x3, relu_conv3x3_ref


def _case(t: int, c: int, o: int, h: int, w: int, dtype: torch.dtype, device: str, bias: bool = True):
    g = torch.Generator().manual_seed(t * 100 + c + h * w)
    x = torch.randn(t, c, h, w, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(o, c, 3, 3, generator=g) / (9 * c) ** 0.5).to(device=device, dtype=dtype)
    b = torch.randn(o, generator=g).to(device=device, dtype=dtype) if bias else None
    return x, wt, b


# widths past one block of columns and not a multiple of it; 1-row and 1-column images (all padding)
@pytest.mark.parametrize("t,c,o,h,w", [(2, 16, 3, 5, 7), (1, 32, 3, 3, 130), (3, 16, 16, 1, 9), (1, 16, 5, 4, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_relu_then_conv(t, c, o, h, w, dtype):
    x, wt, b = _case(t, c, o, h, w, dtype, small_device())
    taps, bias = pack_weight(wt, b, dtype)
    got = relu_conv3x3(x, taps, bias, o)
    assert got.shape == (t, o, h, w) and got.is_contiguous()
    # bf16: inputs and weights are bf16 either way; the sum is fp32 in both, rounded once at the end
    assert_matches(got, relu_conv3x3_ref(x, wt, b).to(dtype), dtype)


def test_relu_is_applied_and_bias_is_optional():
    """All-negative input: relu makes it zero, so the output is the bias alone (or zero without one)."""
    x, wt, b = _case(1, 16, 3, 4, 6, torch.float32, small_device())
    x = -x.abs() - 1
    taps, bias = pack_weight(wt, b, torch.float32)
    torch.testing.assert_close(relu_conv3x3(x, taps, bias, 3), b.view(1, 3, 1, 1).expand(1, 3, 4, 6).float())
    taps, bias = pack_weight(wt, None, torch.float32)
    assert relu_conv3x3(x, taps, bias, 3).abs().max() == 0


def test_bad_inputs_are_refused():
    x, wt, b = _case(1, 16, 3, 4, 6, torch.float32, small_device())
    taps, bias = pack_weight(wt, b, torch.float32)
    with pytest.raises(ValueError, match="channels_last"):
        relu_conv3x3(x.contiguous(), taps, bias, 3)
    with pytest.raises(ValueError, match="at most 16"):
        pack_weight(torch.zeros(17, 16, 3, 3), None, torch.float32)
    with pytest.raises(ValueError, match="channels"):
        relu_conv3x3(x, taps.to(torch.bfloat16), bias, 3)


@needs_gpu
def test_w1_decoder_end_on_the_gpu():
    """W1's size: [4, 64, 480, 832] bf16 -> 3 channels."""
    x, wt, b = _case(4, 64, 3, 480, 832, torch.bfloat16, "cuda")
    taps, bias = pack_weight(wt, b, torch.bfloat16)
    assert_matches(relu_conv3x3(x, taps, bias, 3), relu_conv3x3_ref(x, wt, b).to(torch.bfloat16), torch.bfloat16)


_COMPILE_FOR_SM90 = """
import os
os.environ["TRITON_INTERPRET"] = "0"  # real compilation: no GPU is needed to compile for one
from triton.compiler import ASTSource, compile
from triton.backends.compiler import GPUTarget
import streamer_kernels.relu_conv_out as K

fn = K._relu_conv3x3_kernel
names = fn.arg_names
types = {"X": "*bf16", "Wt": "*bf16", "Bias": "*fp32", "Out": "*bf16"}
cx = {"CIN": 64, "COUT": 3, "CO_PAD": K._CO_PAD, "BLOCK_W": K._BLOCK_W, "F32": False}
sig = {n: ("constexpr" if n in cx else types.get(n, "i32")) for n in names}
# what the JIT knows at W1: 16-byte aligned pointers, strides divisible by 16 (the pixel stride is 64)
div16 = ("X", "Wt", "Bias", "Out", "W", "sxt", "sxh", "sxw", "sot", "soc", "soh")
attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div16}
k = compile(
    ASTSource(fn, sig, constexprs={(names.index(n),): v for n, v in cx.items()}, attrs=attrs),
    target=GPUTarget("cuda", 90, 32), options={"num_warps": 4},
)
ptx = k.asm["ptx"]
assert "ld.local" not in ptx, "register spills"
assert "ld.global.v4" in ptx, "input pixels not read in 16-byte accesses"
assert "mma" in ptx, "no tensor-core product"
print("compiled", k.metadata.shared)
"""


@pytest.mark.slow
def test_the_kernel_compiles_for_hopper_with_16_byte_loads_and_tensor_cores() -> None:
    """On CPU too: at W1's width (64 channels) the input is read in 16-byte loads into mma products. With
    this Python's Triton; `tools/device/compile_check.sh` runs it with the device's (older) one."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "compiled" in run.stdout
