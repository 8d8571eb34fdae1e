"""History corruptions: what a live stream's context frames look like after errors have accumulated.

Each corruption maps frames [T, 3, H, W] in [0, 1] to corrupted frames of the same shape, drawing its
strength from the caller's torch.Generator (so a training step is reproducible from its seed). The
generator is a CPU one and every random draw is made on the CPU, so frames on a GPU get the same damage
as on the CPU (within float rounding). JPEG artefacts come from a real codec (FFmpeg's mjpeg through
PyAV, a round trip through host memory) at a random quantiser, not a model of one. The model's own rollouts are the fifth kind of corruption; they need the model, so they live in
`streamer.train.forcing`.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av
import av.codec.context
import numpy as np
import torch
from torch import Tensor

from streamer.model.condition import luma
from streamer.train.data import step_generator
from streamer.train.looks import gaussian_blur


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def add_noise(x: Tensor, gen: torch.Generator) -> Tensor:
    """Gaussian pixel noise, std 0.02-0.10."""
    std = _uniform(gen, 0.02, 0.10)
    return (x + std * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)).clamp(0, 1)


def blur(x: Tensor, gen: torch.Generator) -> Tensor:
    """Gaussian blur, sigma 0.5-2.0 px (lost detail, as after repeated denoising)."""
    return gaussian_blur(x, _uniform(gen, 0.5, 2.0)).clamp(0, 1)


def jpeg_roundtrip(frames: np.ndarray, qscale: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> the same frames after an mjpeg encode/decode at quantiser `qscale` (2-31)."""
    t, h, w, _ = frames.shape
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.flags |= av.codec.context.Flags.qscale  # fixed quantiser instead of a bit-rate target
    enc.global_quality = qscale * 118  # FF_QP2LAMBDA
    enc.options = {"qmin": str(qscale), "qmax": str(qscale)}
    dec = av.CodecContext.create("mjpeg", "r")
    out = []
    packets = []
    for i in range(t):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24").reformat(format="yuvj420p")
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    for p in packets:
        out += [f.to_ndarray(format="rgb24") for f in dec.decode(p)]
    if len(out) != t:
        raise RuntimeError(f"mjpeg round trip returned {len(out)} frames for {t}")
    return np.stack(out)


def jpeg(x: Tensor, gen: torch.Generator) -> Tensor:
    """Real JPEG block and ringing artefacts at a random quantiser (4-31; 31 = worst)."""
    q = int(torch.randint(4, 32, (), generator=gen))
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    back = jpeg_roundtrip(u8, q)
    return torch.from_numpy(back).to(x.device, x.dtype).permute(0, 3, 1, 2) / 255


def quantise(x: Tensor, gen: torch.Generator) -> Tensor:
    """Colour banding: each channel rounded to 6-24 levels."""
    levels = int(torch.randint(6, 25, (), generator=gen))
    return torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1)


def colour_shift(x: Tensor, gen: torch.Generator) -> Tensor:
    """Drifted colour: per-channel gain and offset, saturation and brightness changes."""
    gain = 1 + 0.15 * (2 * torch.rand(1, 3, 1, 1, generator=gen, dtype=x.dtype).to(x.device) - 1)
    offset = 0.05 * (2 * torch.rand(1, 3, 1, 1, generator=gen, dtype=x.dtype).to(x.device) - 1)
    sat = _uniform(gen, 0.6, 1.4)
    g = luma(x)
    y = g + sat * (x - g)
    return (y * gain + offset).clamp(0, 1)


CORRUPTIONS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "noise": add_noise,
    "blur": blur,
    "jpeg": jpeg,
    "quantise": quantise,
    "colour": colour_shift,
}


def corrupt(x: Tensor, kinds: tuple[str, ...], gen: torch.Generator) -> tuple[Tensor, list[str]]:
    """Apply 1-2 corruptions drawn from `kinds` (in random order). Returns (frames, names applied)."""
    if not kinds:
        return x, []
    n = 1 + int(torch.rand((), generator=gen) < 0.5) if len(kinds) > 1 else 1
    order = torch.randperm(len(kinds), generator=gen)[:n].tolist()
    names = [kinds[i] for i in order]
    for name in names:
        x = CORRUPTIONS[name](x, gen)
    return x, names


def corrupt_history(targets: Tensor, rows: list[int], kinds: tuple[str, ...], key: tuple[int, int, int]) -> Tensor:
    """Damaged copies of the first T-1 frames of the clips `rows` of targets [B, T, 3, H, W] (history
    augmentation), on the targets' device: [len(rows), T-1, 3, H, W]. Clip i's damage is drawn from its
    own generator, (seed, step, rank) = key with purpose "corrupt/i", so it does not depend on which other
    clips need a history (only those the step's plan picks are damaged) nor on the device."""
    seed, step, rank = key
    with torch.autocast(targets.device.type, enabled=False):  # pixels in float32 under a bf16 training step too
        out = [corrupt(targets[i, :-1], kinds, step_generator(seed, step, rank, f"corrupt/{i}"))[0] for i in rows]
    return torch.stack(out) if out else targets[:0, :-1]
