"""Procedural "looks": the training targets of the built-in recipe, each with several text descriptions.

A look is a deterministic function of each frame alone (no randomness, no dependence on other frames),
so a look applied to a video is temporally as stable as the video: the model learns a consistent
style, not flicker. All looks take and return [T, 3, H, W] float tensors in [0, 1].

Every look keeps the input's structure: its target's edge corr against the input
(streamer.train.quality.edge_corr, the score a model's output must reach, >= 0.6, in issue 14) is at
least 0.7 on the held-out stream, or a perfect model would fail. So outlines are drawn on one side of an
edge only (a line centred on an edge has two edges of its own) and tones change smoothly or by pointwise
maps. `python tools/look_structure.py` measures it; the numbers in the docstrings below are its
(1,200 frames of the held-out stream at 256x256, 2026-12-06).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.model.condition import luma


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding; x: [T, C, H, W]."""
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma + 0.5))
    r = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    pad_h = min(radius, x.shape[2] - 1)
    pad_w = min(radius, x.shape[3] - 1)
    kh = k[radius - pad_h : radius + pad_h + 1]
    kw = k[radius - pad_w : radius + pad_w + 1]
    y = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else x
    y = F.conv2d(y, (kw / kw.sum()).view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else y
    return F.conv2d(y, (kh / kh.sum()).view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def sobel(gray: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical Sobel responses of [T, 1, H, W]."""
    kx = gray.new_tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3) / 4
    g = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(g, kx), F.conv2d(g, kx.transpose(2, 3))


def _edges(x: Tensor, blur: float = 0.7) -> Tensor:
    gx, gy = sobel(gaussian_blur(luma(x), blur))
    return (gx.square() + gy.square()).sqrt()


def _posterise(x: Tensor, levels: int) -> Tensor:
    return torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1)


def _soft_posterise(x: Tensor, levels: int, sharpness: float) -> Tensor:
    """`levels` flat bands joined by short sigmoid ramps instead of hard steps: a smooth gradient becomes
    flat bands without the false contours (new edges) of rounding."""
    v = x.clamp(0, 1) * (levels - 1)
    band = v.floor()
    return ((band + torch.sigmoid((v - band - 0.5) * sharpness)) / (levels - 1)).clamp(0, 1)


def _saturate(x: Tensor, factor: float) -> Tensor:
    """Scale each pixel's colour away from its luma (factor > 1: more vivid); the luma is unchanged."""
    g = luma(x)
    return (g + factor * (x - g)).clamp(0, 1)


def _direction_hue(gray: Tensor) -> Tensor:
    """[T, 1, H, W] -> [T, 3, H, W]: a colour wheel indexed by the direction of the local gradient."""
    gx, gy = sobel(gray)
    angle = torch.atan2(gy, gx)
    return torch.cat([0.5 + 0.5 * torch.cos(angle + k * 2.094) for k in range(3)], 1)


def _palette_map(v: Tensor, palette: list[tuple[float, float, float]]) -> Tensor:
    """Map [T, 1, H, W] values in [0, 1] through a piecewise-linear colour ramp -> [T, 3, H, W]."""
    pal = v.new_tensor(palette)  # [N, 3]
    pos = v.clamp(0, 1) * (len(palette) - 1)
    lo = pos.floor().long().clamp(max=len(palette) - 2)
    frac = pos - lo
    a = pal[lo.squeeze(1)].permute(0, 3, 1, 2)
    b = pal[(lo + 1).squeeze(1)].permute(0, 3, 1, 2)
    return a + (b - a) * frac


def noir(x: Tensor) -> Tensor:
    """High-contrast black and white with a vignette."""
    g = luma(x)
    g = torch.sigmoid((g - 0.5) * 8)  # hard S-curve: crushed blacks, bright highlights
    h, w = x.shape[-2:]
    yy = torch.linspace(-1, 1, h, device=x.device).view(h, 1)
    xx = torch.linspace(-1, 1, w, device=x.device).view(1, w)
    vignette = (1 - 0.45 * (xx.square() + yy.square())).clamp(0, 1)
    return (g * vignette).expand(-1, 3, -1, -1).clamp(0, 1)


_NEON_TINT = (0.75, 0.45, 1.0)  # violet night: the base picture's red and green are held back


def neon(x: Tensor) -> Tensor:
    """Glowing neon outlines on a dark, saturated, violet-tinted picture.

    The glow sits on the bright side of each edge only (the positive part of luma minus its blur), coloured
    by the edge's direction, so it brightens an outline the picture already has instead of drawing a
    line with two edges of its own; the dark base keeps every other edge. Keeps the input's structure:
    target edge corr 0.82 on held-out media (the old lines-on-black look: 0.26)."""
    g = luma(x)
    glow = ((g - gaussian_blur(g, 2.5)) * 6).clamp(0, 1)
    colour = _direction_hue(gaussian_blur(g, 1.6))
    base = _saturate(x, 2.0) ** 2.2 * 0.7 * x.new_tensor(_NEON_TINT).view(1, 3, 1, 1)
    return (base + colour * glow).clamp(0, 1)


def comic(x: Tensor) -> Tensor:
    """Flat, vivid colour bands with bold black ink on the outlines.

    The bands are a soft posterisation (no false contours); the ink is the dark side of a difference of
    Gaussians (XDoG-style) above a threshold, so it thickens the darker side of an outline the picture has
    rather than drawing a line across it, and leaves fine texture (grass, cobbles) un-inked. Keeps the
    input's structure: target edge corr 0.85 on held-out media (the old hard posterisation with ink lines
    centred on edges: 0.32). Third version: the second inked every pixel 1.6 % darker than its 1 px
    surround, 14 % of the frame as speckle in textured areas, which carried most of its distance from the
    input and is detail the 8x-downsampling autoencoder's latent cannot place (see docs/training.md)."""
    flat, ink = comic_layers(x)
    return (flat * (1 - ink)).clamp(0, 1)


def comic_layers(x: Tensor) -> tuple[Tensor, Tensor]:
    """Comic's two layers of [T, 3, H, W]: the flat colour bands [T, 3, H, W] and the ink's opacity
    [T, 1, H, W] in [0, 1] (tools/comic_ink_error.py splits a model's error between them)."""
    flat = _soft_posterise(_saturate(gaussian_blur(x, 1.0), 2.0) * 1.25, 4, 30.0)
    return flat, ((darkening(gaussian_blur(luma(x), 0.7)) - 0.045) * 40).clamp(0, 1)


def darkening(gray: Tensor, surround: float = 2.5) -> Tensor:
    """How much darker each pixel of [T, 1, H, W] is than its Gaussian surround (0 where it is not): the
    dark side of a difference of Gaussians - outlines, ink, strokes."""
    return (gaussian_blur(gray, surround) - gray).clamp(min=0)


def sketch(x: Tensor) -> Tensor:
    """Pencil sketch with graphite shading: colour-dodge of the luma by its blurred inverse (strokes on
    white paper), darkened (cubed) so the strokes read, times a light shading by the luma.

    The shading carries the picture's tones, so the sketch keeps the input's structure: target edge corr
    0.79 on held-out media (the dodge alone, squared: 0.65, with faint strokes)."""
    g = luma(x)
    blurred_inv = gaussian_blur(1 - g, 2.0)
    dodge = (g / (1 - blurred_inv).clamp(min=1e-3)).clamp(0, 1)
    return (dodge**3 * (0.6 + 0.4 * g)).expand(-1, 3, -1, -1).clamp(0, 1)


_INFERNO = [
    (0.0, 0.0, 0.02),
    (0.26, 0.04, 0.41),
    (0.58, 0.15, 0.40),
    (0.87, 0.32, 0.23),
    (0.99, 0.65, 0.04),
    (0.98, 1.0, 0.64),
]


def thermal(x: Tensor) -> Tensor:
    """A thermal-camera false-colour ramp of the (smoothed) luma."""
    return _palette_map(gaussian_blur(luma(x), 1.0), _INFERNO).clamp(0, 1)


def sepia(x: Tensor) -> Tensor:
    """Warm brown-toned old photograph."""
    m = x.new_tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    y = torch.einsum("oc,tchw->tohw", m, x)
    return (0.9 * y + 0.05).clamp(0, 1)


def pixel(x: Tensor, block: int = 3, levels: int = 8) -> Tensor:
    """Pixel art: blocks of `block` px, vivid high-contrast colours, `levels` levels per channel.

    Small blocks and 8 levels after a contrast S-curve keep the input's structure: target edge corr 0.79
    on held-out media (8 px blocks and 5 levels: 0.34, the block grid and the false contours were most of
    its edges)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, h // block), max(1, w // block)), mode="area")
    vivid = torch.sigmoid((_saturate(small, 1.8) - 0.5) * 8)
    return F.interpolate(_posterise(vivid, levels), size=(h, w), mode="nearest")


def watercolour(x: Tensor) -> Tensor:
    """Soft washes of colour with darkened pigment edges on light paper."""
    soft = gaussian_blur(x, 2.0)
    washed = _posterise(soft, 6) * 0.5 + soft * 0.5
    edge = (_edges(soft, 0.5) * 4).clamp(0, 1)
    paper = 0.88 + 0.12 * washed  # pigment never fully covers the paper
    out = washed * paper * (1 - 0.35 * edge)
    return (0.85 * out + 0.15).clamp(0, 1)


@dataclass(frozen=True)
class Look:
    """A named procedural style and the prompts that describe it."""

    name: str
    apply: Callable[[Tensor], Tensor]
    prompts: tuple[str, ...]


LOOKS: dict[str, Look] = {
    look.name: look
    for look in (
        Look("noir", noir, ("film noir, black and white, high contrast", "a moody monochrome noir scene",
                            "black-and-white photo with deep shadows and a vignette")),
        Look("neon", neon, ("glowing neon outlines on black", "neon edge art, synthwave colours",
                            "bright neon line drawing in the dark")),
        Look("comic", comic, ("comic book style, flat colours, bold ink outlines", "a pop-art comic panel",
                              "cartoon with thick black lines")),
        Look("sketch", sketch, ("pencil sketch on white paper", "graphite drawing, hand sketched",
                                "a charcoal sketch")),
        Look("thermal", thermal, ("thermal camera view", "infrared heat map false colours",
                                  "predator vision thermal imaging")),
        Look("sepia", sepia, ("old sepia photograph", "vintage brown-toned photo from 1900",
                              "antique sepia film")),
        Look("pixel", pixel, ("8-bit pixel art", "retro video game pixel graphics", "chunky low resolution pixels")),
        Look("watercolour", watercolour, ("a watercolour painting", "soft watercolor wash on paper",
                                          "delicate aquarelle painting")),
    )
}  # fmt: skip


def apply_look(name: str, frames: Tensor) -> Tensor:
    """frames [T, 3, H, W] in [0, 1] -> the look's frames, same shape and range."""
    try:
        look = LOOKS[name]
    except KeyError:
        raise ValueError(f"unknown look {name!r}; choose from {', '.join(LOOKS)}") from None
    return look.apply(frames.float()).clamp(0, 1)
