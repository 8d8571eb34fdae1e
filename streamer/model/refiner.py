"""The pixel refiner: a small full-resolution network after the autoencoder's decoder that sees the input.

Why it exists: a DiT sees the camera only through the autoencoder's latent, 8x smaller on each side, and
some looks are functions of pixel detail that latent has lost. Comic's ink is the dark side of a
difference of Gaussians of the luma at 0.7-2.6 px; comic drawn on the tiny autoencoder's round trip of
the input scores only +2.81 dB over the untouched input, so no DiT behind that latent can pass comic's
+3 dB (docs/training.md, tenth and eleventh sessions). The refiner gets back what the latent lost: it
takes the decoded frame, the input frame at model size and the input's luma through a bank of separable
filters, mixes them pixel by pixel under the prompt's modulation, and returns decoded x (1 + m) + r.

- The filters start as Gaussian blurs of 0.6-4 px, so the first mix can form the outlines' differences
  of Gaussians from the start; training moves them.
- The prompt enters as FiLM (a scale and a shift of the hidden channels) from the mean of the text
  encoder's states, computed once per prompt change (`prompt_vector`) and kept in the stream's state
  (`StreamState.look`), so a captured graph reads it from a fixed buffer and a prompt transition blends it.
- Its head and FiLM start at zero: a fresh refiner returns the decoded frame exactly.
- It runs in float32 whatever the DiT's dtype (its ink is a steep threshold; it is cheap: about 2,000
  multiply-adds a pixel).

It is saved in its own file, `refiner.safetensors`, beside the DiT's weights (as shortcut.safetensors is);
the checkpoint loader attaches it as `dit.refiner`. `streamer train refiner` trains it on the frozen
model's own stream output (streamer/train/refine.py). It needs each chunk's input beside its output, so
stream-batch mode and the pipelined engine run such a model without it, and say so (step.skips_refiner).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.condition import luma
from streamer.model.dit import unwrap
from streamer.model.weights.readers import compare_state_dict

REFINER_FILE = "refiner.safetensors"
PREFIX = "refiner."


def _gaussian(sigma: float, size: int) -> Tensor:
    r = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(r**2) / (2 * sigma * sigma))
    return g / g.sum()


class PixelRefiner(nn.Module):
    """decoded [T, 3, H, W], frames [T, 3, H, W] (both in [0, 1]), look [1 or T, 2 x hidden] -> refined
    [T, 3, H, W]. `filters` separable luma filters of `kernel` taps, `hidden` channels per pixel."""

    def __init__(self, text_dim: int, filters: int = 8, hidden: int = 24, kernel: int = 17) -> None:
        super().__init__()
        if kernel % 2 == 0 or kernel < 3 or filters < 1 or hidden < 1 or text_dim < 1:
            raise ValueError(f"refiner shape: kernel {kernel} must be odd and >= 3, filters {filters}, hidden "
                             f"{hidden} and text_dim {text_dim} at least 1")  # fmt: skip
        pad = kernel // 2  # reflect padding, as the looks blur: no dark rim from zero padding
        self.rows = nn.Conv2d(1, filters, (1, kernel), padding=(0, pad), padding_mode="reflect", bias=False)
        self.cols = nn.Conv2d(filters, filters, (kernel, 1), padding=(pad, 0), padding_mode="reflect", groups=filters,
                              bias=False)  # fmt: skip
        # per pixel (Linear on channels-last pixels: a plain matrix product, steadier on CPUs than a 1x1 conv):
        self.mix = nn.Linear(filters + 7, hidden)  # the filtered luma, the luma, the decoded and the input RGB
        self.mid = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 6)  # m (gain) and r (offset) per colour channel
        self.film = nn.Linear(text_dim, 2 * hidden)
        if self.rows.weight.is_meta:  # built for its shapes only (check_refiner_state_dict)
            return
        with torch.no_grad():
            for i in range(filters):
                g = _gaussian(0.6 + 3.4 * i / max(filters - 1, 1), kernel)
                self.rows.weight[i, 0, 0].copy_(g)
                self.cols.weight[i, 0, :, 0].copy_(g)
            for layer in (self.head, self.film):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @property
    def text_dim(self) -> int:
        return self.film.in_features

    def prompt_vector(self, text: Tensor) -> Tensor:
        """The text encoder's states [B, L, text_dim] -> the FiLM vector [B, 2 x hidden] (float32)."""
        if text.dim() != 3 or text.shape[-1] != self.text_dim:
            raise ValueError(f"the refiner takes text states [B, L, {self.text_dim}], not {tuple(text.shape)}")
        return self.film(text.float().mean(1))

    def forward(self, decoded: Tensor, frames: Tensor, look: Tensor) -> Tensor:
        y, x = decoded.float(), frames.float()
        lum = luma(x)
        t, _, height, width = y.shape
        pixels = (
            torch.cat([self.cols(self.rows(lum)), lum, y, x], dim=1).permute(0, 2, 3, 1).reshape(t, height * width, -1)
        )
        # The prompt's FiLM folded into the mix's weights (per prompt, not per pixel): (W p + b)(1 + s) + f
        # is one matrix product with W (1 + s) and b (1 + s) + f, which saves two passes over the hidden pixels.
        scale, shift = look.float().chunk(2, dim=-1)  # [1 or T, hidden] each
        weight = (self.mix.weight * (1 + scale[:, :, None])).expand(t, -1, -1)
        bias = (self.mix.bias * (1 + scale) + shift).expand(t, -1)
        h = F.relu(torch.baddbmm(bias[:, None], pixels, weight.transpose(1, 2)), inplace=True)  # [T, H*W, hidden]
        h = F.relu(self.mid(h), inplace=True)
        gain, offset = self.head(h).transpose(1, 2).reshape(t, 6, height, width).chunk(2, dim=1)
        return (y * (1 + gain) + offset).to(decoded.dtype)


