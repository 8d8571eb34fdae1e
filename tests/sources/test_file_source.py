"""File source: loops forever, paced in real time by the file's pts, scaled to the video size."""

from __future__ import annotations

import threading
import time

import av
import numpy as np

from streamer import config
from streamer.sources import build_source
from streamer.sources.file import FileSource
from streamer.sources.pattern import read_stamp, stamp_index


def make_clip(path, frames: int, fps: int, width: int = 192, height: int = 108) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "20"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            px = np.full((height, width, 3), 40 + 10 * i, np.uint8)
            stamp_index(px, i)
            frame = av.VideoFrame.from_ndarray(px, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def settings(path, width=128, height=72):
    return config.from_dict({"video": {"width": width, "height": height, "fps": 30},
                             "source": {"kind": "file", "path": str(path)}}, "test")


def test_file_source_loops_and_paces_in_real_time(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=6, fps=20)  # 0.3 s per loop
    source = build_source(settings(clip))
    assert isinstance(source, FileSource)
    stop = threading.Event()
    got = []
    t0 = time.monotonic()
    for frame in source.frames(stop):
        got.append(frame)
        if len(got) == 15:
            stop.set()
    elapsed = time.monotonic() - t0
    source.close()
    assert [read_stamp(f.pixels) for f in got] == [0, 1, 2, 3, 4, 5] * 2 + [0, 1, 2]
    assert all(f.pixels.shape == (72, 128, 3) for f in got)  # scaled from 192x108
    assert 0.55 <= elapsed <= 1.4, elapsed  # 14 intervals of 50 ms
    pts = [f.pts for f in got]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts  # pts keep growing across loops
    assert abs(pts[14] - 14 * 0.05) < 1e-6
    assert source.drops == 0 and source.reconnects == 0  # looping is not a drop


def test_missing_file_is_reported_and_stop_is_honoured(tmp_path):
    source = build_source(settings(tmp_path / "nope.mp4"))
    stop = threading.Event()
    th = threading.Thread(target=lambda: list(source.frames(stop)))
    th.start()
    deadline = time.monotonic() + 2
    while not source.last_error and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    stop.set()
    th.join(2)
    assert not th.is_alive() and time.monotonic() - t0 < 0.5
    assert "does not exist" in source.last_error and "source.path" in source.last_error


def test_file_without_video_is_an_error(tmp_path):
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    source = build_source(settings(wav))
    stop = threading.Event()
    th = threading.Thread(target=lambda: list(source.frames(stop)))
    th.start()
    deadline = time.monotonic() + 2
    while not source.last_error and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    th.join(2)
    assert "no video stream" in source.last_error
