"""FP8 linear layers (`model.dtype = "fp8"`): e4m3 weights, one scale per output channel, and per-token
activation scales, multiplied by `torch._scaled_mm` on cards with FP8 tensor cores.

Which layers: every Linear inside the DiT's blocks (self-attention q, k, v, o; cross-attention q, k, v, o;
the FFN's two) - over 99 % of the DiT's matmul FLOPs per chunk. The cross-attention k/v run once per
prompt, not per chunk; they are quantized too so every block holds its weights in one byte each. The
patch embedding, the text and time embeddings, the time projection and the head stay as they are
(upstream keeps time embedding, modulation and head in fp32; they are tiny). Norms, modulation,
attention and the residual stream are untouched: only the matmuls' inputs are quantized.

Numerics: a weight row [K] (one output channel) is scaled so its largest magnitude maps to e4m3's
largest finite value (448); an activation row [K] (one token) likewise, at run time. The product of two
such rows is exact up to e4m3 rounding of each element (3 mantissa bits: a relative error of at most
2^-4 per element, averaging out over K), then rescaled by the two scales in fp32 and rounded to the
output dtype. On a CPU the same arithmetic runs as an emulation (dequantize, then an fp32 matmul), so
the path's numerics are testable without a GPU; `torch._scaled_mm` is the kernel only on CUDA.

The card check (`fp8_unavailable`): FP8 tensor cores exist from compute capability 8.9 (Ada: RTX 40xx,
L4, L40; Hopper: H100, H200); `_scaled_mm` with per-row scales runs on both (PyTorch's rowwise
kernels for sm89 and sm90). Elsewhere `model.dtype = "fp8"` is refused with the reason. `auto` never
picks fp8: it changes the output (docs/benchmarks.md reports the measured PSNR against bf16).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
MIN_SCALE = 1e-12  # an all-zero row gets this scale (its values stay 0) instead of a division by zero
FP8_CAPABILITY = (8, 9)
# Hopper's fast accumulation (fewer promotions of the fp32 accumulator) for the forward matmul: what
# torchao's float8 inference uses for the output GEMM; measured against the bf16 path by the PSNR gate.
FAST_ACCUM = True

Quantizer = Callable[[Tensor], tuple[Tensor, Tensor]]


def quantize_weight(w: Tensor) -> tuple[Tensor, Tensor]:
    """w [N, K] (any float dtype) -> (e4m3 [N, K], fp32 scale [N]): one scale per output channel (row),
    so that w ≈ q * scale[:, None] with each row's largest |value| mapped to 448."""
    wf = w.detach().float()
    scale = wf.abs().amax(dim=1).clamp(min=MIN_SCALE) / E4M3_MAX
    return (wf / scale[:, None]).to(E4M3), scale