def refiner_shape(sd: dict[str, Tensor]) -> tuple[int, int, int, int]:
    """(text_dim, filters, hidden, kernel) read off a refiner's tensors (PREFIX-less names); ValueError
    naming what is missing or inconsistent."""
    need = ("rows.weight", "film.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"missing keys {', '.join(missing)}")
    rows, film = sd["rows.weight"], sd["film.weight"]
    if rows.dim() != 4 or film.dim() != 2 or film.shape[0] % 2:
        raise ValueError(f"rows.weight {list(rows.shape)} / film.weight {list(film.shape)} are not a refiner's")
    return int(film.shape[1]), int(rows.shape[0]), int(film.shape[0]) // 2, int(rows.shape[-1])


def check_refiner_state_dict(sd: dict[str, Tensor], text_dim: int) -> list[str]:
    """Problems of a refiner.safetensors' tensors (PREFIX-less names) for a DiT of `text_dim`."""
    try:
        got_text, filters, hidden, kernel = refiner_shape(sd)
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in PixelRefiner(got_text, filters, hidden, kernel).state_dict().items()}
    except ValueError as e:
        return [str(e)]
    problems = []
    if got_text != text_dim:
        problems.append(f"its prompt layer takes text_dim {got_text}, the DiT's text encoder gives {text_dim}")
    return problems + compare_state_dict(sd, want)


def build_refiner(sd: dict[str, Tensor]) -> PixelRefiner:
    """A float32 PixelRefiner holding `sd` (PREFIX-less names; check it with check_refiner_state_dict)."""
    refiner = PixelRefiner(*refiner_shape(sd))
    refiner.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return refiner.eval().requires_grad_(False)


def refiner_of(model: object) -> PixelRefiner | None:
    """The refiner attached to `model` (a DiT, or a torch.compile wrapper of one), or None."""
    found = getattr(unwrap(model), "refiner", None)
    return found if isinstance(found, PixelRefiner) else None
