"""Camera source: a capture device, which is how the OBS virtual camera (or a webcam) is tapped.

Windows reads DirectShow and macOS AVFoundation through PyAV's `format=`. Linux reads v4l2 through
OpenCV, because PyAV's wheels are built without v4l2 input. On Linux, OBS's virtual camera is a
v4l2loopback device that only delivers frames while OBS's virtual camera is started; until then the
source keeps retrying with backoff.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from streamer.frames import Frame
from streamer.sources import Source, SourceError, to_rgb

if TYPE_CHECKING:
    from streamer.config import Settings

_LIST_DEVICES = {
    "dshow": "list cameras with: ffmpeg -hide_banner -list_devices true -f dshow -i dummy "
             "(use source.device = \"video=<name>\", e.g. \"video=OBS Virtual Camera\")",
    "avfoundation": "list cameras with: ffmpeg -hide_banner -f avfoundation -list_devices true -i \"\" "
                    "(use source.device = \"<index>\" or \"<name>\")",
    "v4l2": "list cameras with: v4l2-ctl --list-devices; for OBS's virtual camera load v4l2loopback "
            "(sudo modprobe v4l2loopback devices=2 exclusive_caps=1) and start it in OBS (Start Virtual Camera)",
}


def default_backend(platform: str | None = None) -> str:
    platform = platform or sys.platform
    if platform.startswith("win"):
        return "dshow"
    if platform == "darwin":
        return "avfoundation"
    return "v4l2"


class CameraSource(Source):
    """Reads source.device with source.camera_backend ("auto" picks the OS's native one)."""

    name = "camera"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        cfg = self.settings.source
        self.backend = default_backend() if cfg.camera_backend == "auto" else cfg.camera_backend
        self.device = cfg.device or self._default_device()
        if self.backend != "v4l2" and self.backend not in av.formats_available:
            raise SourceError(f"camera_backend {self.backend!r} is not available on {sys.platform} "
                              f"(this PyAV has no {self.backend} input); use camera_backend = 'auto'")

    def _default_device(self) -> str:
        return {"dshow": "video=OBS Virtual Camera", "avfoundation": "0", "v4l2": "/dev/video0"}[self.backend]

    def describe(self) -> str:
        return f"camera {self.backend} {self.device}"

    def _read(self, halt: threading.Event) -> Iterator[Frame]:
        if self.backend == "v4l2":
            yield from self._read_v4l2(halt)
        else:
            yield from self._read_pyav(halt)

    # ------------------------------------------------------------------ Windows / macOS

    def _read_pyav(self, halt: threading.Event) -> Iterator[Frame]:
        options = {"rtbufsize": "16M"} if self.backend == "dshow" else {}
        if self.backend == "avfoundation":
            # AVFoundation refuses its default 29.97 with most cameras; ask for the pipeline rate.
            options = {"framerate": f"{self.fps:g}", "pixel_format": "uyvy422"}
        timeout = self.settings.source.timeout_s
        try:
            container = av.open(self.device, format=self.backend, options=options, timeout=(timeout, timeout))
        except av.FFmpegError as e:
            raise SourceError(f"cannot open camera {self.device!r} ({self.backend}): {e}; "
                              f"{_LIST_DEVICES[self.backend]}") from e
        try:
            stream = container.streams.video[0]
            try:
                for decoded in container.decode(stream):
                    if halt.is_set():
                        return
                    yield self._emit(to_rgb(decoded, self.width, self.height))
            except av.ExitError as e:
                raise SourceError(f"camera {self.device!r} delivered nothing for {timeout:g} s") from e
        finally:
            container.close()

    # ------------------------------------------------------------------ Linux

    def _read_v4l2(self, halt: threading.Event) -> Iterator[Frame]:
        try:
            import cv2
        except ImportError as e:
            raise SourceError("reading a v4l2 camera needs OpenCV: pip install opencv-python-headless") from e
        device: int | str = int(self.device) if self.device.isdigit() else self.device
        if isinstance(device, str) and not os.path.exists(device):
            raise SourceError(f"camera device {device} does not exist; {_LIST_DEVICES['v4l2']}")
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        try:
            if not cap.isOpened():
                raise SourceError(f"cannot open camera {device} with v4l2 (not a capture device, busy, or no "
                                  f"permission: add yourself to the 'video' group); {_LIST_DEVICES['v4l2']}")
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # hold one frame, not four: less lag
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.settings.source.timeout_s * 1000)
            while not halt.is_set():
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    raise SourceError(f"camera {device} stopped delivering frames "
                                      "(OBS virtual camera stopped, or the device was unplugged)")
                yield self._emit(_bgr_to_rgb(cv2, bgr, self.width, self.height))
        finally:
            cap.release()


def _bgr_to_rgb(cv2: Any, bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    if bgr.shape[1] != width or bgr.shape[0] != height:
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
