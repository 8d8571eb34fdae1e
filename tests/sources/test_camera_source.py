"""Camera source: a missing device gives a clear error (with how to list devices) and never hangs."""

from __future__ import annotations

import sys
import threading

import pytest
from source_harness import read_until_error

from streamer import config
from streamer.sources import SourceError, build_source
from streamer.sources.camera import CameraSource, default_backend


def settings(**source):
    return config.from_dict({"video": {"width": 64, "height": 48}, "source": {"kind": "camera", **source}}, "test")


def test_default_backend_per_os():
    assert default_backend("win32") == "dshow"
    assert default_backend("darwin") == "avfoundation"
    assert default_backend("linux") == "v4l2"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the v4l2 path is Linux-only")
def test_missing_v4l2_device_is_a_clear_error():
    source = build_source(settings(device="/dev/video99", camera_backend="v4l2"))
    assert isinstance(source, CameraSource)
    with pytest.raises(SourceError) as err:
        next(source._read(threading.Event()))
    message = str(err.value)
    assert "/dev/video99 does not exist" in message
    assert "v4l2-ctl --list-devices" in message and "modprobe v4l2loopback" in message

    stopped = read_until_error(source)  # through frames(): reported once in last_error, retried, stops promptly
    assert not stopped.still_running and stopped.stop_s < 0.5
    assert "does not exist" in source.last_error


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="dshow/avfoundation exist there")
def test_backend_of_another_os_is_refused_at_build():
    with pytest.raises(SourceError, match="not available"):
        build_source(settings(device="video=OBS Virtual Camera", camera_backend="dshow"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the v4l2 path is Linux-only")
def test_a_path_that_is_not_a_camera_is_a_clear_error(tmp_path):
    not_a_camera = tmp_path / "video0"
    not_a_camera.write_bytes(b"")
    source = build_source(settings(device=str(not_a_camera), camera_backend="v4l2"))
    with pytest.raises(SourceError, match="cannot open camera .* with v4l2"):
        next(source._read(threading.Event()))
