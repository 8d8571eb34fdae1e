"""The steps `FusedStream` (vae_fused.py, whose module doc says what each rewrite computes) builds a
TAEHV layer list from: frame regrouping, convs with cuDNN's fused epilogues, the MemBlock with its carried
state, the TPool / TGrow / upsampling folds, and the decoder's fused end."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.vae import MemBlock, TGrow, TPool
from streamer_kernels.backend import INTERPRET
from streamer_kernels.relu_conv_out import pack_weight, relu_conv3x3
from streamer_kernels.shift_add_relu import add_relu_, shift_add_relu

Step = Callable[[Tensor], Tensor]


def stack_frames(h: Tensor, s: int, nhwc: bool) -> Tensor:
    """[T, C, H, W] -> [T/s, s*C, H, W], the frames of a group consecutive on channels. NCHW: a view;
    NHWC: one NHWC -> NHWC copy (`reshape` on NHWC memory would silently copy to NCHW, and every later
    conv would pay cuDNN's layout conversions)."""
    t, c, hh, ww = h.shape
    if s == 1:
        return h
    if not nhwc:
        return h.reshape(t // s, s * c, hh, ww)
    return _grouped(h, s).reshape(t // s, hh, ww, s * c).permute(0, 3, 1, 2)


def _grouped(h: Tensor, s: int) -> Tensor:
    """NHWC [T, C, H, W] -> a [T/s, H, W, s, C] view: each pixel's frames of a group, then channels."""
    t, c, hh, ww = h.shape
    return h.permute(0, 2, 3, 1).reshape(t // s, s, hh, ww, c).permute(0, 2, 3, 1, 4)


def split_frames(y: Tensor, s: int, nhwc: bool) -> Tensor:
    """[T, s*C, H, W] -> [T*s, C, H, W], channel groups becoming consecutive frames (the inverse)."""
    t, sc, hh, ww = y.shape
    if s == 1:
        return y
    if not nhwc:
        return y.reshape(t * s, sc // s, hh, ww)
    raw = y.permute(0, 2, 3, 1).reshape(t, hh, ww, s, sc // s).permute(0, 3, 1, 2, 4)
    return raw.reshape(t * s, hh, ww, sc // s).permute(0, 3, 1, 2)


class Convs:
    """conv (+ReLU) and conv + residual (+ReLU): cuDNN's fused kernels (cudnn, on CUDA tensors) or conv
    then in-place ops (the same values; how the cudnn variant's structure runs on a CPU)."""

    def __init__(self, fusion: str) -> None:
        self.cudnn, self.triton = fusion == "cudnn", fusion == "triton"

    def relu(self, x: Tensor, w: Tensor, b: Tensor | None, stride: int = 1, padding: int = 1) -> Tensor:
        if self.cudnn and x.is_cuda:
            return torch.cudnn_convolution_relu(x, w, b, (stride,) * 2, (padding,) * 2, (1, 1), 1)
        return F.conv2d(x, w, b, stride, padding).relu_()

    def into(self, x: Tensor, w: Tensor, out: Tensor) -> None:
        """out <- conv(x, w), 3x3 stride 1, no bias; cuDNN writes it in place (a frame-offset view of a
        buffer is fine: it is contiguous in the buffer's layout)."""
        if self.cudnn and x.is_cuda:
            cudnn = torch.backends.cudnn
            torch.ops.aten.cudnn_convolution.out(
                x, w, (1, 1), (1, 1), (1, 1), 1, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, out=out
            )
        else:
            out.copy_(F.conv2d(x, w, None, 1, 1))

    def add_relu(self, x: Tensor, w: Tensor, b: Tensor | None, z: Tensor) -> Tensor:
        """relu(conv(x) + b + z), 3x3 stride 1."""
        if self.cudnn and x.is_cuda:
            return torch.cudnn_convolution_add_relu(x, w, z, 1.0, b, (1, 1), (1, 1), (1, 1), 1)
        y = F.conv2d(x, w, b, 1, 1)
        if self.triton and y.stride() == z.stride() and y.dtype == z.dtype:
            return add_relu_(y, z)
        return y.add_(z).relu_()


class ConvStep:
    def __init__(self, convs: Convs, w: Tensor, b: Tensor | None, stride: int, padding: int, relu: bool) -> None:
        self.convs, self.w, self.b, self.stride, self.padding, self.relu = convs, w, b, stride, padding, relu

    def __call__(self, x: Tensor) -> Tensor:
        if self.relu:
            return self.convs.relu(x, self.w, self.b, self.stride, self.padding)
        return F.conv2d(x, self.w, self.b, self.stride, self.padding)


class PoolConv(ConvStep):
    """TPool's 1x1 conv composed into the conv after it, over the frames stacked on channels
    (`stacked`: the step before wrote them so, a `StackedFrameConv`)."""

    def __init__(
        self, convs: Convs, pool: TPool, conv: nn.Conv2d, relu: bool, nhwc: bool, stacked: bool = False
    ) -> None:
        wp = pool.conv.weight[:, :, 0, 0].float()  # [n, s*n]
        w = torch.einsum("oikl,ij->ojkl", conv.weight.float(), wp)
        super().__init__(convs, like_param(w, conv.weight), conv.bias, conv.stride[0], int(conv.padding[0]), relu)  # type: ignore[arg-type]
        self.s, self.nhwc = (1 if stacked else pool.stride), nhwc

    def __call__(self, x: Tensor) -> Tensor:
        return super().__call__(stacked_input(x, self.s, self.nhwc))


def stacked_input(x: Tensor, s: int, nhwc: bool, out: Tensor | None = None) -> Tensor:
    """`stack_frames` for a TPool of stride s; NHWC with `out` ([T/s, H, W, C'] memory, C' >= s*C): the
    frames written into out's leading channels (the rest left as they are), out returned as [T/s, C', H, W]."""
    t, c, hh, ww = x.shape
    if t % s:
        raise ValueError(f"chunk of {t} frames at a TPool of stride {s}")
    if out is None:
        return stack_frames(x, s, nhwc)
    out[..., : s * c].view(t // s, hh, ww, s, c).copy_(_grouped(x, s))
    return out.permute(0, 3, 1, 2)


class StackedFrameConv(ConvStep):
    """A per-frame conv whose frames a TPool stacks next, run on its input frames stacked on channels
    with a block-diagonal weight: it writes the stacked layout itself (vae_fused.py's module doc)."""

    # NHWC: the stacked input's channels are padded with zeros to a multiple of this. cuDNN's tensor-core
    # convolutions want 16-byte pixels (8 bf16); with 6 channels (or TAEHV's own 3) it ran a generic
    # CUDA-core engine, 0.70 ms for W1's [2, 6, 480, 832] -> 128 channels on an H100 (2026-12-07).
    PAD_TO = 8

    def __init__(self, convs: Convs, conv: nn.Conv2d, relu: bool, s: int, nhwc: bool) -> None:
        o, i = conv.out_channels, conv.in_channels
        self.channels = -(-s * i // self.PAD_TO) * self.PAD_TO if nhwc else s * i
        w = conv.weight.new_zeros(s * o, self.channels, *conv.weight.shape[2:])
        for j in range(s):
            w[j * o : (j + 1) * o, j * i : (j + 1) * i] = conv.weight
        b = None if conv.bias is None else conv.bias.repeat(s)
        super().__init__(convs, like_param(w, conv.weight), b, conv.stride[0], int(conv.padding[0]), relu)  # type: ignore[arg-type]
        self.s, self.nhwc = s, nhwc
        self.padded: Tensor | None = None  # NHWC: the stacked input, its pad channels zeroed once

    def __call__(self, x: Tensor) -> Tensor:
        s, (t, c, hh, ww) = self.s, x.shape
        if s * c == self.channels:
            return super().__call__(stacked_input(x, s, self.nhwc))
        buf, shape = self.padded, (t // s, hh, ww, self.channels)
        if buf is None or buf.shape != shape or buf.dtype != x.dtype or buf.device != x.device:
            buf = self.padded = x.new_zeros(shape)
        return super().__call__(stacked_input(x, s, self.nhwc, out=buf))


class UpGrowConv(ConvStep):
    """Upsample, then TGrow's 1x1 conv composed into the conv after it (NCHW: the frames split as a view)."""

    def __init__(self, convs: Convs, up: nn.Upsample, grow: TGrow, conv: nn.Conv2d, relu: bool) -> None:
        s, n = grow.stride, grow.conv.in_channels
        wg = grow.conv.weight[:, :, 0, 0].float()  # [s*n, n]: frame k's channels are rows k*n:(k+1)*n
        wc = conv.weight.float()
        w = torch.cat([torch.einsum("oikl,ij->ojkl", wc, wg[k * n : (k + 1) * n]) for k in range(s)])
        b = None if conv.bias is None else conv.bias.repeat(s)
        super().__init__(convs, like_param(w, conv.weight), b, conv.stride[0], int(conv.padding[0]), relu)  # type: ignore[arg-type]
        self.s, self.scale = s, up.scale_factor

    def __call__(self, x: Tensor) -> Tensor:
        y = super().__call__(F.interpolate(x, scale_factor=self.scale, mode="nearest"))
        return split_frames(y, self.s, nhwc=False)


class Grow:
    """TGrow's 1x1 conv at the low resolution, then the frames split, then the nearest upsample (if any)."""

    def __init__(self, grow: TGrow, up: nn.Upsample | None, nhwc: bool) -> None:
        self.w, self.s, self.nhwc = grow.conv.weight, grow.stride, nhwc
        self.scale = None if up is None else up.scale_factor

    def __call__(self, x: Tensor) -> Tensor:
        y = split_frames(F.conv2d(x, self.w), self.s, self.nhwc)
        return y if self.scale is None else F.interpolate(y, scale_factor=self.scale, mode="nearest")


# Nearest 2x upsampling then a 3x3 conv (padding 1), along one axis: output row 2j reads input rows j-1
# (tap 0) and j (taps 1, 2); row 2j+1 reads j (taps 0, 1) and j+1 (tap 2). As a transposed conv with
# stride 2, padding 1 and 4 taps (output row 2i - 1 + k for input row i), tap k of it sums these taps.
_UP_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def upsampled_conv_as_transposed(w: Tensor) -> Tensor:
    """conv3x3(nearest_up2(x), w) == conv_transpose2d(x, result, stride=2, padding=1): [O, I, 3, 3] ->
    [I, O, 4, 4]. The upsampled input is never written, and each output pixel costs 4 taps, not 9."""
    acc = torch.promote_types(w.dtype, torch.float32)  # summed taps rounded once, in the caller's like_param
    m = _UP_TAPS.to(device=w.device, dtype=acc)
    return torch.einsum("ya,xb,oiab->ioyx", m, m, w.to(acc))


class GrowUpConv:
    """TGrow on the low resolution, then Upsample + conv as one transposed conv (NHWC; see _UP_TAPS)."""

    def __init__(self, grow: TGrow, conv: nn.Conv2d, relu: bool, nhwc: bool) -> None:
        self.grow = Grow(grow, None, nhwc)
        self.w = like_param(upsampled_conv_as_transposed(conv.weight), conv.weight)
        self.b, self.relu = conv.bias, relu

    def __call__(self, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(self.grow(x), self.w, self.b, stride=2, padding=1)
        return y.relu_() if self.relu else y


class MemStep:
    """A MemBlock with its carried state B = conv_p(last frame) in a static buffer (vae_fused.py's module doc)."""

    def __init__(self, convs: Convs, block: MemBlock, fmt: torch.memory_format) -> None:
        c1, c2, c3 = block.conv[0], block.conv[2], block.conv[4]
        assert isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d) and isinstance(c3, nn.Conv2d)
        self.n, n_in = c1.out_channels, c1.in_channels // 2
        w = torch.cat([c1.weight[:, :n_in], c1.weight[:, n_in:]], 0)  # [2n, n_in, 3, 3]: x half, past half
        self.w1 = like_param(w, c1.weight)
        assert c1.bias is not None, "MemBlock's first conv has a bias (taew2_1)"
        # the bias goes to A only: B is the next frame's past term, zero for a zero frame
        self.b1 = c1.bias if convs.cudnn else torch.cat([c1.bias, torch.zeros_like(c1.bias)])
        self.w2, self.b2, self.w3, self.b3 = c2.weight, c2.bias, c3.weight, c3.bias
        self.skip = block.skip.weight if isinstance(block.skip, nn.Conv2d) else None
        self.convs, self.fmt = convs, fmt
        self.memory: Tensor | None = None
        self.past: Tensor | None = None  # _first_split's [T + 1] buffer of B, memory = past[0]

    def _state(self, like: Tensor) -> Tensor:
        m = self.memory
        if m is None or m.shape != like.shape[1:] or m.dtype != like.dtype or m.device != like.device:
            m = self.memory = torch.zeros_like(like[:1], memory_format=self.fmt)[0]
        return m

    def _past_buffer(self, x: Tensor) -> Tensor:
        """[T + 1, n, H, W] in the block's layout: frame 0 is the carried state (`memory` is a view of it),
        frames 1..T take this chunk's B. Made again, state kept, when the chunk's shape changes."""
        t, _, hh, ww = x.shape
        buf, m = self.past, self.memory
        if buf is None or buf.shape != (t + 1, self.n, hh, ww) or buf.dtype != x.dtype or buf.device != x.device:
            buf = torch.zeros(t + 1, self.n, hh, ww, dtype=x.dtype, device=x.device).contiguous(memory_format=self.fmt)
            if m is not None and m.shape == buf.shape[1:]:
                buf[0].copy_(m)
            self.past, self.memory = buf, buf[0]
        return buf

    def __call__(self, x: Tensor) -> Tensor:
        h = self._first_split(x) if self.convs.cudnn else self._first_stacked(x)
        h = self.convs.relu(h, self.w2, self.b2)
        skip = x if self.skip is None else F.conv2d(x, self.skip)
        return self.convs.add_relu(h, self.w3, self.b3, skip)

    def _first_stacked(self, x: Tensor) -> Tensor:
        """relu(conv1(cat[x, past])) from one conv to [A | B] and the shifted add; mem <- B[-1]."""
        n = self.n
        y = F.conv2d(x, self.w1, self.b1, 1, 1)  # [T, 2n]: A (with the bias), then B
        a, past = y[:, :n], y[:, n:]
        mem = self._state(past)
        if self.convs.triton:
            return shift_add_relu(y, mem)
        h = torch.empty_like(a, memory_format=self.fmt)
        torch.add(a[:1], mem[None], out=h[:1])
        if x.shape[0] > 1:
            torch.add(a[1:], past[:-1], out=h[1:])
        mem.copy_(past[-1])
        return h.relu_()

    def _first_split(self, x: Tensor) -> Tensor:
        """The same with B as its own conv and the add + ReLU fused into A's conv by cuDNN. B is written
        one frame on into a buffer whose frame 0 is the carried state, so the shifted B that A's conv
        adds is a view of it: no concatenation (0.72 ms of a W1 chunk when it was one)."""
        n = self.n
        past = self._past_buffer(x)
        self.convs.into(x, self.w1[n:], past[1:])  # B: each frame's contribution to the next
        h = self.convs.add_relu(x, self.w1[:n], self.b1, past[:-1])
        past[0].copy_(past[-1])
        return h


class ReluConvOut:
    """ReLU then the decoder's last conv (few output channels): one Triton pass on CUDA (vae_fused.py's module doc)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        self.w, self.b, self.out = conv.weight, conv.bias, conv.out_channels
        self.packed: tuple[Tensor, Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if not (x.is_cuda or INTERPRET):  # CPU tensors on a GPU machine (Triton runs them only interpreted): unfused
            return F.conv2d(x.relu(), self.w, self.b, 1, 1)
        if self.packed is None or self.packed[0].dtype != x.dtype or self.packed[0].device != x.device:
            self.packed = pack_weight(
                self.w.detach().to(x.device), None if self.b is None else self.b.detach(), x.dtype
            )
        return relu_conv3x3(x.contiguous(memory_format=torch.channels_last), *self.packed, self.out)


def like_param(w: Tensor, ref: Tensor) -> Tensor:
    """A derived weight in the parameter's dtype, device and memory format (NHWC weights stay NHWC)."""
    nhwc = not ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last)
    return w.to(dtype=ref.dtype, device=ref.device).contiguous(
        memory_format=torch.channels_last if nhwc else torch.contiguous_format
    )


def unfused_regroup(m: TPool | TGrow, nhwc: bool) -> Step:
    if isinstance(m, TPool):
        return lambda h: m.conv(stack_frames(h, m.stride, nhwc))
    return lambda h: split_frames(m.conv(h), m.stride, nhwc)
