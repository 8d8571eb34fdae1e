"""TAEHV's layer list rewritten into fewer memory passes, computing the same function (fast path).

`FusedStream` derives its weights once from the autoencoder's own parameters (checkpoints and their
names are untouched) and runs a chunk [T, C, H, W] like `vae._StaticStream`, with these rewrites:

- MemBlock: conv(cat[x, past]) = conv_x(x) + conv_p(past), and past is x one frame back (the carried
  frame for t = 0), so ONE conv over x with the two weight halves stacked on the output channels gives
  A = conv_x(x) + bias and B = conv_p(x); then out[t] = A[t] + B[t-1]. The carried state is B of the
  chunk's last frame: conv_p has no bias, so a zeroed buffer is exactly a zero past frame. No
  [T, 2C, H, W] concatenation is written, and the state copy is conv_p(x[-1]) instead of x[-1].
- TPool + the strided conv after it: both linear with nothing between (no bias, zero padding maps to
  zero), so one 3x3 conv with the composed weight over the frames stacked on channels (a view in NCHW):
  the full-resolution 1x1 conv's output is never written.
- Upsample (nearest) + TGrow + conv: NCHW: TGrow's 1x1 conv composed into the 3x3 conv after it, one
  weight per output frame stacked on the output channels (the same FLOPs), so the grown frames are never
  written; the output's channel groups are the frames (a view). NHWC, where that split would be a copy
  of the full-resolution output: TGrow on the low resolution (a 1x1 conv commutes with nearest
  upsampling: a quarter of the pixels), then the upsample and the 3x3 conv as ONE transposed conv
  (stride 2, 4x4 taps summed from the 3x3 ones, `upsampled_conv_as_transposed`): the upsampled
  tensor is never written, and each output pixel takes 4 taps instead of 9
  (`FusedStream.TRANSPOSED_UPSAMPLE`; off, the upsample writes the full resolution as before).
- NHWC, a per-frame conv (+ReLU) with few input channels right before a TPool (the encoder's first
  conv): run on the input frames stacked on channels, with a block-diagonal weight (frame j of a group
  sees only its own channels), it writes the stacked layout the TPool conv reads, so the full-resolution
  stacking copy is never made; only the 3-channel input is stacked (`FusedStream.STACKED_FRAME_CONV`).
- ReLUs and the residual add run in place on fresh conv outputs (no extra allocation).

The elementwise work after the convs, by `fusion`:
- "torch": the shifted add into a fresh tensor, then in-place ReLUs and residual add (no custom kernel);
- "triton": the shifted add + ReLU + state update, and the residual add + ReLU, each one pass
  (kernels/shift_add_relu.py; Triton's interpreter on a CPU);
- "cudnn": cuDNN's fused conv+bias+ReLU and conv+bias+add+ReLU kernels on CUDA tensors (the same ops
  unfused elsewhere); the MemBlock's two halves are two convs there, since the add must be an input.
Which is fastest on a card is measured by `python -m streamer.bench.vae_speed`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.vae import MemBlock, TGrow, TPool
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
    raw = h.permute(0, 2, 3, 1).reshape(t // s, s, hh, ww, c).permute(0, 2, 3, 1, 4)
    return raw.reshape(t // s, hh, ww, s * c).permute(0, 3, 1, 2)


def split_frames(y: Tensor, s: int, nhwc: bool) -> Tensor:
    """[T, s*C, H, W] -> [T*s, C, H, W], channel groups becoming consecutive frames (the inverse)."""
    t, sc, hh, ww = y.shape
    if s == 1:
        return y
    if not nhwc:
        return y.reshape(t * s, sc // s, hh, ww)
    raw = y.permute(0, 2, 3, 1).reshape(t, hh, ww, s, sc // s).permute(0, 3, 1, 2, 4)
    return raw.reshape(t * s, hh, ww, sc // s).permute(0, 3, 1, 2)


class _Convs:
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


class _Conv:
    def __init__(self, convs: _Convs, w: Tensor, b: Tensor | None, stride: int, padding: int, relu: bool) -> None:
        self.convs, self.w, self.b, self.stride, self.padding, self.relu = convs, w, b, stride, padding, relu

    def __call__(self, x: Tensor) -> Tensor:
        if self.relu:
            return self.convs.relu(x, self.w, self.b, self.stride, self.padding)
        return F.conv2d(x, self.w, self.b, self.stride, self.padding)


class _PoolConv(_Conv):
    """TPool's 1x1 conv composed into the conv after it, over the frames stacked on channels
    (`stacked`: the step before wrote them so, a `_StackedFrameConv`)."""

    def __init__(self, convs: _Convs, pool: TPool, conv: nn.Conv2d, relu: bool, nhwc: bool, stacked: bool = False) -> None:
        wp = pool.conv.weight[:, :, 0, 0].float()  # [n, s*n]
        w = torch.einsum("oikl,ij->ojkl", conv.weight.float(), wp)
        super().__init__(convs, _like(w, conv.weight), conv.bias, conv.stride[0], int(conv.padding[0]), relu)  # type: ignore[arg-type]
        self.s, self.nhwc = (1 if stacked else pool.stride), nhwc

    def __call__(self, x: Tensor) -> Tensor:
        return super().__call__(_stacked(x, self.s, self.nhwc))


def _stacked(x: Tensor, s: int, nhwc: bool) -> Tensor:
    if x.shape[0] % s:
        raise ValueError(f"chunk of {x.shape[0]} frames at a TPool of stride {s}")
    return stack_frames(x, s, nhwc)


class _StackedFrameConv(_Conv):
    """A per-frame conv whose frames a TPool stacks next, run on its input frames stacked on channels
    with a block-diagonal weight: it writes the stacked layout itself (see the module doc)."""

    def __init__(self, convs: _Convs, conv: nn.Conv2d, relu: bool, s: int, nhwc: bool) -> None:
        o, i = conv.out_channels, conv.in_channels
        w = conv.weight.new_zeros(s * o, s * i, *conv.weight.shape[2:])
        for j in range(s):
            w[j * o : (j + 1) * o, j * i : (j + 1) * i] = conv.weight
        b = None if conv.bias is None else conv.bias.repeat(s)
        super().__init__(convs, _like(w, conv.weight), b, conv.stride[0], int(conv.padding[0]), relu)  # type: ignore[arg-type]
        self.s, self.nhwc = s, nhwc

    def __call__(self, x: Tensor) -> Tensor:
        return super().__call__(_stacked(x, self.s, self.nhwc))


class _UpGrowConv(_Conv):
    """Upsample, then TGrow's 1x1 conv composed into the conv after it (NCHW: the frames split as a view)."""

    def __init__(self, convs: _Convs, up: nn.Upsample, grow: TGrow, conv: nn.Conv2d, relu: bool) -> None:
        s, n = grow.stride, grow.conv.in_channels
        wg = grow.conv.weight[:, :, 0, 0].float()  # [s*n, n]: frame k's channels are rows k*n:(k+1)*n
        wc = conv.weight.float()
        w = torch.cat([torch.einsum("oikl,ij->ojkl", wc, wg[k * n : (k + 1) * n]) for k in range(s)])
        b = None if conv.bias is None else conv.bias.repeat(s)
        super().__init__(convs, _like(w, conv.weight), b, conv.stride[0], int(conv.padding[0]), relu)  # type: ignore[arg-type]
        self.s, self.scale = s, up.scale_factor

    def __call__(self, x: Tensor) -> Tensor:
        y = super().__call__(F.interpolate(x, scale_factor=self.scale, mode="nearest"))
        return split_frames(y, self.s, nhwc=False)


