"""What FusedOps derives from weights is made once, not per call, and remade when the weights change in
place (a checkpoint loaded after the fast path was built): the affine LayerNorm (norm3) as a modulation,
its (b, w - 1), and an FP8 o projection's dequantized weight."""

from __future__ import annotations

import torch

from streamer.model.dit import build
from streamer.model.fast.ops import FusedOps
from streamer.model.ops import EAGER_OPS


def test_affine_norm_matches_eager_before_and_after_an_in_place_weight_change() -> None:
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the fused norm is a Triton kernel
    dit = build("tiny", device=dev)
    norm = dit.blocks[0].norm3
    ops = FusedOps(dit)
    x, y = torch.randn(1, 6, dit.cfg.dim, device=dev), torch.randn(1, 6, dit.cfg.dim, device=dev)
    gate = torch.rand(1, 6, dit.cfg.dim, device=dev)

    def both() -> None:
        want = EAGER_OPS.residual_affine_norm(x, y, gate, norm, torch.float32)
        got = ops.residual_affine_norm(x, y, gate, norm, torch.float32)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)

    def scale() -> torch.Tensor:
        return ops._derived[(id(norm), torch.float32)][1][1]

    both()
    first = scale()
    both()
    assert scale() is first  # made once
    with torch.no_grad():
        norm.weight.mul_(1.5)
        norm.bias.add_(0.25)
    both()  # remade: the version counters moved
    assert scale() is not first


def test_fp8_o_weight_is_dequantized_once_and_again_after_a_load() -> None:
    from streamer.model.fp8 import FP8Linear, dense_weight

    dit = build("tiny", device="cpu").to_fp8()
    o = dit.blocks[1].cross_attn.o
    assert isinstance(o, FP8Linear)
    ops = FusedOps(dit)
    first = ops._o_weight(o)
    assert torch.equal(first, dense_weight(o)) and ops._o_weight(o) is first
    with torch.no_grad():
        o.scale.mul_(2.0)
    again = ops._o_weight(o)
    assert again is not first and torch.equal(again, 2.0 * first)