def quantize_activation(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [M, K] -> (e4m3 [M, K], fp32 scale [M, 1]): one scale per token (row), taken at run time.

    The eager path's quantizer and the reference of the fused kernels (streamer_kernels.fp8_quant). Values
    are multiplied by one reciprocal per row, 448 / amax, rather than divided by the scale: an IEEE
    division per element cost the GPU kernels more than their memory traffic (H100, 2026-12-07)."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp(min=MIN_SCALE)
    qmax = torch.full_like(amax, E4M3_MAX)  # a tensor: torch computes `448 / t` as 448 * (1 / t), not a division
    return (x.float() * (qmax / amax)).to(E4M3), amax / qmax


def dequantize(q: Tensor, scale: Tensor) -> Tensor:
    """e4m3 values times their scale (broadcast: [N] scales rows of a weight, [M, 1] rows of x), in fp32."""
    return q.float() * (scale[:, None] if scale.dim() == 1 else scale)


def scaled_mm_ref(
    xq: Tensor, x_scale: Tensor, wq: Tensor, w_scale: Tensor, bias: Tensor | None, out_dtype: torch.dtype
) -> Tensor:
    """The CPU emulation of `torch._scaled_mm` with row-wise scales: dequantize both, fp32 matmul.

    xq [M, K], x_scale [M, 1], wq [N, K] (row-major, the Linear's layout), w_scale [1, N]; -> [M, N]."""
    y = dequantize(xq, x_scale) @ dequantize(wq, w_scale.view(-1)).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def scaled_mm(
    xq: Tensor, x_scale: Tensor, wq: Tensor, w_scale: Tensor, bias: Tensor | None, out_dtype: torch.dtype
) -> Tensor:
    """The FP8 matmul: `torch._scaled_mm` on CUDA, `scaled_mm_ref` elsewhere (same arguments).

    `_scaled_mm` wants mat2 column-major [K, N]: `wq.t()` of the row-major [N, K] weight is exactly that;
    per-row scales are fp32 [M, 1] and [1, N]; the output (and the bias) are bf16 on this path."""
    if xq.device.type != "cuda":
        return scaled_mm_ref(xq, x_scale, wq, w_scale, bias, out_dtype)
    return scaled_mm_cublas(xq, x_scale, wq, w_scale, bias, out_dtype)


def scaled_mm_cublas(
    xq: Tensor, x_scale: Tensor, wq: Tensor, w_scale: Tensor, bias: Tensor | None, out_dtype: torch.dtype
) -> Tensor:
    """`torch._scaled_mm`, or `scaled_mm_dequantized` for a problem cuBLASLt refused."""
    shape = (xq.shape[0], wq.shape[0], wq.shape[1], bias is not None)
    if shape not in _REFUSED:
        try:
            return torch._scaled_mm(
                xq, wq.t(), scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=out_dtype, use_fast_accum=FAST_ACCUM
            )
        except RuntimeError as e:
            # cuBLASLt has no row-wise-scaled kernel for some small problems (seen on an H100, torch 2.11: wan-1.3b's
            # FFN down-projection at 128x128, M = 64, K = 8960: CUBLAS_STATUS_NOT_SUPPORTED from its heuristic). It
            # says so on the first (eager, warm-up) call, before any graph capture: that shape computes in bf16.
            if "NOT_SUPPORTED" not in str(e):
                raise
            _REFUSED.add(shape)
    return scaled_mm_dequantized(xq, x_scale, wq, w_scale, bias, out_dtype)


# (M, N, K, bias) problems cuBLASLt refused in this process; they take `scaled_mm_dequantized`.
_REFUSED: set[tuple[int, int, int, bool]] = set()


def scaled_mm_dequantized(
    xq: Tensor, x_scale: Tensor, wq: Tensor, w_scale: Tensor, bias: Tensor | None, out_dtype: torch.dtype
) -> Tensor:
    """The same product through a dequantized matmul in `out_dtype` (the same e4m3 values and scales, the
    rounding of a bf16 matmul): for the problems `torch._scaled_mm` refuses."""
    x = (xq.to(torch.float32) * x_scale).to(out_dtype)
    w = (wq.to(torch.float32) * w_scale.view(-1, 1)).to(out_dtype)
    return F.linear(x, w, None if bias is None else bias.to(out_dtype))


class FP8Linear(nn.Module):
    """A Linear with e4m3 weights [out, in] and per-output-channel scales; inputs quantized per token.

    `compute_dtype` is the dtype it takes and returns (the model's: bf16 on a GPU; any float on a CPU,
    where it runs the emulation). Built from a loaded Linear by `from_linear`, never trained."""

    weight: Tensor
    scale: Tensor
    bias: Tensor | None

    def __init__(self, weight: Tensor, scale: Tensor, bias: Tensor | None, compute_dtype: torch.dtype) -> None:
        super().__init__()
        if weight.dtype != E4M3 or weight.dim() != 2:
            raise ValueError(f"weight must be 2-D {E4M3}, got {weight.dtype} {tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = compute_dtype
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale.float().reshape(1, -1))  # [1, out]: _scaled_mm's scale_b
        self.register_buffer("bias", None if bias is None else bias.to(compute_dtype))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FP8Linear:
        q, scale = quantize_weight(linear.weight)
        return cls(q, scale, None if linear.bias is None else linear.bias.detach(), linear.weight.dtype)

    def forward(self, x: Tensor, *, bias: bool = True, quantize: Quantizer = quantize_activation) -> Tensor:
        """x [..., in] (compute dtype) -> [..., out]; `bias=False` leaves the bias to a fused epilogue,
        `quantize` is the per-token quantizer (the fast path passes its fused kernel)."""
        if x.device.type == "cuda" and self.compute_dtype != torch.bfloat16:
            raise RuntimeError(f"FP8 matmuls on CUDA compute in bfloat16, this layer in {self.compute_dtype}")
        xq, x_scale = quantize(x.reshape(-1, self.in_features))
        return self.quantized_input(xq, x_scale, x.shape[:-1], bias=bias)

    def quantized_input(self, xq: Tensor, x_scale: Tensor, lead: torch.Size, *, bias: bool = True) -> Tensor:
        """The layer on an input already quantized per token (xq [M, in] e4m3, x_scale [M, 1]), as a
        kernel that quantizes its own output hands it over; `lead` is the input's shape before `in`."""
        y = scaled_mm(xq, x_scale, self.weight, self.scale, self.bias if bias else None, self.compute_dtype)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3, {self.compute_dtype}"


def dense_weight(layer: nn.Module) -> Tensor:
    """The weight [out, in] a Linear holds, or an FP8Linear's dequantized in fp32 (its e4m3 values times
    their scales): for the one place that needs a layer as a dense matrix (the folded cross-attention)."""
    if isinstance(layer, FP8Linear):
        return dequantize(layer.weight, layer.scale.view(-1))
    weight = layer.weight
    assert isinstance(weight, Tensor)
    return weight


def matmul(x: Tensor, layer: nn.Module, *, bias: bool = True, quantize: Quantizer = quantize_activation) -> Tensor:
    """x through a Linear or an FP8Linear, optionally without its bias: the fast path's one matmul entry,
    so the FP8 path is not written twice. x [..., in] -> [..., out]."""
    if isinstance(layer, FP8Linear):
        return layer(x, bias=bias, quantize=quantize)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"expected a Linear or FP8Linear, got {type(layer).__name__}")
    return F.linear(x, layer.weight, layer.bias if bias else None)


