"""The one place that builds an engine and chooses how it runs: eager, the GPU fast path, or pipelined.

`new_engine` allocates a `ModelTransform` for loaded parts and attaches the fast path (fused kernels +
one CUDA graph per chunk, streamer/model/fast/) when `model.fast_path` is on and the device is a CUDA
GPU; `build_model_transform` is what the daemon calls: load the parts named in [model], build the
engine, warm it up; with `model.gpus` > 1 it builds the pipelined engine instead (streamer/model/pipeline/:
the layers split over stage processes). The engine itself never imports the fast path.
"""

from __future__ import annotations

import logging
import time

import torch

from streamer.config import ModelSettings, Settings
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts, load_parts, resolve_device
from streamer.model.pipeline.group import stage_devices
from streamer.model.text import wait_for_weights
from streamer.transform import Transform

log = logging.getLogger(__name__)


def new_engine(m: ModelSettings, parts: LoadedParts, frame_height: int, frame_width: int) -> ModelTransform:
    """A fresh engine (a clean stream) on `parts`, with the fast path attached when it can and should run.

    The fast path warms up and captures at the given frame size; a capture failure raises (no silent
    fallback to eager: the daemon's model supervisor then runs passthrough and says why)."""
    engine = ModelTransform(m, parts)
    if m.fast_path and engine.device.type == "cuda":
        from streamer.model.fast.path import enable_fast_path  # Triton + CUDA graphs: imported only on a GPU

        engine.fast = enable_fast_path(engine, frame_height, frame_width)
        engine.reset()  # the warm-up chunks ran before the fast path was attached: forget them there too
    return engine


def build_model_transform(settings: Settings, *, warmup: bool = True) -> Transform:
    """Load (or seed) the parts named in [model], allocate the engine, optionally warm it up once.
    With `model.gpus` > 1 the engine is the pipelined one (streamer/model/pipeline/): the same interface,
    the DiT's layers split over that many stage processes."""
    m, video = settings.model, settings.video
    started = time.monotonic()
    devices = stage_devices(m)  # model.gpus: one device = this process; more = a pipeline of stage processes
    if len(devices) > 1:
        from streamer.model.pipeline.engine import build_pipelined  # spawns processes: imported only when asked

        pipelined = build_pipelined(settings, devices)
        log.info("model ready in %.1f s: %s", time.monotonic() - started, pipelined.status())
        return pipelined
    # umT5's weights (11 GB) are read while the engine is built and warmed up: warm-up and capture never
    # read the prompt (the cross-attention buffers are refilled in place when it is encoded), so only the
    # first chunk needs them. They are waited for here, so a broken text encoder still fails the load.
    parts = load_parts(m, resolve_device(m.device), text_in_background=True)
    engine = new_engine(m, parts, video.height, video.width)
    if warmup and engine.fast is None:
        log.info("model warm-up: one chunk at %dx%d ...", video.width, video.height)
        t0 = time.monotonic()
        grey = torch.full((engine.frames_per_latent, video.height, video.width, 3), 64, dtype=torch.uint8)
        engine.step_tensor(grey.to(engine.device))
        engine.reset()
        log.info("model warm-up: 100%% (%.2f s)", time.monotonic() - t0)
    waited = wait_for_weights(parts.text)
    if waited is not None:
        log.info("text encoder weights ready: waited %.2f s for them after warm-up", waited)
    log.info("model ready in %.1f s: %s (%s)", time.monotonic() - started, engine.status(), parts.describe())
    return engine
