"""Media helpers of the training tests: tiny clips written with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "10"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def moving_pattern(n: int, h: int = 80, w: int = 96, seed: int = 0) -> np.ndarray:
    """A textured pattern drifting right: real motion for clip windows and crops."""
    rng = np.random.default_rng(seed)
    base = (rng.random((h // 8, 2 * w // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    return np.stack([base[:, 2 * i : 2 * i + w] for i in range(n)])