def input_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a Linear (its weight's) or an FP8Linear (its compute dtype) takes its input in."""
    if isinstance(layer, FP8Linear):
        return layer.compute_dtype
    weight = layer.weight
    assert isinstance(weight, Tensor)
    return weight.dtype


def fuse(layers: list[nn.Module]) -> nn.Module:
    """One layer whose output is the given layers' outputs side by side (q, k, v -> qkv), same kind as
    they are. The given layers' weights (and scales, biases) become views of the fused buffers, so a
    later weight update of one of them still reaches the fused matmul."""
    names = ("weight", "scale", "bias") if all(isinstance(m, FP8Linear) for m in layers) else ("weight", "bias")
    if not all(isinstance(m, FP8Linear if "scale" in names else nn.Linear) for m in layers):
        raise TypeError("fuse needs layers of one kind (all nn.Linear or all FP8Linear)")
    fused: dict[str, Tensor] = {}
    for name in names:
        parts: list[Tensor] = [getattr(m, name).data for m in layers]
        dim = 1 if name == "scale" else 0  # scales are [1, out]
        fused[name] = torch.cat(parts, dim=dim)
        start = 0
        for m, part in zip(layers, parts, strict=True):
            n = part.shape[dim]
            getattr(m, name).data = fused[name].narrow(dim, start, n)
            start += n
    if "scale" in names:
        first = layers[0]
        assert isinstance(first, FP8Linear)
        return FP8Linear(fused["weight"], fused["scale"], fused["bias"], first.compute_dtype)
    out = nn.Linear(fused["weight"].shape[1], fused["weight"].shape[0], device="meta")
    out.weight, out.bias = nn.Parameter(fused["weight"], False), nn.Parameter(fused["bias"], False)
    return out


def to_fp8(module: nn.Module) -> int:
    """Replace every nn.Linear inside `module` by its FP8Linear (in place); returns how many."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, FP8Linear.from_linear(child))
                swapped += 1
    return swapped


def fp8_unavailable(device: torch.device) -> str | None:
    """Why `model.dtype = "fp8"` cannot run on `device` (None when it can)."""
    if device.type != "cuda":
        return f"fp8 needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9+), not {device}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return (
            f"{name} (compute capability {major}.{minor}) has no FP8 tensor cores; fp8 needs 8.9+ "
            "(RTX 40xx, L4, L40, H100, H200): use dtype = 'bfloat16'"
        )
    return None
