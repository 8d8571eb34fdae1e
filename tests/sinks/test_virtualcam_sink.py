"""Virtual camera sink: where no backend exists, SinkUnavailable says exactly what to install."""

from __future__ import annotations

import pytest

from streamer import config
from streamer.sinks import SinkUnavailable
from streamer.sinks.virtualcam import VirtualCamSink, install_hint


def settings(**vc):
    return config.from_dict({"sinks": {"enabled": ["virtualcam"], "virtualcam": vc}}, "test")


def test_missing_backend_names_what_to_install():
    sink = VirtualCamSink(settings())
    try:
        sink.open(64, 48, 30.0)
    except SinkUnavailable as e:
        message = str(e)
    else:
        sink.close()
        pytest.skip("a real virtual camera backend exists on this machine")
    assert "v4l2loopback" in message or "Unity Capture" in message or "OBS" in message
    assert message.splitlines()[1] == install_hint()
    sink.close()  # closing an unopened sink is harmless


def test_unknown_backend_is_unavailable_with_the_choices():
    sink = VirtualCamSink(settings(backend="nosuchbackend"))
    with pytest.raises(SinkUnavailable, match="nosuchbackend") as err:
        sink.open(64, 48, 30.0)
    assert "available here" in str(err.value)


def test_install_hints_per_os():
    linux = install_hint("linux")
    assert "v4l2loopback" in linux and "modprobe v4l2loopback devices=2 exclusive_caps=1" in linux
    assert "Unity Capture" in install_hint("win32") and "unitycapture" in install_hint("win32")
    assert "OBS" in install_hint("darwin") and "Start Virtual Camera" in install_hint("darwin")
    assert all("network" in install_hint(p) for p in ("linux", "win32", "darwin", "sunos"))
