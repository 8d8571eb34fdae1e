"""A structured start for the tiny autoencoder: three "colour carrier" channels through every layer.

The tiny per-frame TAEHV is only 8 channels wide at full resolution. From a random start its ReLU
layers take thousands of steps to pass colour at all: the first GPU recipe (325 steps) and a CPU run of
the same length both ended at a grey reconstruction (≈18.6 dB held out, the colour bars of the test
pattern all grey). Here the first three channels of every layer are set to carry the picture's RGB,
blurred and downsampled 8x, from the input to the output, and the rest of each layer keeps its random
start and learns the detail on top. At step 0 the autoencoder already returns a blocky but colour-true
picture, and the latent it trains is one the DiT can use from the start: latent channels 0-2 are the
local mean colour in [-1, 1].

How each layer carries RGB (channels c = 0, 1, 2, on channel c only):
- 3x3 convolutions: a centre tap of 1 (stride 1) or a [1, 2, 1]^2 / 16 blur (stride 2, and the
  decoder's after each nearest-neighbour upsampling, so blocks become smooth ramps);
- 1x1 convolutions (TPool / TGrow, stride 1 in the per-frame model): identity;
- MemBlocks: the last convolution of the residual branch writes 0 to the carriers (weights and bias),
  so the block's output there is relu(skip(x)) = x (carriers are never negative);
- the encoder's last convolution maps RGB in [0, 1] to latent 2*rgb - 1; the decoder's first maps it back.
Pixels are non-negative, so every ReLU on the way passes the carriers unchanged.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from streamer.model.vae import TAEHV, MemBlock, TGrow, TPool

CARRIERS = 3
_BLUR = torch.tensor([1.0, 2.0, 1.0])
_BLUR3 = (_BLUR[:, None] * _BLUR[None, :]) / 16


def _carry(conv: nn.Conv2d, kernel: Tensor | None = None, scale: float = 1.0, bias: float = 0.0) -> None:
    """Output channel c of `conv` = scale * (kernel applied to input channel c) + bias, for c < CARRIERS."""
    w = conv.weight.data
    w[:CARRIERS] = 0
    k = w.shape[-1]
    for c in range(CARRIERS):
        if kernel is None:
            w[c, c, k // 2, k // 2] = scale
        else:
            w[c, c] = scale * kernel.to(w)
    if conv.bias is not None:
        conv.bias.data[:CARRIERS] = bias


def _zero_carrier_outputs(conv: nn.Conv2d) -> None:
    conv.weight.data[:CARRIERS] = 0
    if conv.bias is not None:
        conv.bias.data[:CARRIERS] = 0


def _init_layers(layers: nn.Sequential, *, after_upsample_blur: bool) -> None:
    blur_next = False
    for layer in layers:
        if isinstance(layer, MemBlock):
            if not isinstance(layer.skip, nn.Identity):
                _carry(layer.skip)
            _zero_carrier_outputs(cast(nn.Conv2d, layer.conv[-1]))
        elif isinstance(layer, TPool | TGrow):
            if layer.stride != 1:
                raise ValueError("colour carriers are for the per-frame autoencoder (TPool/TGrow stride 1)")
            _carry(layer.conv)
        elif isinstance(layer, nn.Upsample):
            blur_next = after_upsample_blur
        elif isinstance(layer, nn.Conv2d):
            strided = layer.stride[0] > 1
            _carry(layer, _BLUR3 if (strided or blur_next) and layer.kernel_size[0] == 3 else None)
            blur_next = False


@torch.no_grad()
def colour_carrier_init(vae: TAEHV) -> TAEHV:
    """Set the carrier channels of a per-frame TAEHV in place (see the module docstring); returns it."""
    if vae.temporal:
        raise ValueError("colour carriers are for the per-frame (tiny) autoencoder")
    enc, dec = vae.encoder, vae.decoder
    _init_layers(cast(nn.Sequential, enc[:-1]), after_upsample_blur=False)
    _carry(cast(nn.Conv2d, enc[-1]), scale=2.0, bias=-1.0)  # latent = 2 rgb - 1
    _carry(cast(nn.Conv2d, dec[1]), scale=0.5, bias=0.5)  # back to rgb (after the decoder's soft clamp: ~x for |x| <= 1)
    _init_layers(cast(nn.Sequential, dec[2:]), after_upsample_blur=True)
    return vae
