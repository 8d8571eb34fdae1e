"""Sink doctor checks and the small sinks: null, network URL validation, frame conversion."""

from __future__ import annotations

import numpy as np
import pytest

from streamer import config
from streamer.frames import Frame, now
from streamer.sinks import SinkUnavailable, doctor_checks, frame_rgb
from streamer.sinks.network import check_output_url
from streamer.sinks.null import NullSink


def checks(**sinks):
    return {c.name: c for c in doctor_checks(config.from_dict({"sinks": sinks}, "test"))}


def test_doctor_reports_each_sink(tmp_path):
    result = checks(enabled=["virtualcam", "network", "record", "null"],
                    record={"path": str(tmp_path / "r" / "x.mp4")},
                    network={"url": "udp://127.0.0.1:5999?pkt_size=1316"})
    assert result["sink network"].status == "OK"
    assert result["sink null"].status == "OK"
    assert result["sink record"].status == "OK" and str(tmp_path / "r") in result["sink record"].detail
    vc = result["sink virtualcam"]
    if vc.status != "OK":  # no v4l2loopback here: FAIL with the install line as the fix
        assert vc.status == "WARN" and "install" in vc.fix  # the other sinks carry on
        alone = checks(enabled=["virtualcam"])["sink virtualcam"]
        assert alone.status == "FAIL" and "install" in alone.fix


def test_doctor_flags_a_bad_network_url():
    bad = checks(enabled=["network"], network={"url": "srt://127.0.0.1:9000"})["sink network"]
    assert bad.status == "FAIL" and "SRT" in bad.detail and "udp://" in bad.fix


def test_output_urls():
    assert check_output_url("udp://127.0.0.1:5600?pkt_size=1316") == "mpegts"
    assert check_output_url("rtmp://live.example/app/key") == "flv"
    for url in ("udp://127.0.0.1", "http://x:1/", "127.0.0.1:5600"):
        with pytest.raises(SinkUnavailable):
            check_output_url(url)


def test_null_sink_counts():
    sink = NullSink()
    sink.open(8, 4, 30)
    for i in range(3):
        sink.write(Frame(np.zeros((4, 8, 3), np.uint8), now(), i))
    sink.close()
    assert sink.frames_written == 3 and sink.last is not None and sink.last.index == 2


def test_frame_rgb_scales_wrong_sizes_and_rejects_wrong_types():
    px = np.arange(600, dtype=np.uint8).reshape(10, 20, 3)
    assert np.array_equal(frame_rgb(Frame(px, now()), 20, 10), px)


    class DeviceTensor:  # the shape of a torch tensor's API, without importing torch (seconds) here
        def __init__(self, a: np.ndarray) -> None:
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    assert np.array_equal(frame_rgb(Frame(DeviceTensor(px.copy()), now()), 20, 10), px)
    assert frame_rgb(Frame(px, now()), 40, 20).shape == (20, 40, 3)
    with pytest.raises(ValueError, match="uint8"):
        frame_rgb(Frame(px.astype(np.float32), now()), 20, 10)
