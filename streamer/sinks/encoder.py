"""One PyAV output container with one encoded video stream: what the network and record sinks share."""

from __future__ import annotations

import logging
from typing import Any

import av
import numpy as np

from streamer.frames import Frame
from streamer.sinks import FrameClock, Sink, frame_rgb
from streamer.sinks.encoder_process import EncoderProcess, can_spawn

log = logging.getLogger(__name__)


class VideoEncoder:
    """Encodes RGB frames (converted to yuv420p by PyAV's reformatter) and muxes them as they come.

    Timestamps come from a `FrameClock` (wall time on the 1/fps grid), so the output's duration is the
    stream's real duration.
    """

    def __init__(
        self,
        target: str,
        *,
        format: str | None,
        width: int,
        height: int,
        fps: float,
        codec: str = "libx264",
        codec_options: dict[str, str] | None = None,
        container_options: dict[str, str] | None = None,
        bit_rate: int = 0,
        gop: int = 0,
        packet_suffix: bytes = b"",
    ) -> None:
        self.clock = FrameClock(fps)
        self.container = av.open(target, mode="w", format=format, options=container_options or {})
        try:
            stream = self.container.add_stream(codec, rate=self.clock.rate, options=codec_options or {})
            assert isinstance(stream, av.VideoStream), f"{codec} is not a video encoder"
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            ctx = stream.codec_context
            ctx.time_base = 1 / self.clock.rate
            if bit_rate:
                ctx.bit_rate = bit_rate
            if gop:
                ctx.gop_size = gop
            ctx.open()  # fail here (bad codec option, odd size) rather than on the first frame
        except BaseException:
            self.container.close()
            raise
        self.stream = stream
        self.packet_suffix = packet_suffix
        self.frames = 0
        self.dropped = 0  # never: encode() blocks until done (the same interface as EncoderProcess)
        self._closed = False

    def encode(self, pixels: np.ndarray, pts: int | None = None) -> None:
        """Encode and mux one frame; `pts` (on the 1/fps grid) from the caller's clock, else from ours."""
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = self.clock.next_pts() if pts is None else pts
        frame.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(self._with_suffix(packet) if self.packet_suffix else packet)
        self.frames += 1

    def _with_suffix(self, packet: av.Packet) -> av.Packet:
        out = av.Packet(bytes(packet) + self.packet_suffix)
        out.pts, out.dts, out.time_base = packet.pts, packet.dts, packet.time_base
        out.is_keyframe = packet.is_keyframe
        out.stream = packet.stream
        return out

    def close(self) -> None:
        """Flush the encoder and write the trailer: the output is complete and playable after this."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


def open_encoder(target: str, **kwargs: Any) -> EncoderProcess | VideoEncoder:
    """A `VideoEncoder` in a child process; in this process only where no child may be started."""
    if can_spawn():
        return EncoderProcess(target, **kwargs)
    log.info("encoding %s in this process: a daemonic process may not start the encoder process", target)
    return VideoEncoder(target, **kwargs)


class EncodingSink(Sink):
    """A sink whose output is one `VideoEncoder` run in a child process (network, record): subclasses
    open `self._encoder`. An error in the child is raised from the next write()."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder: EncoderProcess | VideoEncoder | None = None
        self._size = (0, 0)

    def write(self, frame: Frame) -> None:
        if self._encoder is None:
            raise RuntimeError(f"{type(self).__name__}.write before open")
        self._encoder.encode(frame_rgb(frame, *self._size))
        self.frames_written += 1

    @property
    def frames_dropped(self) -> int:
        """Frames refused because the encoder process was a whole queue behind."""
        return self._encoder.dropped if self._encoder is not None else 0

    def close(self) -> None:
        """Flush and finalise (a recording is playable after this); safe to call twice."""
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.close()
