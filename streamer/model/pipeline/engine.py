"""`PipelinedTransform`: the model over N stage processes, behind the same `Transform` interface.

The daemon's engine thread calls `step(frame, prompt)` as it does on the one-process engine; the host
side is the same (the chunk buffer, `PromptFeed` for strength and prompt transitions, the bad-output
check). A complete chunk is handed to the first stage and `step` returns whatever chunks have come out
of the last stage since, waiting only while N chunks are in flight: so up to N chunks are in the
pipeline at once and each output keeps its input frames' capture times. Text encoding stays here (the
stages get the encoder's states with the chunk they apply to); the autoencoder runs in the stages
(encode on the first, decode on the last: the frames cross the process boundary as uint8, the smallest
form they have). A stage failure raises `StageFailure`: the daemon shows the camera and says why while
the group restarts the stages.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.config import ModelSettings, Settings, effective_strength
from streamer.frames import Frame
from streamer.model.config import preset
from streamer.model.engine import bad_output, stack_chunk
from streamer.model.loading import load_configured_text_encoder
from streamer.model.pipeline.group import PipelineOptions, StageGroup
from streamer.model.text import TextEncoder
from streamer.model.transitions import PromptFeed, PromptTransition
from streamer.prompts import PromptState

log = logging.getLogger(__name__)


class PipelinedTransform:
    """The causal streaming model split over `group`'s stage processes (engine thread only)."""

    name = "model"

    def __init__(self, m: ModelSettings, group: StageGroup, text: TextEncoder, frames_per_latent: int) -> None:
        self.settings, self.group, self.text = m, group, text
        self.frames_per_latent = frames_per_latent
        self.depth = group.size  # chunks in flight: one per stage
        self.text_len = preset(m.preset).text_len
        self._states: np.ndarray | None = None  # prompt states for the next chunk, when they changed
        self._s_init = effective_strength(m)
        self.prompts = PromptFeed(
            lambda t: self.text.encode([t]), m.transition_chunks, self._s_init, self._set_cross, self._set_strength
        )
        self._inbox: list[Frame] = []
        self._pending: collections.deque[list[Frame]] = collections.deque()
        self._in_flight = 0
        self._epoch = self._chunk = 0
        self._generation = group.generation
        self.chunks_done = 0
        self.reset()

    # ---- Transform protocol ------------------------------------------------------------------------
    def step(self, frame: Frame, prompt: PromptState) -> list[Frame]:
        """Buffer a frame; hand a complete chunk to the first stage; return the frames come out since."""
        self.group.check()
        if self.group.generation != self._generation:  # a new set of stages: a new stream, prompt resent
            self._generation = self.group.generation
            self.reset()
        self.prompts.sync(prompt)
        self._inbox.append(frame)
        if len(self._inbox) >= self.frames_per_latent:
            chunk, self._inbox = self._inbox, []
            pixels = stack_chunk(chunk).cpu().numpy()
            self.prompts.advance()
            self.group.submit(("chunk", self._epoch, self._chunk, pixels, self._s_init, self._states))
            self._states = None
            self._pending.append(chunk)
            self._chunk += 1
            self._in_flight += 1
        return self._collect(wait=self._in_flight >= self.depth)

    def drain(self) -> list[Frame]:
        """Wait for every chunk in flight (a bench's or a test's end of input)."""
        out: list[Frame] = []
        while self._in_flight:
            out += self._collect(wait=True)
        return out

    def reset(self) -> None:
        """A new stream: the stages forget cache, autoencoder memory and slots; chunks in flight are dropped."""
        self._epoch += 1
        self._inbox = []
        self._pending.clear()
        self._in_flight = 0
        self.prompts.restart()
        if self.group.ready:
            self.group.submit(("reset", self._epoch))

    def close(self) -> None:
        self.group.close()

    def status(self) -> str:
        m, g = self.settings, self.group
        text = (
            f"model {m.preset} {m.width}x{m.height} {m.steps} steps {m.mode}, pipelined over {g.size} "
            f"{'GPUs (NCCL)' if g.devices[0].startswith('cuda') else 'CPU processes (gloo)'}, layers {g.describe_layers()}"
        )
        dit = g.sources.get("DiT", "")
        if dit.startswith("random"):
            return f"{text} — RANDOM WEIGHTS (output not meaningful)"
        return f"{text} — {dit}"

    @property
    def transition(self) -> PromptTransition | None:
        return self.prompts.transition

    # ---- internals -----------------------------------------------------------------------------------
    def _collect(self, wait: bool) -> list[Frame]:
        """Frames of the chunks come out; with `wait`, until fewer than `depth` are in flight."""
        out: list[Frame] = []
        while True:
            waiting = wait and self._in_flight >= self.depth
            timeout = self.group.options.timeout_s if waiting else 0.0
            held, self.group.held = self.group.held, []  # read while the group waited for statistics
            msgs = held + self.group.results(0.0 if held else timeout)
            if waiting and not msgs:
                raise self.group.fail(f"no chunk came out of the pipeline in {timeout:g} s")
            for _, epoch, _chunk, pixels, ok in msgs:
                if epoch != self._epoch:
                    continue  # from before a reset
                self._in_flight -= 1
                self.group.healthy()
                if pixels is None:  # a stream batch still filling its slots
                    continue
                if not ok:
                    raise bad_output(self.group.sources.get("DiT", "model.checkpoint"))
                self.chunks_done += 1
                meta = self._pending.popleft()[-pixels.shape[0] :]  # a trimmed first decode keeps the newest
                out += [f.with_pixels(pixels[i]) for i, f in enumerate(meta)]
            if not (wait and self._in_flight >= self.depth):
                return out

    def _set_cross(self, states: Tensor) -> None:
        """The next chunk carries these states, zero-padded to text_len as the DiT pads them (exact)."""
        states = states.detach().to("cpu", torch.float32)
        self._states = F.pad(states, (0, 0, 0, self.text_len - states.shape[1])).numpy()

    def _set_strength(self, s_init: float) -> Any:
        self._s_init = s_init


def build_pipelined(
    settings: Settings, devices: list[str], options: PipelineOptions | None = None
) -> PipelinedTransform:
    """The text encoder here (on the first stage's device, by the one-process rules), the stages started."""
    m, video = settings.model, settings.video
    first, cfg = torch.device(devices[0]), preset(m.preset)
    text = load_configured_text_encoder(m, first, cfg)
    group = StageGroup(m, devices, (video.height, video.width), options or PipelineOptions())
    group.start()
    return PipelinedTransform(m, group, text, group.frames_per_latent)
