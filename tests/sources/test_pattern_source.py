"""Pattern source: size, real-time pace, burnt-in counter that survives x264 and scaling."""

from __future__ import annotations

import io
import threading
import time

import av
import numpy as np
import pytest
from source_harness import encode_all, read_until_error

from streamer import config
from streamer.sources import build_source
from streamer.sources.pattern import PatternSource, read_stamp, stamp_index


def settings(width: int = 160, height: int = 96, fps: float = 30.0, **source):
    return config.from_dict({"video": {"width": width, "height": height, "fps": fps}, "source": source}, "test")


def take(source, n: int) -> list:
    stop = threading.Event()
    out = []
    for frame in source.frames(stop):
        out.append(frame)
        if len(out) == n:
            stop.set()
    return out


def test_pattern_frames_have_the_size_rate_and_increasing_stamps():
    source = build_source(settings(fps=30.0))
    assert isinstance(source, PatternSource)
    t0 = time.monotonic()
    frames = take(source, 16)
    elapsed = time.monotonic() - t0
    assert all(f.pixels.shape == (96, 160, 3) and f.pixels.dtype == np.uint8 for f in frames)
    # 15 intervals at 30 fps = 0.5 s; generous upper bound for a busy 2-core machine
    assert 0.4 <= elapsed <= 1.5, elapsed
    assert [f.index for f in frames] == list(range(16))
    assert [read_stamp(f.pixels) for f in frames] == list(range(16))
    assert frames[5].pts == pytest.approx(5 / 30)
    assert all(b.capture_time > a.capture_time for a, b in zip(frames, frames[1:], strict=False))
    # the pattern moves (testsrc2 has a moving element): not the same picture twice outside the stamp
    assert not np.array_equal(frames[0].pixels[100:], frames[10].pixels[100:]) or not np.array_equal(
        frames[0].pixels[:, 140:], frames[10].pixels[:, 140:])
    source.close()


def test_stamp_survives_x264_round_trip_and_resizing():
    width, height = 320, 180
    rng = np.random.default_rng(0)
    indices = [0, 1, 7, 1000, 65535, 2**24 - 1, 123456]
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mpegts")
    stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "tune": "zerolatency", "crf": "35"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    frames = []
    for i, index in enumerate(indices):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # worst case: noise around the code
        stamp_index(pixels, index)
        frames.append(av.VideoFrame.from_ndarray(pixels, format="rgb24"))
        frames[-1].pts = i
    encode_all(out, stream, frames)
    out.close()
    buf.seek(0)
    decoded = list(av.open(buf, "r", format="mpegts").decode(video=0))
    assert len(decoded) == len(indices)
    for frame, index in zip(decoded, indices, strict=True):
        assert read_stamp(frame.to_ndarray(format="rgb24")) == index
        for w, h in [(160, 90), (640, 360), (256, 256)]:  # down, up, and aspect change (the model size)
            assert read_stamp(frame.reformat(width=w, height=h, format="rgb24").to_ndarray()) == index, (w, h)


def test_read_stamp_rejects_frames_without_a_code():
    rng = np.random.default_rng(1)
    assert read_stamp(np.zeros((180, 320, 3), np.uint8)) is None
    assert read_stamp(np.full((180, 320, 3), 255, np.uint8)) is None
    assert read_stamp(rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)) is None
    pixels = np.zeros((180, 320, 3), np.uint8)
    stamp_index(pixels, 42)
    pixels[16:32, 16:32] = 255 - pixels[16:32, 16:32]  # flip one data cell: the CRC must catch it
    assert read_stamp(pixels) is None
    with pytest.raises(ValueError, match="too small"):
        stamp_index(np.zeros((8, 8, 3), np.uint8), 1)


def test_pattern_stop_is_honoured_quickly():
    source = build_source(settings(fps=5.0))
    stop = threading.Event()
    got = []

    def consume():
        for frame in source.frames(stop):
            got.append(frame)

    th = threading.Thread(target=consume)
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    stop.set()
    th.join(2.0)
    assert not th.is_alive() and time.monotonic() - t0 < 0.5
    assert got, "no frame in 0.3 s"
    source.close()


def test_bad_pattern_name_is_reported_with_the_fix():
    source = build_source(settings(pattern="nosuchpattern"))
    read_until_error(source, wait_s=3)
    assert "nosuchpattern" in source.last_error and "testsrc2" in source.last_error