class _Grow:
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
    acc = torch.promote_types(w.dtype, torch.float32)  # summed taps rounded once, in the caller's _like
    m = _UP_TAPS.to(device=w.device, dtype=acc)
    return torch.einsum("ya,xb,oiab->ioyx", m, m, w.to(acc))


class _GrowUpConv:
    """TGrow on the low resolution, then Upsample + conv as one transposed conv (NHWC; see _UP_TAPS)."""

    def __init__(self, grow: TGrow, conv: nn.Conv2d, relu: bool, nhwc: bool) -> None:
        self.grow = _Grow(grow, None, nhwc)
        self.w = _like(upsampled_conv_as_transposed(conv.weight), conv.weight)
        self.b, self.relu = conv.bias, relu

    def __call__(self, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(self.grow(x), self.w, self.b, stride=2, padding=1)
        return y.relu_() if self.relu else y


class _Mem:
    """A MemBlock with its carried state B = conv_p(last frame) in a static buffer (see the module doc)."""

    def __init__(self, convs: _Convs, block: MemBlock, fmt: torch.memory_format) -> None:
        c1, c2, c3 = block.conv[0], block.conv[2], block.conv[4]
        assert isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d) and isinstance(c3, nn.Conv2d)
        self.n, n_in = c1.out_channels, c1.in_channels // 2
        w = torch.cat([c1.weight[:, :n_in], c1.weight[:, n_in:]], 0)  # [2n, n_in, 3, 3]: x half, past half
        self.w1 = _like(w, c1.weight)
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


def _like(w: Tensor, ref: Tensor) -> Tensor:
    """A derived weight in the parameter's dtype, device and memory format (NHWC weights stay NHWC)."""
    nhwc = not ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last)
    return w.to(dtype=ref.dtype, device=ref.device).contiguous(
        memory_format=torch.channels_last if nhwc else torch.contiguous_format
    )


