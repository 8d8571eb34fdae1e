"""Periodic sample clips: the model being trained, run through the daemon's real streaming engine.

Each sample takes a clip the training data would produce (fixed seed, so every sample of a run shows the
same clips), streams it frame by frame through `ModelTransform` (the engine the daemon runs: streaming
autoencoder, SDEdit at the configured strength, causal KV cache, few-step sampler), and writes
`out_dir/samples/step_NNNNNNN.mp4` with input | model output | procedural target side by side (PyAV,
H.264). What you see is what the daemon would show with these weights.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol

import av
import numpy as np
import torch

from streamer.config import ModelSettings
from streamer.frames import Frame
from streamer.model.dit import DiT
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts
from streamer.model.vae import TAEHV
from streamer.prompts import PromptState
from streamer.train.config import TrainConfig
from streamer.train.data import ClipSource, make_batch

log = logging.getLogger(__name__)
SAMPLE_SEED = 1_000_003  # a seed training never uses for its own batches
# the engine's presets by name (a run of another architecture samples as tiny)
_ENGINE_PRESET: dict[str, Literal["tiny", "wan-1.3b", "wan-14b"]] = {n: n for n in ("tiny", "wan-1.3b", "wan-14b")}


class SampleParts(Protocol):
    """What a sample needs from a training run (the Trainer has these; nothing else of it is read)."""

    @property
    def cfg(self) -> TrainConfig: ...
    @property
    def dit(self) -> DiT | None: ...
    @property
    def vae(self) -> TAEHV: ...
    @property
    def text(self) -> Callable[[list[str]], torch.Tensor]: ...  # prompt states, as the DiT was trained on them
    @property
    def source(self) -> ClipSource: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def out_dir(self) -> Path: ...


class _FixedText:
    """A run's prompt states as the engine's TextEncoder."""

    def __init__(self, text: Callable[[list[str]], torch.Tensor], dit: DiT) -> None:
        self.text = text
        self.text_len, self.text_dim, self.encoder_id = dit.cfg.text_len, dit.cfg.text_dim, "train-states"

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.text(prompts).cpu()


def stream_clip(engine: ModelTransform, frames: np.ndarray, prompt: str) -> np.ndarray:
    """Run uint8 frames [T, H, W, 3] through the engine as a live stream; returns the outputs, each
    aligned to its input frame (missing leading outputs, e.g. while a stream batch fills, are black)."""
    engine.reset()
    state = PromptState(text=prompt)
    out: dict[int, np.ndarray] = {}
    for i, px in enumerate(frames):
        for f in engine.step(Frame(pixels=px, capture_time=float(i), index=i), state):
            out[f.index] = f.pixels
    return np.stack([out.get(i, np.zeros_like(frames[0])) for i in range(len(frames))])


def write_video(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """uint8 [T, H, W, 3] -> H.264 MP4 (yuv420p; odd sizes padded by one pixel)."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        h, w = frames.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@torch.no_grad()
def write_samples(run: SampleParts, step: int, clips: int = 2, steps: int = 2) -> Path:
    """Write the sample video for `step` and return its path."""
    cfg, dit = run.cfg, run.dit
    if dit is None:
        raise ValueError("samples need a DiT (stage = 'dit')")
    settings = dataclasses.replace(
        ModelSettings(), preset=_ENGINE_PRESET.get(cfg.preset, "tiny"),
        width=cfg.width, height=cfg.height, steps=steps, shift=cfg.shift, motion_aware=False,
        window=max(cfg.window, cfg.sinks + 2) if cfg.window else 6, sinks=cfg.sinks if cfg.window else 3,
        device=str(run.device), seed=0,
    )  # fmt: skip
    model = copy.deepcopy(dit).eval()  # the engine may cast or cache; the trained module stays untouched
    parts = LoadedParts(
        run.device, torch.float32, model, run.vae, _FixedText(run.text, dit), {"DiT": f"step {step}"}, []
    )
    engine = ModelTransform(settings, parts)
    batch = make_batch(run.source, clips, cfg.sample_frames * run.vae.frames_per_latent, SAMPLE_SEED, 0, 0)
    rows = []
    for i in range(clips):
        u8 = (batch.inputs[i].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        tgt = (batch.targets[i].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        rows.append(np.concatenate([u8, stream_clip(engine, u8, batch.prompts[i]), tgt], axis=2))
    engine.close()
    path = run.out_dir / "samples" / f"step_{step:07d}.mp4"
    write_video(path, np.concatenate(rows, axis=1))
    (path.with_suffix(".txt")).write_text("\n".join(batch.prompts) + "\n")
    log.info("sample clip: %s (input | model | target; prompts in %s)", path, path.with_suffix(".txt").name)
    return path
