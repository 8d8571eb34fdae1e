"""Chat flood soak: `python tools/chat_flood_soak.py [--rate 1000] [--chatters 200] [--seconds 10]`.

A tool, not part of the installed package. It starts the local fake Twitch that the tests use
(streamer/testing/fake_twitch/). It runs that fake, the real Twitch
component (TwitchIO bot, commands, outbox, control plane) and the real video pipeline (pattern
source -> passthrough -> null sink at 30 fps) in one process, then floods chat with `rate`
messages per second from `chatters` chatters (one in five a command). It reports the asyncio
event-loop lag (how late a 10 ms timer fires), the pipeline's output fps before and during the
flood, how many messages TwitchIO delivered, and the bot's own sends (which must stay within
Twitch's limit). Not a unit test: it takes `seconds` + ~5 s and loads the CPU on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def _lag_probe(samples: list[float], stop: asyncio.Event, every_s: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(every_s)
        samples.append(loop.time() - t - every_s)


def _fps(pipeline_metrics: Any) -> float:
    return float(pipeline_metrics.snapshot()["fps_out"])


async def soak(rate: int, chatters: int, seconds: float, tmp: Path) -> dict[str, Any]:
    import twitchio.eventsub.websockets as tws
    import twitchio.http as thttp

    from streamer import app, config
    from streamer.control.policy.plane import build_control_plane
    from streamer.control.twitch import component as twitch
    from streamer.control.twitch.auth import BOT_SCOPES, BROADCASTER_SCOPES, TokenStore
    from streamer.metrics import Metrics
    from streamer.prompts import PromptBus
    from streamer.store import Store
    from streamer.testing.fake_twitch import FakeTwitch

    fake = FakeTwitch()
    await fake.start()
    thttp.Route.BASE, thttp.Route.ID_BASE = f"{fake.base}/helix/", f"{fake.base}/"
    tws.WSS = f"ws://127.0.0.1:{fake.port}/ws"
    import os

    os.environ["TWITCH_CLIENT_SECRET"] = fake.client_secret
    owner, bot = "1000", "2000"
    fake.add_user(owner, "streamer", "affiliate")
    fake.add_user(bot, "aibot")
    ids = [str(5000 + i) for i in range(chatters)]
    for uid in ids:
        fake.add_user(uid, f"chatter{uid}")
    settings = config.from_dict({
        "store": {"path": str(tmp / "soak.db")},
        "source": {"kind": "pattern"}, "sinks": {"enabled": ["null"]}, "engine": {"transform": "passthrough"},
        "video": {"width": 320, "height": 180, "fps": 30.0},
        "twitch": {"enabled": True, "client_id": fake.client_id, "bot_id": bot, "owner_id": owner},
    })
    store = Store(settings.store.path)
    tokens = TokenStore(store)
    for uid, login, scopes in [(bot, "aibot", BOT_SCOPES), (owner, "streamer", BROADCASTER_SCOPES)]:
        tok = fake.issue_token(uid, list(scopes))
        tokens.save(user_id=uid, login=login, role="bot" if uid == bot else "broadcaster", access=tok.access,
                    refresh=tok.refresh, scopes=scopes, client_id=fake.client_id)
    bus = PromptBus("soak", store=store)
    control = build_control_plane(settings, store, bus)
    metrics = Metrics(600)
    pipeline = app.build_pipeline(settings, bus, metrics)
    ctx = app.AppContext(settings=settings, bus=bus, store=store, metrics=metrics, pipeline=pipeline, control=control)
    component = twitch.build(ctx)
    assert component is not None
    pipeline.start()
    tasks = [asyncio.create_task(component.run()), asyncio.create_task(control.run())]
    try:
        await asyncio.wait_for(component.link.ready.wait(), timeout=15)
        await asyncio.sleep(3.0)  # pipeline warm-up
        fps_before = _fps(metrics)
        idle_lag: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(_lag_probe(idle_lag, stop))
        await asyncio.sleep(2.0)
        stop.set()
        await probe

        lag: list[float] = []
        fps_during: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(_lag_probe(lag, stop))
        received_before = int(metrics.snapshot()["counters"].get("twitch_chat_messages", 0))
        sent_before = len(fake.sent)
        texts = ["hello chat", "lol", "!ai a painting of a harbour", "!vote 1", "nice stream", "!aiqueue", "PogChamp"]
        t0 = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * rate)
            while n < due:  # send what is due in batches, so the fake keeps the requested rate
                await fake.chat(owner, ids[n % chatters], texts[n % len(texts)])
                n += 1
            if int(elapsed * 10) % 10 == 0:
                fps_during.append(_fps(metrics))
            await asyncio.sleep(0.005)
        flood_s = time.monotonic() - t0
        await asyncio.sleep(2.0)  # let handlers drain
        stop.set()
        await probe
        received = int(metrics.snapshot()["counters"].get("twitch_chat_messages", 0)) - received_before
        fps_after = _fps(metrics)
        send_times = fake.sent_times[sent_before:]
        max_in_30s = max((sum(1 for u in send_times if t <= u < t + 30) for t in send_times), default=0)
        return {
            "flood": {"messages": n, "seconds": round(flood_s, 2), "rate_per_s": round(n / flood_s, 1),
                      "chatters": chatters},
            "delivered_to_bot": received,
            "loop_lag_ms": {"idle_p50": round(_percentile(idle_lag, 50) * 1e3, 2),
                            "idle_p99": round(_percentile(idle_lag, 99) * 1e3, 2),
                            "flood_p50": round(_percentile(lag, 50) * 1e3, 2),
                            "flood_p99": round(_percentile(lag, 99) * 1e3, 2),
                            "flood_max": round(max(lag, default=0) * 1e3, 2)},
            "fps_out": {"before": fps_before, "during_min": min(fps_during, default=0.0),
                        "during_median": _percentile(fps_during, 50), "after": fps_after},
            "bot_messages_sent": len(send_times), "bot_max_per_30s": max_in_30s,
            "outbox_dropped": component.link.outbox.dropped,
            "counters": {k: v for k, v in metrics.snapshot()["counters"].items() if k.startswith("twitch")},
        }
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pipeline.stop()
        await fake.stop()
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=1000, help="chat messages per second")
    p.add_argument("--chatters", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    import logging
    import tempfile

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(soak(args.rate, args.chatters, args.seconds, Path(tmp)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
