"""The engine interface: what runs on the engine thread between the input and output mailboxes.

A transform takes the newest input frame and the current prompt state and returns zero or more
output frames (a chunked model buffers input and emits several frames at once; a per-frame model
returns exactly one). Output frames keep the capture time of the input frame they came from.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from streamer.frames import Frame
from streamer.prompts import PromptState


class BadOutput(RuntimeError):
    """A transform's output is unusable (not finite, diverged): the pipeline shows the input instead and
    reports it (log, the `model_bad_output` counter, /healthz) until the transform is retried."""


@runtime_checkable
class Transform(Protocol):
    """Implemented by `Passthrough` and by the model engine (streamer.model.engine)."""

    name: str

    def step(self, frame: Frame, prompt: PromptState) -> list[Frame]:
        """Process one input frame (HxWx3 uint8 RGB, the pipeline's output size).
        Returns the frames now ready, each the same size as the input."""
        ...

    def reset(self) -> None:
        """Forget temporal state (KV cache, autoencoder memory): the next frame starts a new stream."""
        ...

    def close(self) -> None:
        """Release devices and memory."""
        ...

    def status(self) -> str:
        """One short line for the status display: device, preset, resolution, weights, path."""
        ...


class Passthrough:
    """Returns the input unchanged: the default and the fallback when a model fails."""

    name = "passthrough"

    def step(self, frame: Frame, prompt: PromptState) -> list[Frame]:
        return [frame]

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def status(self) -> str:
        return "passthrough"