class FusedStream:
    """One layer list (encoder or decoder) as fused steps; same interface as `vae._StaticStream`."""

    TRANSPOSED_UPSAMPLE = True  # NHWC: Upsample + TGrow + conv as TGrow + one transposed conv
    STACKED_FRAME_CONV = True  # NHWC: a thin conv before a TPool writes the frames stacked (module doc)
    # Stacking costs the conv s times its FLOPs (the weight's zero blocks); with s * in_channels up to
    # 8 that is within the padding cuDNN's NHWC kernels give a 3-channel input anyway
    STACKED_MAX_IN = 8

    @torch.no_grad()  # the derived weights are inference constants, not part of an autograd graph
    def __init__(self, layers: nn.Sequential, channels_last: bool = False, fusion: str = "torch") -> None:
        """fusion: "torch", "triton" or "cudnn" (the module doc)."""
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        convs = _Convs(fusion)
        self.steps: list[Step] = []
        self.mems: list[_Mem] = []
        mods = list(layers)
        i = 0
        while i < len(mods):
            m, nxt = mods[i], mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(m, MemBlock):
                self.mems.append(_Mem(convs, m, self.format))
                self.steps.append(self.mems[-1])
            elif isinstance(m, TPool) and isinstance(nxt, nn.Conv2d):
                relu = i + 2 < len(mods) and isinstance(mods[i + 2], nn.ReLU)
                self.steps.append(_PoolConv(convs, m, nxt, relu, channels_last))
                i += 1 + relu
            elif isinstance(m, nn.Upsample) and isinstance(nxt, TGrow) and m.mode == "nearest":
                then = mods[i + 2] if i + 2 < len(mods) else None
                relu = i + 3 < len(mods) and isinstance(mods[i + 3], nn.ReLU)
                if isinstance(then, nn.Conv2d) and not channels_last:
                    self.steps.append(_UpGrowConv(convs, m, nxt, then, relu))
                    i += 2 + relu
                elif isinstance(then, nn.Conv2d) and self.TRANSPOSED_UPSAMPLE and _upsampled_3x3(m, then):
                    self.steps.append(_GrowUpConv(nxt, then, relu, channels_last))
                    i += 2 + relu
                else:
                    self.steps.append(_Grow(nxt, m, channels_last))
                    i += 1
            elif isinstance(m, nn.Conv2d) and channels_last and (pool := self._pool_after(mods, i)) is not None:
                relu = isinstance(nxt, nn.ReLU)
                conv2 = mods[i + 2 + relu]
                assert isinstance(conv2, nn.Conv2d)
                relu2 = i + 3 + relu < len(mods) and isinstance(mods[i + 3 + relu], nn.ReLU)
                self.steps.append(_StackedFrameConv(convs, m, relu, pool.stride, channels_last))
                self.steps.append(_PoolConv(convs, pool, conv2, relu2, channels_last, stacked=True))
                i += 2 + relu + relu2
            elif isinstance(m, nn.Conv2d):
                relu = isinstance(nxt, nn.ReLU)
                self.steps.append(_Conv(convs, m.weight, m.bias, m.stride[0], int(m.padding[0]), relu))  # type: ignore[arg-type]
                i += relu
            elif isinstance(m, (TPool, TGrow)):  # no partner to fuse with: the module's own regrouping
                self.steps.append(_unfused(m, channels_last))
            else:
                self.steps.append(m)
            i += 1

    def _pool_after(self, mods: list[nn.Module], i: int) -> TPool | None:
        """The TPool that stacks conv i's frames next (a ReLU between allowed; a conv after it to fold it
        into), when stacking conv i's input instead is worth it; else None."""
        conv = mods[i]
        j = i + 1 + (i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU))
        pool = mods[j] if j < len(mods) else None
        after = mods[j + 1] if j + 1 < len(mods) else None
        if not (self.STACKED_FRAME_CONV and isinstance(conv, nn.Conv2d) and isinstance(pool, TPool)):
            return None
        if not isinstance(after, nn.Conv2d) or conv.groups != 1 or conv.stride != (1, 1):
            return None
        return pool if conv.in_channels * pool.stride <= self.STACKED_MAX_IN else None

    @property
    def memory(self) -> dict[int, Tensor]:
        """The carried-state buffers that exist so far, by MemBlock order (fixed addresses once made)."""
        return {k: m.memory for k, m in enumerate(self.mems) if m.memory is not None}

    def reset(self) -> None:
        for m in self.mems:
            if m.memory is not None:
                m.memory.zero_()  # past[0] where there is a past buffer: the rest is rewritten per chunk

    @torch.no_grad()
    def run(self, x: Tensor) -> Tensor:
        """x: [T, C, H, W] (batch 1, frames on dim 0) -> [T', C', H', W']."""
        h = x.contiguous(memory_format=self.format)
        for step in self.steps:
            h = step(h)
        return h


def _upsampled_3x3(up: nn.Upsample, conv: nn.Conv2d) -> bool:
    return (
        up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0)) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
        and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
    )  # fmt: skip


def _unfused(m: TPool | TGrow, nhwc: bool) -> Step:
    if isinstance(m, TPool):
        return lambda h: m.conv(stack_frames(h, m.stride, nhwc))
    return lambda h: split_frames(m.conv(h), m.stride, nhwc)
