"""Network source: udp/tcp/rtmp MPEG-TS or FLV through PyAV, tuned for latency.

A small probesize opens the stream within a frame or two (the decoder then waits for the next
keyframe by itself); `nobuffer`/`low_delay` keep the demuxer and decoder from holding frames; udp
gets a big receive fifo that drops on overrun instead of failing. PyAV's interrupt timeout bounds
every open and read by source.timeout_s, so a dead sender ends the session and the base class
reconnects. PyAV's FFmpeg has no SRT protocol ('srt' in av.formats_available is the subtitle format).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import av

from streamer.frames import Frame
from streamer.sources import Source, SourceError, to_rgb

if TYPE_CHECKING:
    from streamer.config import Settings

SCHEMES = ("udp", "tcp", "rtmp", "rtmps", "rtp", "http", "https")
_DEFAULT_FORMAT = {"udp": "mpegts", "tcp": "mpegts", "rtp": "", "rtmp": "flv", "rtmps": "flv"}
_UDP_DEFAULTS = {"fifo_size": "50000", "overrun_nonfatal": "1"}  # fifo in 188-byte packets (~9 MB)


def input_url(url: str) -> str:
    """The URL with our udp receive defaults added (the streamer's own query options win)."""
    parts = urlsplit(url)
    if parts.scheme != "udp":
        return url
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in _UDP_DEFAULTS.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def check_url(url: str, schemes: tuple[str, ...] = SCHEMES) -> str:
    """The URL's scheme, or SourceError saying what is wrong with it."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "srt":
        raise SourceError("PyAV's bundled FFmpeg has no SRT protocol; send MPEG-TS over udp:// instead")
    if scheme not in schemes:
        raise SourceError(f"unsupported URL {url!r}: use one of {', '.join(s + '://' for s in schemes)}")
    if not urlsplit(url).hostname and scheme != "udp":
        raise SourceError(f"URL {url!r} has no host")
    return scheme


class NetworkSource(Source):
    """Receives a live stream; a silent or broken stream is dropped after source.timeout_s and reopened."""

    name = "network"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        cfg = self.settings.source
        self.scheme = check_url(cfg.url)
        self.format = cfg.format or _DEFAULT_FORMAT.get(self.scheme, "") or None
        self.decode_errors = 0

    def describe(self) -> str:
        return f"network {self.settings.source.url}"

    def _options(self) -> dict[str, str]:
        if self.format == "mpegts":  # streams are declared up front (PAT/PMT): probing can be minimal
            probe = {"probesize": "32", "analyzeduration": "100000"}
        else:  # FLV and others announce streams with their first packets: read a little further
            probe = {"probesize": "500000", "analyzeduration": "500000"}
        return {**probe, "fflags": "nobuffer", "flags": "low_delay"}

    def _read(self, halt: threading.Event) -> Iterator[Frame]:
        cfg = self.settings.source
        url = input_url(cfg.url)
        timeout = cfg.timeout_s
        try:
            container = av.open(url, format=self.format, options=self._options(), timeout=(timeout, timeout))
        except av.ExitError as e:
            raise SourceError(f"nothing received within {timeout:g} s") from e
        except av.FFmpegError as e:
            raise SourceError(f"cannot open: {e}") from e
        try:
            if not container.streams.video:
                raise SourceError(f"no video stream in the {self.format or 'probed'} stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            ctx.thread_type = "SLICE"  # frame threads would hold back one frame per thread
            ctx.flags |= int(av.codec.context.Flags.low_delay)
            try:
                for packet in container.demux(stream):
                    if halt.is_set():
                        return
                    try:
                        decoded_frames = packet.decode()
                    except av.InvalidDataError:  # joined mid-GOP or a lost datagram: wait for the next keyframe
                        self.decode_errors += 1
                        continue
                    for decoded in decoded_frames:
                        yield self._emit(to_rgb(decoded, self.width, self.height))
            except av.ExitError as e:
                raise SourceError(f"no data for {timeout:g} s") from e
        finally:
            container.close()
