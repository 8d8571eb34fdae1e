"""Garbage on the network source (issue 15): random bytes, MPEG-TS packets with random payloads, datagrams
cut short, a stream cut mid-packet, a new sender with other stream ids, another codec on the same ids.
The source must never raise out of `frames()`, and must deliver the valid stream's frames again soon
after it returns. The real NetworkSink sends stamped frames to a relay (a UDP socket in the test), which
passes them to the source or mangles them, by phase; the stamps tell which frames came after recovery.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import av
import numpy as np
from source_harness import FPS, H, Sender, W, free_udp_port, network_settings

from streamer.sources import build_source
from streamer.sources.network import NetworkSource
from streamer.sources.pattern import read_stamp, stamp_index

SEED = 15
RECOVERY_S = 4.0  # bound on valid data -> frames again: timeout 0.5 s + backoff 0.4 s + a 0.5 s GOP, with slack for CI


class Relay:
    """UDP relay sender -> source that passes, drops or mangles each datagram according to `mode`."""

    MODES = ("pass", "drop", "random", "ts-junk", "truncate", "cut")

    def __init__(self, to_port: int) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.settimeout(0.05)
        self.port = int(self.rx.getsockname()[1])
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.to = ("127.0.0.1", to_port)
        self.mode = "pass"
        self.rng = random.Random(SEED)
        self.mangled = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, _ = self.rx.recvfrom(65536)
            except TimeoutError:
                continue
            out = self._mangle(data, self.mode)
            if out:
                self.tx.sendto(out, self.to)

    def _mangle(self, data: bytes, mode: str) -> bytes:
        rng = self.rng
        if mode == "pass":
            return data
        self.mangled += 1
        if mode == "random":
            return rng.randbytes(len(data))
        if mode == "ts-junk":  # in sync (0x47 every 188 bytes), random PIDs, flags and payloads
            return b"".join(b"\x47" + rng.randbytes(187) for _ in range(len(data) // 188))
        if mode == "truncate":  # torn TS packets: the demuxer loses sync at every datagram
            return data[: rng.randint(1, len(data) - 1)]
        if mode == "cut":  # the stream ends in the middle of a TS packet
            self.mode = "drop"
            return data[: len(data) // 2 + 3]
        return b""  # drop

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.rx.close()
        self.tx.close()


@dataclass
class Received:
    """What the source delivered, stamped with the time it arrived."""

    frames: list[tuple[float, int | None, tuple[int, ...]]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def stamps_after(self, t: float) -> list[int]:
        return [s for at, s, _ in self.frames if at >= t and s is not None]

    def first_after(self, t: float, at_least: int = 0) -> float | None:
        """Seconds from t to the first frame stamped >= at_least that arrived after t."""
        return next((at - t for at, s, _ in self.frames if at >= t and s is not None and s >= at_least), None)


@contextmanager
def reading(source: NetworkSource) -> Iterator[Received]:
    """Run source.frames() on a thread for the block; any exception out of it is recorded."""
    got = Received()
    stop = threading.Event()

    def consume() -> None:
        try:
            for f in source.frames(stop):
                got.frames.append((time.monotonic(), read_stamp(f.pixels), f.pixels.shape))
        except BaseException as e:  # noqa: BLE001 - the assertion below reports it
            got.errors.append(e)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join(3)
        source.close()
    assert not thread.is_alive(), "frames() did not end after stop"
    assert not got.errors, got.errors


def wait_for_frames(got: Received, since: float, at_least: int = 0) -> float:
    """Seconds until a frame stamped >= at_least arrived after `since`; fails after RECOVERY_S."""
    while time.monotonic() - since < RECOVERY_S:
        delay = got.first_after(since, at_least)
        if delay is not None:
            return delay
        time.sleep(0.02)
    raise AssertionError(f"no frame stamped >= {at_least} within {RECOVERY_S} s of valid data returning")


def test_garbage_then_the_valid_stream_again_recovers_every_time():
    port = free_udp_port()
    relay = Relay(port)
    source = build_source(network_settings(port))
    sender = Sender(network_settings(port, sink_port=relay.port))
    recoveries: dict[str, float] = {}
    try:
        with reading(source) as got:
            wait_for_frames(got, time.monotonic())
            for mode, seconds in [("random", 0.8), ("ts-junk", 0.8), ("truncate", 0.8), ("cut", 0.9)]:
                relay.mode = mode
                time.sleep(seconds)
                sent_before = max(sender.sent)
                back = time.monotonic()
                relay.mode = "pass"
                recoveries[mode] = wait_for_frames(got, back, at_least=sent_before + 1)
            time.sleep(0.5)
    finally:
        sender.close()
        relay.close()
    print(f"\nnetwork source garbage (seed {SEED}): recovery after valid data returned: "
          + ", ".join(f"{m} {s:.2f} s" for m, s in recoveries.items())
          + f"; {relay.mangled} datagrams mangled, {source.decode_errors} decode errors, {source.drops} drops, "
          f"{len(got.frames)} frames")
    assert all(shape == (H, W, 3) for _, _, shape in got.frames)
    assert relay.mangled > 50 and source.decode_errors + source.drops > 0, "the garbage did not reach the decoder"
    tail = got.stamps_after(time.monotonic() - 0.4)
    assert len(tail) >= 5 and tail == sorted(tail), tail  # flowing again, in order


def test_a_source_that_opens_on_garbage_starts_when_valid_data_comes():
    port = free_udp_port()
    relay = Relay(port)
    relay.mode = "random"
    source = build_source(network_settings(port))
    sender = Sender(network_settings(port, sink_port=relay.port))
    try:
        with reading(source) as got:
            time.sleep(1.5)
            assert got.frames == [], "garbage gave frames"
            back = time.monotonic()
            relay.mode = "pass"
            delay = wait_for_frames(got, back)
    finally:
        sender.close()
        relay.close()
    print(f"\nfirst frame {delay:.2f} s after the garbage stopped")


def send_stream(port: int, first: int, seconds: float, *, start_pid: int, codec: str, size: tuple[int, int],
                stop: threading.Event) -> None:
    """Another sender: stamped frames as MPEG-TS over udp, with its own stream ids and codec."""
    w, h = size
    out = av.open(f"udp://127.0.0.1:{port}?pkt_size=1316", "w", format="mpegts",
                  options={"mpegts_start_pid": str(start_pid), "mpegts_pmt_start_pid": str(start_pid + 0x800)})
    stream = out.add_stream(codec, rate=int(FPS))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.codec_context.gop_size = 15
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
    base = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    t0 = time.monotonic()
    i = 0
    try:
        while time.monotonic() - t0 < seconds and not stop.is_set():
            px = base.copy()
            stamp_index(px, first + i)
            frame = av.VideoFrame.from_ndarray(px, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
            i += 1
            stop.wait(max(0.0, t0 + i / FPS - time.monotonic()))
    finally:
        out.close()


def _switch_sender(second: dict[str, object]) -> tuple[float, Received]:
    port = free_udp_port()
    source = build_source(network_settings(port))
    stop = threading.Event()
    with reading(source) as got:
        send_stream(port, 0, 1.2, start_pid=0x100, codec="libx264", size=(W, H), stop=stop)
        assert got.stamps_after(0), "the first sender's frames did not arrive"
        back = time.monotonic()
        other = threading.Thread(target=send_stream, args=(port, 1000, RECOVERY_S + 1.0), kwargs={**second, "stop": stop})
        other.start()
        try:
            delay = wait_for_frames(got, back, at_least=1000)
        finally:
            stop.set()
            other.join(5)
    return delay, got


def test_a_new_sender_with_other_stream_ids_takes_over():
    """FFmpeg adds streams for the new ids and PyAV's demux skips them without returning: before the
    max_streams cap this session hung on the old stream for good, receiving data, delivering nothing."""
    delay, got = _switch_sender({"start_pid": 0x300, "codec": "libx264", "size": (2 * W, 2 * H)})
    print(f"\nnew sender with other stream ids: frames again after {delay:.2f} s")
    assert all(shape == (H, W, 3) for _, _, shape in got.frames)  # scaled to the configured size


def test_another_codec_on_the_same_stream_ids_is_reopened():
    """Same ids, MPEG-2 instead of H.264: the H.264 decoder fails on every packet, data keeps coming;
    the source reopens once no picture came for timeout_s."""
    delay, _ = _switch_sender({"start_pid": 0x100, "codec": "mpeg2video", "size": (W, H)})
    print(f"\nanother codec on the same ids: frames again after {delay:.2f} s")
