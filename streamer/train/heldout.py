"""The held-out live stream and its score: what `streamer.train.evaluate` feeds the engine, how the
engine runs it (as the daemon does: `step()` per frame), and how the output is graded (PSNR in dB on
uint8 RGB against the look of each input frame; streamer.train.quality adds the edge score).

The stream is made only of the held-out part of the built-in media (`BuiltinRecipe(..., part="heldout")`):
consecutive 4-6 s segments, each a held-out video window played forward and back under a slow crop
move, or a held-out still under a synthetic camera move, deterministic from a seed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from streamer.config import ModelSettings
from streamer.frames import Frame
from streamer.model.builder import new_engine
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts
from streamer.prompts import PromptState
from streamer.train.data import BuiltinRecipe, step_generator
from streamer.train.looks import apply_look
from streamer.train.media import Media, camera_path, clip_plan, make_clip, to_unit

FPS = 30  # the live input's frame rate: segment lengths and "minutes" are counted in frames at this rate
SEGMENT_SECONDS = (4.0, 6.0)
PSNR_CAP_DB = 100.0  # identical frames would score +inf; capped so means stay finite

log = logging.getLogger(__name__)


# ---- the held-out live stream ---------------------------------------------------------------------------
@dataclass
class Segment:
    """Consecutive frames of the held-out stream, starting at stream frame `start`."""

    start: int
    inputs: Tensor  # [L, H, W, 3] uint8 on the evaluation device
    source: Media  # the held-out media shown (one of recipe.media)
    indices: Tensor  # [L] frame of `source` shown by each stream frame (0 for a still)


def _ping_pong(n_src: int, length: int, gen: torch.Generator) -> Tensor:
    """Frame indices of a random window of a video played forward then backward, repeated to `length`."""
    window = max(2, min(n_src, length // 2 + 1))
    start = int(torch.randint(0, n_src - window + 1, (), generator=gen))
    period = 2 * (window - 1)
    pos = torch.arange(length) % period
    return start + torch.where(pos < window, pos, period - pos)


def heldout_segments(
    recipe: BuiltinRecipe, frames: int, seed: int, device: torch.device | str = "cpu", fps: int = FPS
) -> Iterator[Segment]:
    """The first `frames` frames of the held-out stream of `seed`, segment by segment (rendered on `device`).

    Deterministic from the seed, and prefix-stable: a shorter stream is the start of a longer one, so
    the steps evaluation sees the first segments of the drift stream. Media are visited in a shuffled
    cycle, so every held-out file appears equally often."""
    if recipe.part != "heldout":
        raise ValueError(f"the evaluation stream uses held-out media only, not the {recipe.part!r} part")
    return stream_segments(recipe, frames, seed, device, fps)


def stream_segments(
    recipe: BuiltinRecipe, frames: int, seed: int, device: torch.device | str = "cpu", fps: int = FPS
) -> Iterator[Segment]:
    """`heldout_segments`' stream made of any part of the media (the pixel refiner trains on the training
    part's: streamer/train/refine.py)."""
    media, on_device = recipe.media, {}
    lo, hi = round(SEGMENT_SECONDS[0] * fps), round(SEGMENT_SECONDS[1] * fps)
    start, k = 0, 0
    while start < frames:
        gen = step_generator(seed, k, 0, "heldout-stream")
        order = torch.randperm(len(media), generator=step_generator(seed, k // len(media), 0, "heldout-order"))
        slot = int(order[k % len(media)])
        src = media[slot]
        length = int(torch.randint(lo, hi + 1, (), generator=gen))
        if src.is_still:
            idx, theta = clip_plan(src, length, gen)
        else:  # clip_plan would freeze on the last frame of a short held-out window; play it back and forth
            idx = _ping_pong(src.pixels.shape[0], length, gen)
            theta = camera_path(length, gen, max_zoom=1.3, travel=0.1)  # clip_plan's gentle crop move
        take = min(length, frames - start)
        if slot not in on_device:
            on_device[slot] = Media(src.path, src.pixels.to(device))
        clip = make_clip(on_device[slot], (idx[:take], theta[:take].to(device)), recipe.size)
        yield Segment(start, to_uint8(clip), src, idx[:take])
        start, k = start + take, k + 1


def to_uint8(x: Tensor) -> Tensor:
    """[N, 3, H, W] float in [0, 1] -> [N, H, W, 3] uint8 (the engine's frame layout)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def look_targets(inputs: Tensor, look: str) -> Tensor:
    """The look of each uint8 input frame [N, H, W, 3] -> uint8 [N, H, W, 3], one batched call."""
    return to_uint8(apply_look(look, to_unit(inputs)))


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB of uint8 frames a vs b ([..., H, W, 3] -> [...]): 10 log10(255^2 / MSE), at most PSNR_CAP_DB."""
    mse = (a.float() - b.float()).square().flatten(-3).mean(-1)
    return 10 * torch.log10(255.0**2 / mse.clamp(min=255.0**2 * 10 ** (-PSNR_CAP_DB / 10)))


# ---- running the engine ---------------------------------------------------------------------------------
class Progress:
    """A log line (frames, fps, ETA) every `every` seconds over all the streams of one invocation."""

    def __init__(self, total: int, device: torch.device, every: float = 10.0) -> None:
        self.total, self.device, self.every = total, device, every
        self.done, self.t0 = 0, time.monotonic()
        self.last = self.t0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.every:
            return
        if self.device.type == "cuda":  # once per line: the host may run ahead of the GPU's queue
            torch.cuda.synchronize(self.device)
            now = time.monotonic()
        fps = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / fps if fps > 0 else float("inf")
        log.info("%d/%d frames (%.0f%%), %.1f frames/s, ETA %s", self.done, self.total,
                 100 * self.done / self.total, fps, f"{eta:.0f} s" if math.isfinite(eta) else "?")  # fmt: skip
        self.last = now


# (stream frame index, input, target, output): uint8 [H, W, 3] frames on the engine's device
OnOutput = Callable[[int, Tensor, Tensor, Tensor], None]


@torch.no_grad()
def run_stream(
    engine: ModelTransform, segments: Iterable[Segment], look: str, prompt: str, total: int, progress: Progress,
    on_output: OnOutput | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Stream the segments through the engine as one live input with `prompt`. Returns per-frame PSNR
    [total] on the device of the model's output vs the look's target, and of the input itself vs the
    target ("no transform"); NaN where the engine gave no output for a frame. `on_output` sees every
    output frame with its input and target (the quality mode's edge score and contact sheet)."""
    dev = engine.device
    model = torch.full((total,), float("nan"), dtype=torch.float32, device=dev)
    identity = torch.full_like(model, float("nan"))
    state = PromptState(text=prompt)
    waiting: dict[int, tuple[Tensor, Tensor]] = {}  # frames whose output has not come yet (chunked presets)
    for seg in segments:
        targets = look_targets(seg.inputs, look)
        n = seg.inputs.shape[0]
        identity[seg.start : seg.start + n] = psnr(seg.inputs, targets)
        for i in range(n):
            index = seg.start + i
            waiting[index] = seg.inputs[i], targets[i]
            frame = Frame(pixels=seg.inputs[i], capture_time=index / FPS, index=index, pts=index / FPS)
            for out in engine.step(frame, state):  # device tensors in, device tensors out: no host copy
                inp, target = waiting.pop(out.index)
                model[out.index] = psnr(out.pixels, target)
                if on_output is not None:
                    on_output(out.index, inp, target, out.pixels)
            progress.advance()
    return model, identity


def make_engine(m: ModelSettings, parts: LoadedParts) -> ModelTransform:
    """A fresh engine (a clean stream) as the daemon builds it (streamer.model.builder): the fast path is
    attached only when m.fast_path is on and the device is a GPU (the evaluator's default is off)."""
    return new_engine(m, parts, m.height, m.width)


def nanmean(x: Tensor) -> float:
    """Mean of the finite entries (NaN marks a frame without output or an undefined score); NaN if none."""
    ok = ~torch.isnan(x)
    return float(x[ok].double().mean()) if bool(ok.any()) else float("nan")
