"""The far end that feeds the daemon's network source during a soak: `python -m streamer.soak.sender URL W H FPS`.

A separate process, so the soak can SIGKILL it (a camera PC or OBS output dying) and start a new one.
It is the daemon's own parts run the other way round: the pattern source, paced in real time, into
a network sink (H.264 in MPEG-TS over UDP). SIGTERM ends it cleanly.
"""

from __future__ import annotations

import signal
import sys
import threading

from streamer import config
from streamer.sinks.network import NetworkSink
from streamer.sources import build_source


def main(argv: list[str]) -> int:
    url, width, height, fps = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    settings = config.from_dict(
        {
            "video": {"width": width, "height": height, "fps": fps},
            "source": {"kind": "pattern", "pattern": "testsrc2"},
            "sinks": {"enabled": ["network"], "network": {"url": url, "bitrate_kbps": 500, "keyframe_interval_s": 0.5}},
        },
        "soak sender",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    source = build_source(settings)
    sink = NetworkSink(settings)
    sink.open(width, height, fps)
    try:
        for frame in source.frames(stop):
            sink.write(frame)
    finally:
        sink.close()
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
