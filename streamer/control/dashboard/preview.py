"""Live preview of the pipeline's output for the dashboard: a single JPEG or an MJPEG stream.

JPEG comes from FFmpeg's mjpeg encoder through PyAV (already a dependency; no Pillow needed).
Encoding runs on a worker thread so the event loop never blocks, and one encoded picture is shared
by every viewer: a new frame is encoded at most `preview_fps` times a second however many browser
tabs watch, so the preview can never steal a noticeable share of the CPU from the video.

Streams are capped per client address (`max_per_client`) and in all (`max_streams`), so one client
cannot take every slot; other sites' pages are refused before they get here (server.py). A stream
repeats its last picture every KEEPALIVE_S while the output stands still, so a page can tell a
still picture from a dead connection and reconnect (overlays/preview.js).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import threading
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiohttp import web

from streamer.frames import Frame

log = logging.getLogger(__name__)

BOUNDARY = "streamerframe"
KEEPALIVE_S = 2.0  # resend the last picture this often when no new one comes (pages treat 3x as dead)


def to_rgb_array(pixels: Any) -> np.ndarray:
    """HxWx3 uint8 RGB numpy array from a frame's pixels (numpy, or a torch tensor on any device)."""
    if hasattr(pixels, "detach"):  # a torch tensor: the engine may hand back a GPU tensor
        pixels = pixels.detach().to("cpu").numpy()
    array = np.asarray(pixels)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"preview needs HxWx3 uint8 RGB pixels, got shape {array.shape} dtype {array.dtype}")
    return np.ascontiguousarray(array)


class JpegEncoder:
    """RGB numpy -> JPEG bytes with the mjpeg encoder; the codec context is reused while the size holds.

    quality: FFmpeg's qscale, 2 (best, biggest) to 31 (worst, smallest).
    max_width: larger frames are scaled down (aspect kept) before encoding; 0 = never scale.
    Not thread-safe: one caller at a time (PreviewFeed serialises).
    """

    def __init__(self, quality: int = 5, max_width: int = 640) -> None:
        if not 2 <= quality <= 31:
            raise ValueError(f"JPEG quality (qscale) must be 2-31, got {quality}")
        self.quality = quality
        self.max_width = max_width
        self._ctx: Any = None
        self._size: tuple[int, int] = (0, 0)
        self._pts = 0

    def _target_size(self, width: int, height: int) -> tuple[int, int]:
        if self.max_width and width > self.max_width:
            height = max(2, round(height * self.max_width / width))
            width = self.max_width
        # 4:2:0 chroma wants even sides
        return width - width % 2 or 2, height - height % 2 or 2

    def _context(self, size: tuple[int, int]) -> Any:
        if self._ctx is None or size != self._size:
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.width, ctx.height = size
            ctx.pix_fmt = "yuvj420p"  # full-range 4:2:0, what browsers expect from a JPEG
            ctx.time_base = fractions.Fraction(1, 1000)
            ctx.options = {"qmin": str(self.quality), "qmax": str(self.quality)}
            ctx.open()
            self._ctx, self._size = ctx, size
        return self._ctx

    def encode(self, pixels: Any) -> bytes:
        rgb = to_rgb_array(pixels)
        height, width = rgb.shape[:2]
        size = self._target_size(width, height)
        ctx = self._context(size)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(width=size[0], height=size[1], format="yuvj420p")
        frame.pts = self._pts
        self._pts += 1
        packets = ctx.encode(frame)  # mjpeg is intra-only: one packet out per frame in
        data = b"".join(bytes(p) for p in packets)
        if not data.startswith(b"\xff\xd8"):
            raise RuntimeError("the mjpeg encoder returned no JPEG for this frame")
        return data


class PreviewFeed:
    """The latest output frame as JPEG, encoded once per new frame and shared by all viewers."""

    def __init__(
        self,
        latest: Callable[[], Frame | None],
        *,
        fps: float = 10.0,
        quality: int = 5,
        max_width: int = 640,
        max_streams: int = 16,
        max_per_client: int = 4,
    ) -> None:
        self._latest = latest
        self._encoder = JpegEncoder(quality, max_width)
        self._encode_lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._jpeg: bytes | None = None
        self.interval = 1.0 / fps
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.streams = 0
        self._per_client: dict[str, int] = {}
        self.closing = asyncio.Event()

    def _encode_latest(self) -> bytes | None:
        frame = self._latest()
        if frame is None:
            return None
        key = (id(frame.pixels), frame.index, frame.capture_time)
        with self._encode_lock:
            if key != self._key:
                self._jpeg = self._encoder.encode(frame.pixels)
                self._key = key
            return self._jpeg

    async def jpeg(self) -> bytes | None:
        """The newest frame as JPEG, or None before the pipeline produced any output."""
        return await asyncio.to_thread(self._encode_latest)

    # ------------------------------------------------------------------ HTTP handlers

    async def handle_jpeg(self, request: web.Request) -> web.Response:
        data = await self.jpeg()
        if data is None:
            raise web.HTTPServiceUnavailable(text="no output frame yet", headers={"Retry-After": "1"})
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def handle_mjpeg(self, request: web.Request) -> web.StreamResponse:
        """multipart/x-mixed-replace stream: an <img> shows it live with no script at all."""
        client = request.remote or "?"
        if self._per_client.get(client, 0) >= self.max_per_client:
            raise web.HTTPServiceUnavailable(text=f"at most {self.max_per_client} preview streams per client; "
                                             "close another preview first", headers={"Retry-After": "2"})  # fmt: skip
        if self.streams >= self.max_streams:
            raise web.HTTPServiceUnavailable(text=f"at most {self.max_streams} preview streams at once",
                                             headers={"Retry-After": "2"})  # fmt: skip
        self.streams += 1
        self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                    "Cache-Control": "no-store",
                }
            )
            await response.prepare(request)
            last: bytes | None = None
            sent_at = 0.0
            loop = asyncio.get_running_loop()
            while not self.closing.is_set():
                data = await self.jpeg()
                if data is not None and (data is not last or loop.time() - sent_at >= KEEPALIVE_S):
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                    try:
                        await response.write(head.encode("ascii") + data + b"\r\n")
                    except ConnectionResetError:  # the viewer closed the tab: the normal way a stream ends
                        break
                    last, sent_at = data, loop.time()
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: see live.py on wait_for
                    async with asyncio.timeout(self.interval):
                        await self.closing.wait()
            return response
        finally:
            self.streams -= 1
            self._per_client[client] -= 1
            if not self._per_client[client]:
                del self._per_client[client]
