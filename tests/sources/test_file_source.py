"""File source: loops forever, paced in real time by the file's pts, scaled to the video size."""

from __future__ import annotations

import threading
import time

import av
import numpy as np
from source_harness import encode_all, read_until_error

from streamer import config
from streamer.sources import build_source
from streamer.sources.file import FileSource
from streamer.sources.pattern import read_stamp, stamp_index


def make_clip(path, frames: int, fps: int, width: int = 192, height: int = 108) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "20"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        encode_all(out, stream, (stamped_frame(i, width, height) for i in range(frames)))


def stamped_frame(i: int, width: int, height: int) -> av.VideoFrame:
    """Frame i of the test clip: a flat grey that brightens with i, stamped with i, pts i."""
    px = np.full((height, width, 3), 40 + 10 * i, np.uint8)
    stamp_index(px, i)
    frame = av.VideoFrame.from_ndarray(px, format="rgb24")
    frame.pts = i
    return frame


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
    stopped = read_until_error(source)
    assert not stopped.still_running and stopped.stop_s < 0.5
    assert "does not exist" in source.last_error and "source.path" in source.last_error


def test_file_without_video_is_an_error(tmp_path):
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        encode_all(out, stream, [frame])
    source = build_source(settings(wav))
    read_until_error(source)
    assert "no video stream" in source.last_error
