"""The network and record sinks encode in a child process: frames get through it whole, its errors reach
the parent's write(), a lagging child costs counted drops (never a blocked output thread), and it never
outlives the sink or the parent."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time

import av
import numpy as np
import pytest

from streamer import config
from streamer.frames import Frame, now
from streamer.sinks import SinkUnavailable
from streamer.sinks.encoder import open_encoder
from streamer.sinks.encoder_process import EncoderFailed, EncoderProcess
from streamer.sinks.record import RecordSink
from streamer.sources.pattern import read_stamp, stamp_index

W, H, FPS = 160, 96, 30.0


def settings(path: str):
    return config.from_dict({"video": {"width": W, "height": H, "fps": FPS},
                             "sinks": {"enabled": ["record"], "record": {"path": path}}}, "test")


def gone(pid: int) -> bool:
    """No such process, or only a zombie left for an init that does not reap (containers)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def test_frames_are_encoded_in_a_child_and_the_file_has_every_one(tmp_path):
    sink = RecordSink(settings(str(tmp_path / "child.mkv")))
    sink.open(W, H, FPS)
    assert sink._encoder is not None
    pid = sink._encoder.pid
    assert pid is not None and pid != os.getpid() and not gone(pid)
    for i in range(45):
        px = np.full((H, W, 3), (i * 5) % 256, np.uint8)
        stamp_index(px, i)
        sink.write(Frame(px, now(), i))
        time.sleep(1 / FPS)
    encoder = sink._encoder
    sink.close()
    assert encoder.encoded == 45 and sink.frames_dropped == 0
    assert wait_gone(pid, 2.0)  # close() joined the child
    with av.open(sink.path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert [read_stamp(f) for f in frames] == list(range(45))


def test_ctrl_c_reaches_the_child_too_and_the_recording_still_ends_whole(tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group: the child must not die of it
    mid-file (no trailer, frames lost); it keeps encoding until the parent closes the sink."""
    sink = RecordSink(settings(str(tmp_path / "ctrl_c.mkv")))
    sink.open(W, H, FPS)
    pid = sink._encoder.pid
    for i in range(30):
        if i == 10:
            os.kill(pid, signal.SIGINT)
        px = np.full((H, W, 3), (i * 7) % 256, np.uint8)
        stamp_index(px, i)
        sink.write(Frame(px, now(), i))
        time.sleep(1 / FPS)
    assert not gone(pid)
    sink.close()
    with av.open(sink.path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert [read_stamp(f) for f in frames] == list(range(30))


def test_an_error_in_the_child_is_raised_from_the_next_write(tmp_path):
    sink = RecordSink(settings(str(tmp_path / "full.mkv")))
    sink.open(W, H, FPS)
    assert sink._encoder is not None and sink._encoder.pid is not None
    # the disk is "full" for the child only: 64 kB is a few noisy frames in
    resource.prlimit(sink._encoder.pid, resource.RLIMIT_FSIZE, (64_000, 64_000))
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 20
    with pytest.raises(EncoderFailed, match=r"full\.mkv failed: .*(File too large|exit code)"):
        i = 0
        while time.monotonic() < deadline:
            sink.write(Frame(rng.integers(0, 256, (H, W, 3), np.uint8), now(), i))
            i += 1
            time.sleep(1 / FPS)
    t0 = time.monotonic()
    with pytest.raises(EncoderFailed):
        sink.close()  # the pipeline logs this and carries on
    assert time.monotonic() - t0 < 5
    sink.close()  # closed is closed


def test_a_child_that_falls_behind_costs_counted_drops_not_a_blocked_writer(tmp_path):
    enc = EncoderProcess(str(tmp_path / "slow.mkv"), format=None, width=W, height=H, fps=FPS, codec="libx264",
                         slots=2)
    assert enc.pid is not None
    os.kill(enc.pid, signal.SIGSTOP)  # the child gets no CPU at all
    try:
        t0 = time.monotonic()
        for i in range(6):
            enc.encode(np.full((H, W, 3), i * 30, np.uint8))
        assert time.monotonic() - t0 < 0.5
        assert (enc.frames, enc.dropped) == (2, 4)
    finally:
        os.kill(enc.pid, signal.SIGCONT)
    enc.close()
    assert enc.encoded == 2
    with av.open(str(tmp_path / "slow.mkv")) as container:
        assert len(list(container.decode(video=0))) == 2


def test_an_output_that_cannot_open_is_unavailable_and_leaves_no_child(tmp_path):
    cfg = config.from_dict({"sinks": {"record": {"path": str(tmp_path / "x.mkv"), "codec": "no-such-codec"}}}, "t")
    sink = RecordSink(cfg)
    before = set(_children())
    with pytest.raises(SinkUnavailable, match=r"cannot record to .*x\.mkv: .*no-such-codec"):
        sink.open(W, H, FPS)
    assert all(wait_gone(pid, 2.0) for pid in set(_children()) - before)
    sink.close()


def _children() -> list[int]:
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
        return [int(p) for p in f.read().split()]


PARENT = textwrap.dedent("""
    import sys, time
    from streamer.sinks.encoder_process import EncoderProcess
    enc = EncoderProcess(sys.argv[1], format=None, width=64, height=64, fps=30.0, codec="libx264")
    print(enc.pid, flush=True)
    time.sleep(60)
""")


def test_the_child_dies_with_a_killed_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "orphan.mkv")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()
        parent.wait(5)
        assert wait_gone(child, 5.0), f"encoder process {child} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _encode_in_a_daemon(path: str, results) -> None:
    enc = open_encoder(path, format=None, width=64, height=64, fps=30.0, codec="libx264")
    for i in range(5):
        enc.encode(np.full((64, 64, 3), i * 40, np.uint8))
        time.sleep(1 / 30)
    enc.close()
    results.put((type(enc).__name__, enc.frames))


def test_a_daemonic_process_encodes_in_itself(tmp_path):
    # the bench's sender runs in a daemonic process, which multiprocessing allows no children
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_encode_in_a_daemon, args=(str(tmp_path / "d.mkv"), results), daemon=True)
    proc.start()
    assert results.get(timeout=60) == ("VideoEncoder", 5)
    proc.join(10)
    assert proc.exitcode == 0


def test_a_lagging_encoder_s_drops_reach_the_daemon_s_metrics(tmp_path):
    """The real pipeline with a pattern source and a record sink: with the encoder process stopped, the
    frames it cannot take are counted as `drops_sink_record`, in /metrics and on the status line."""
    from streamer.metrics import Metrics
    from streamer.pipeline import Pipeline
    from streamer.prompts import PromptBus
    from streamer.sources import build_source

    cfg = config.from_dict({"video": {"width": W, "height": H, "fps": FPS}, "source": {"kind": "pattern"},
                            "engine": {"transform": "passthrough"},
                            "sinks": {"enabled": ["record"], "record": {"path": str(tmp_path / "lag.mkv")}}}, "test")
    metrics = Metrics(100)
    sink = RecordSink(cfg)
    pipeline = Pipeline(cfg, build_source(cfg), [sink], PromptBus("x"), metrics)
    counters = lambda: metrics.snapshot()["counters"]  # noqa: E731
    pipeline.start()
    try:
        deadline = time.monotonic() + 20
        while pipeline.frames_out < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counters()["drops_sink_record"] == 0 and "streamer_drops_sink_record_total 0" in metrics.prometheus_text()
        assert sink._encoder is not None and sink._encoder.pid is not None
        encoder = sink._encoder
        os.kill(encoder.pid, signal.SIGSTOP)
        try:
            while counters()["drops_sink_record"] < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            # (frames keep dropping while it is stopped: read each number and compare)
            scraped = re.search(r"^streamer_drops_sink_record_total (\d+)$", metrics.prometheus_text(), re.M)
            shown = re.search(r"output drops (\d+)", metrics.status_line())
            assert scraped is not None and shown is not None
            assert 10 <= int(scraped.group(1)) <= counters()["drops_sink_record"]
            assert int(shown.group(1)) >= int(scraped.group(1))  # the status line adds the output queue's drops
        finally:
            os.kill(encoder.pid, signal.SIGCONT)
    finally:
        pipeline.stop()
    # every frame the pipeline handed over was either encoded or counted as dropped
    assert encoder.encoded + encoder.dropped == sink.frames_written
    assert counters()["drops_sink_record"] == encoder.dropped
