"""Virtual-camera sink (pyvirtualcam): the lowest-latency way back into OBS where a driver exists.

Per OS: Linux writes a v4l2loopback device (pick one explicitly: OBS's own virtual camera may own
another), Windows writes the Unity Capture driver (pyvirtualcam's `obs` backend would collide with
the OBS virtual camera the daemon taps), macOS can only write OBS's virtual camera. Frames are sent
as RGB and pyvirtualcam converts them to the device's format (I420/NV12/RGBA) on the CPU. Pacing is
the output thread's job, so pyvirtualcam's sleep_until_next_frame() is not used.
"""

from __future__ import annotations

import sys
from typing import Any

from streamer.frames import Frame
from streamer.sinks import Sink, SinkUnavailable, frame_rgb


def install_hint(platform: str | None = None) -> str:
    """What to install so a virtual camera backend exists on this OS."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return ("install v4l2loopback (Debian/Ubuntu: sudo apt install v4l2loopback-dkms; Fedora: akmod-v4l2loopback), "
                "then load it with two devices: sudo modprobe v4l2loopback devices=2 exclusive_caps=1 "
                "(set sinks.virtualcam.device to the one OBS's own virtual camera does not use), "
                "or use the network sink instead: sinks.enabled = ['network']")
    if platform.startswith("win"):
        return ("install the Unity Capture driver (github.com/schellingb/UnityCapture: run Install.bat as administrator) "
                "and set sinks.virtualcam.backend = 'unitycapture' (the 'obs' backend would collide with the OBS "
                "virtual camera the daemon reads), or use the network sink: sinks.enabled = ['network']")
    if platform == "darwin":
        return ("install OBS Studio 30+ and start its virtual camera once (Tools → Start Virtual Camera, approve the "
                "system extension), keep video.width x height at 1280x720, "
                "or use the network sink: sinks.enabled = ['network']")
    return "no virtual camera backend is known for this OS; use the network sink: sinks.enabled = ['network']"


class VirtualCamSink(Sink):
    """Sends each frame to a pyvirtualcam camera (backend and device from sinks.virtualcam)."""

    name = "virtualcam"

    def __init__(self, settings: Any) -> None:
        super().__init__()
        self.cfg = settings.sinks.virtualcam
        self._cam: Any = None
        self._size = (0, 0)

    def describe(self) -> str:
        if self._cam is not None:
            return f"virtualcam {self._cam.backend} {self._cam.device}"
        return f"virtualcam {self.cfg.backend or 'auto'} {self.cfg.device or '(first free device)'}"

    def open(self, width: int, height: int, fps: float) -> None:
        try:
            import pyvirtualcam
            from pyvirtualcam.camera import BACKENDS
        except ImportError as e:
            raise SinkUnavailable(f"pyvirtualcam is not installed ({e})\npip install pyvirtualcam") from e
        backend = self.cfg.backend or None
        if backend is not None and backend not in BACKENDS:
            known = ", ".join(BACKENDS) or "none"
            raise SinkUnavailable(f"sinks.virtualcam.backend = {backend!r} does not exist on this OS "
                                  f"(available here: {known})\n{install_hint()}")
        if not BACKENDS:
            raise SinkUnavailable(f"pyvirtualcam has no virtual camera backend on {sys.platform}\n{install_hint()}")
        try:
            self._cam = pyvirtualcam.Camera(
                width, height, fps,
                fmt=pyvirtualcam.PixelFormat.RGB,
                backend=backend,
                device=self.cfg.device or None,
            )
        except RuntimeError as e:  # pyvirtualcam's "no backend/device" error, one line per backend tried
            detail = " ".join(str(e).split())
            raise SinkUnavailable(f"no virtual camera available: {detail}\n{install_hint()}") from e
        self._size = (width, height)

    def write(self, frame: Frame) -> None:
        if self._cam is None:
            raise RuntimeError("VirtualCamSink.write before open")
        self._cam.send(frame_rgb(frame, *self._size))
        self.frames_written += 1

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.close()
