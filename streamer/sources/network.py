"""Network source: udp/tcp/rtmp MPEG-TS or FLV through PyAV, tuned for latency.

A small probesize opens the stream within a frame or two (the decoder then waits for the next
keyframe by itself); `nobuffer`/`low_delay` keep the demuxer and decoder from holding frames; udp
gets a big receive fifo that drops on overrun instead of failing. PyAV's interrupt timeout bounds
every open and read by source.timeout_s, so a dead sender ends the session and the base class
reconnects. PyAV's FFmpeg has no SRT protocol ('srt' in av.formats_available is the subtitle format).

Garbage (random bytes, torn or truncated MPEG-TS) is skipped by the demuxer and counted as decode
errors by the decoder until the next keyframe. Two failures would not end on their own, as data keeps
arriving, so each is turned into a reopen:
- a udp sender whose streams have other ids (another program on the same port): FFmpeg adds
  streams for them, and PyAV's demux skips packets of streams it did not see at open without ever
  returning. The stream count is probed once and the real open caps it (`max_streams`), so new
  streams fail the read instead, and the next session probes again;
- packets of our stream that give no picture (another codec on the same id, endless garbage): a
  session without a picture for source.timeout_s (JOIN_GRACE_S before its first, which may wait for a
  keyframe) ends.
"""

from __future__ import annotations

import threading
import time
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
JOIN_GRACE_S = 10.0  # a session's first picture waits for a keyframe: OBS's FFmpeg output puts one every 250 frames


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
        self.max_streams: int | None = None  # MPEG-TS: streams the sender declared when last probed

    def describe(self) -> str:
        return f"network {self.settings.source.url}"

    def _options(self) -> dict[str, str]:
        if self.format == "mpegts":  # streams are declared up front (PAT/PMT): probing can be minimal
            probe = {"probesize": "32", "analyzeduration": "100000"}
        else:  # FLV and others announce streams with their first packets: read a little further
            probe = {"probesize": "500000", "analyzeduration": "500000"}
        return {**probe, "fflags": "nobuffer", "flags": "low_delay"}

    def _open(self, url: str, options: dict[str, str], timeout: float) -> av.container.InputContainer:
        try:
            return av.open(url, format=self.format, options=options, timeout=(timeout, timeout))
        except av.ExitError as e:
            raise SourceError(f"nothing received within {timeout:g} s") from e
        except av.FFmpegError as e:
            self.max_streams = None  # the sender's streams may have changed since they were counted
            raise SourceError(f"cannot open: {e}") from e

    def _open_capped(self, url: str, timeout: float) -> av.container.InputContainer:
        """Open the input; MPEG-TS over udp with max_streams set to what the sender declares (probed by
        one extra open when not known yet). Not over tcp: a second connection could end a sender that
        serves one client, and a new sender there is a new connection, hence a new session anyway."""
        options = self._options()
        if self.format == "mpegts" and self.scheme == "udp":
            if self.max_streams is None:
                with self._open(url, options, timeout) as probe:
                    self.max_streams = len(probe.streams)
            options["max_streams"] = str(self.max_streams)
        return self._open(url, options, timeout)

    def _read(self, halt: threading.Event) -> Iterator[Frame]:
        url = input_url(self.settings.source.url)
        timeout = self.settings.source.timeout_s
        container = self._open_capped(url, timeout)
        try:
            if not container.streams.video:
                self.max_streams = None
                raise SourceError(f"no video stream in the {self.format or 'probed'} stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            ctx.thread_type = "SLICE"  # frame threads would hold back one frame per thread
            ctx.flags |= int(av.codec.context.Flags.low_delay)
            opened, last_picture = time.monotonic(), None
            try:
                for packet in container.demux(stream):
                    if halt.is_set():
                        return
                    try:
                        decoded_frames = packet.decode()
                    except av.FFmpegError:  # joined mid-GOP, a lost datagram, garbage: wait for the next keyframe
                        self.decode_errors += 1
                        decoded_frames = []
                    if decoded_frames:
                        last_picture = time.monotonic()
                    else:
                        _check_pictures(opened, last_picture, timeout)
                    for decoded in decoded_frames:
                        yield self._emit(to_rgb(decoded, self.width, self.height))
            except av.ExitError as e:
                raise SourceError(f"no data for {timeout:g} s") from e
            except av.error.MemoryError as e:  # what FFmpeg says when max_streams stops a new stream
                self.max_streams = None
                raise SourceError("the sender changed its streams (another sender on this port?); reopening") from e
        finally:
            container.close()


def _check_pictures(opened: float, last_picture: float | None, timeout: float) -> None:
    """SourceError when packets keep coming but no picture has for too long."""
    now = time.monotonic()
    if last_picture is None and now - opened > max(timeout, JOIN_GRACE_S):
        raise SourceError(f"data but no picture in {max(timeout, JOIN_GRACE_S):g} s (not a stream we can decode)")
    if last_picture is not None and now - last_picture > timeout:
        raise SourceError(f"data but no picture for {timeout:g} s (garbage, or another codec)")
