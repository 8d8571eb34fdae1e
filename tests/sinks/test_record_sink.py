"""Record sink: a playable file with every frame, timestamps that match the real duration."""

from __future__ import annotations

import os
import re
import time

import av
import numpy as np
import pytest

from streamer import config
from streamer.frames import Frame, now
from streamer.sinks import SinkUnavailable, build_sinks
from streamer.sinks.record import KEYFRAME_INTERVAL_S, RecordSink, expand_path
from streamer.sources.pattern import read_stamp, stamp_index

W, H, FPS = 160, 96, 30.0


def settings(path: str):
    return config.from_dict({"video": {"width": W, "height": H, "fps": FPS},
                             "sinks": {"enabled": ["record"], "record": {"path": path}}}, "test")


def write_paced(sink, n: int, fps: float = FPS) -> None:
    t0 = now()
    for i in range(n):
        px = np.full((H, W, 3), (i * 7) % 256, np.uint8)
        stamp_index(px, i)
        sink.write(Frame(px, now(), i))
        time.sleep(max(0.0, t0 + (i + 1) / fps - now()))


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_recording_is_playable_with_every_frame_and_real_duration(tmp_path, ext):
    sink = RecordSink(settings(str(tmp_path / f"rec-{{time}}{ext}")))
    sink.open(W, H, FPS)
    assert re.fullmatch(r"rec-\d{8}-\d{6}" + re.escape(ext), os.path.basename(sink.path))
    write_paced(sink, 30)
    sink.close()
    sink.close()  # idempotent
    with av.open(sink.path) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert len(frames) == 30
    assert [read_stamp(f.to_ndarray(format="rgb24")) for f in frames] == list(range(30))
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    span = times[-1] - times[0]
    assert abs(span - 29 / FPS) < 0.15, span  # written over ~1 s in real time
    assert (frames[0].width, frames[0].height) == (W, H)


def test_pts_follow_wall_time_when_the_output_skips_ticks(tmp_path):
    sink = RecordSink(settings(str(tmp_path / "gap.mkv")))
    sink.open(W, H, FPS)
    write_paced(sink, 5)
    time.sleep(0.5)  # the output thread stalled: the file must keep that half second
    write_paced(sink, 5)
    sink.close()
    with av.open(sink.path) as container:
        times = [f.time for f in container.decode(video=0)]
    assert len(times) == 10
    assert times[5] - times[4] > 0.4


def test_each_fragment_reaches_the_file_while_recording(tmp_path):
    """A full disk or a crash loses at most one keyframe interval: every fragment that is complete is in
    the file already (FFmpeg's 256 KiB write buffer used to keep ~20 s of a low-bitrate recording)."""
    import shutil

    sink = RecordSink(settings(str(tmp_path / "live.mp4")))
    sink.open(W, H, FPS)
    gop = round(FPS * KEYFRAME_INTERVAL_S)
    write_paced(sink, gop + 15)  # the first fragment is complete once the second keyframe is encoded
    copy = tmp_path / "copy.mp4"
    decoded, deadline = 0, time.monotonic() + 5.0
    while decoded < gop and time.monotonic() < deadline:  # the encoder process may be a few frames behind
        time.sleep(0.1)
        shutil.copyfile(sink.path, copy)
        try:
            with av.open(str(copy)) as container:
                decoded = sum(1 for _ in container.decode(video=0))
        except av.FFmpegError:  # nothing but the header yet
            decoded = 0
    sink.close()
    assert decoded >= gop, f"only {decoded} of the first fragment's {gop} frames were in the file while recording"


def test_existing_file_is_never_overwritten(tmp_path):
    target = tmp_path / "take.mp4"
    target.write_bytes(b"precious")
    path = expand_path(str(target))
    assert path == str(tmp_path / "take-1.mp4")
    assert target.read_bytes() == b"precious"


def test_unwritable_folder_is_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = RecordSink(settings(str(blocker / "sub" / "out.mp4")))
    with pytest.raises(SinkUnavailable, match="cannot create the recording folder"):
        sink.open(W, H, FPS)
    sink.close()


def test_record_path_from_the_command_line_replaces_the_configured_one(tmp_path):
    s = config.from_dict({"sinks": {"enabled": ["null", "record"]}}, "test")
    sinks = build_sinks(s, record_path=str(tmp_path / "cli.mp4"))
    assert [x.name for x in sinks] == ["null", "record"]
    assert sinks[1].path_pattern == str(tmp_path / "cli.mp4")
    assert [x.name for x in build_sinks(config.from_dict({"sinks": {"enabled": ["null"]}}, "t"), "x.mp4")] == [
        "null", "record"]
