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
- NHWC, the decoder's end (ReLU, then a 3x3 conv to 3 channels): one Triton pass on CUDA tensors
  (kernels/relu_conv_out.py) that reads the full-size activations once and never writes their ReLU;
  cuDNN fuses a ReLU after forward convs only, not after the transposed one before it
  (`FusedStream.FUSED_OUTPUT_CONV`; elsewhere the same ops unfused).
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

import torch
from torch import Tensor, nn

from streamer.model.fast.vae_steps import (
    Convs,
    ConvStep,
    Grow,
    GrowUpConv,
    MemStep,
    PoolConv,
    ReluConvOut,
    StackedFrameConv,
    Step,
    UpGrowConv,
    unfused_regroup,
)
from streamer.model.vae import MemBlock, TGrow, TPool
from streamer_kernels.relu_conv_out import fits


class FusedStream:
    """One layer list (encoder or decoder) as fused steps; same interface as `vae._StaticStream`."""

    TRANSPOSED_UPSAMPLE = True  # NHWC: Upsample + TGrow + conv as TGrow + one transposed conv
    STACKED_FRAME_CONV = True  # NHWC: a thin conv before a TPool writes the frames stacked (module doc)
    # Stacking costs the conv s times its FLOPs (the weight's zero blocks); up to the 8 channels its
    # input is padded to anyway, that is free
    STACKED_MAX_IN = StackedFrameConv.PAD_TO
    FUSED_OUTPUT_CONV = True  # NHWC: the decoder's final ReLU + conv as one Triton pass (module doc)

    @torch.no_grad()  # the derived weights are inference constants, not part of an autograd graph
    def __init__(self, layers: nn.Sequential, channels_last: bool = False, fusion: str = "torch") -> None:
        """fusion: "torch", "triton" or "cudnn" (the module doc)."""
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        convs = Convs(fusion)
        self.steps: list[Step] = []
        self.mems: list[MemStep] = []
        mods = list(layers)
        i = 0
        while i < len(mods):
            m, nxt = mods[i], mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(m, MemBlock):
                self.mems.append(MemStep(convs, m, self.format))
                self.steps.append(self.mems[-1])
            elif isinstance(m, TPool) and isinstance(nxt, nn.Conv2d):
                relu = i + 2 < len(mods) and isinstance(mods[i + 2], nn.ReLU)
                self.steps.append(PoolConv(convs, m, nxt, relu, channels_last))
                i += 1 + relu
            elif isinstance(m, nn.Upsample) and isinstance(nxt, TGrow) and m.mode == "nearest":
                then = mods[i + 2] if i + 2 < len(mods) else None
                # a ReLU that the output conv after it takes in (below) is left to it
                relu = i + 3 < len(mods) and isinstance(mods[i + 3], nn.ReLU) and not self._output_conv(mods, i + 4)
                if isinstance(then, nn.Conv2d) and not channels_last:
                    self.steps.append(UpGrowConv(convs, m, nxt, then, relu))
                    i += 2 + relu
                elif isinstance(then, nn.Conv2d) and self.TRANSPOSED_UPSAMPLE and _upsampled_3x3(m, then):
                    self.steps.append(GrowUpConv(nxt, then, relu, channels_last))
                    i += 2 + relu
                else:
                    self.steps.append(Grow(nxt, m, channels_last))
                    i += 1
            elif isinstance(m, nn.ReLU) and self._output_conv(mods, i + 1):
                conv_out = mods[i + 1]
                assert isinstance(conv_out, nn.Conv2d)
                self.steps.append(ReluConvOut(conv_out))
                i += 1
            elif isinstance(m, nn.Conv2d) and channels_last and (pool := self._pool_after(mods, i)) is not None:
                relu = isinstance(nxt, nn.ReLU)
                conv2 = mods[i + 2 + relu]
                assert isinstance(conv2, nn.Conv2d)
                relu2 = i + 3 + relu < len(mods) and isinstance(mods[i + 3 + relu], nn.ReLU)
                self.steps.append(StackedFrameConv(convs, m, relu, pool.stride, channels_last))
                self.steps.append(PoolConv(convs, pool, conv2, relu2, channels_last, stacked=True))
                i += 2 + relu + relu2
            elif isinstance(m, nn.Conv2d):
                relu = isinstance(nxt, nn.ReLU)
                self.steps.append(ConvStep(convs, m.weight, m.bias, m.stride[0], int(m.padding[0]), relu))  # type: ignore[arg-type]
                i += relu
            elif isinstance(m, (TPool, TGrow)):  # no partner to fuse with: the module's own regrouping
                self.steps.append(unfused_regroup(m, channels_last))
            else:
                self.steps.append(m)
            i += 1

    def _output_conv(self, mods: list[nn.Module], j: int) -> bool:
        """Whether mods[j] is a last 3x3 conv that relu_conv3x3 can run after a ReLU (its widths fit)."""
        conv = mods[j] if j < len(mods) else None
        if not (self.FUSED_OUTPUT_CONV and self.format == torch.channels_last and isinstance(conv, nn.Conv2d)):
            return False
        return j == len(mods) - 1 and _plain_3x3(conv) and fits(conv.in_channels, conv.out_channels)

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


def _plain_3x3(conv: nn.Conv2d) -> bool:
    """A 3x3 conv with stride 1, padding 1, no dilation, no groups."""
    return (
        conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
        and conv.dilation == (1, 1) and conv.groups == 1
    )  # fmt: skip


def _upsampled_3x3(up: nn.Upsample, conv: nn.Conv2d) -> bool:
    return up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0)) and _plain_3x3(conv)
