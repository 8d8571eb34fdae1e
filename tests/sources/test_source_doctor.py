"""Source doctor checks: OK with the first frame's size, FAIL with the reason and the fix."""

from __future__ import annotations

import socket
import time

from streamer import config
from streamer.sources import doctor_checks


def run(**source):
    s = config.from_dict({"video": {"width": 96, "height": 64}, "source": source}, "test")
    t0 = time.monotonic()
    checks = list(doctor_checks(s))
    return checks, time.monotonic() - t0


def test_pattern_source_is_ok():
    (check,), _ = run(kind="pattern")
    assert check.status == "OK" and "96x64" in check.detail


def test_missing_file_fails_fast_with_the_fix(tmp_path):
    (check,), elapsed = run(kind="file", path=str(tmp_path / "none.mp4"))
    assert check.status == "FAIL" and "does not exist" in check.detail and "source.path" in check.fix
    assert elapsed < 2.0


def test_silent_network_source_fails_after_its_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (check,), elapsed = run(kind="network", url=f"udp://127.0.0.1:{port}", timeout_s=0.5)
    assert check.status == "FAIL" and "nothing received" in check.detail and "sender" in check.fix
    assert elapsed < 3.0
