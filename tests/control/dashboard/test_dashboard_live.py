"""Dashboard live parts: JPEG/MJPEG preview of the real pipeline's output, the WebSocket pushes,
and the component's start-up (token from the environment or generated and printed once)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dashboard_harness import TOKEN, H, W, make_ctx, running_dashboard, still_picture, wait_for

from streamer.control.dashboard import server as dashboard
from streamer.control.dashboard.preview import BOUNDARY, JpegEncoder
from streamer.control.dashboard.server import make_app


def decode_jpeg(data: bytes) -> np.ndarray:
    codec = av.CodecContext.create("mjpeg", "r")
    frames = codec.decode(av.Packet(data))
    assert len(frames) == 1
    return frames[0].to_ndarray(format="rgb24")


def test_jpeg_encoder_round_trip_and_scaling():
    picture = still_picture()
    out = decode_jpeg(JpegEncoder(quality=3, max_width=0).encode(picture))
    assert out.shape == picture.shape
    assert np.abs(out.astype(int) - picture.astype(int)).mean() < 6
    small = decode_jpeg(JpegEncoder(max_width=32).encode(picture))
    assert small.shape == (24, 32, 3)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        JpegEncoder().encode(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="2-31"):
        JpegEncoder(quality=1)


def test_preview_is_a_jpeg_of_the_latest_output_frame(ctx):
    async def body() -> None:
        async with TestClient(TestServer(make_app(ctx, TOKEN), host="127.0.0.1")) as client:
            r = await client.get("/preview.jpg")
            assert r.status == 503  # no output yet: says so instead of showing a stale or black picture
            ctx.pipeline.start()
            await asyncio.to_thread(wait_for, lambda: ctx.pipeline.latest_output() is not None, 10, "an output frame")
            r = await client.get("/preview.jpg")
            assert r.status == 200 and r.content_type == "image/jpeg"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            picture = decode_jpeg(await r.read())
            assert picture.shape == (H, W, 3)
            left, right = picture[:, : W // 2 - 4].mean(axis=(0, 1)), picture[:, W // 2 + 4 :].mean(axis=(0, 1))
            assert left[0] > 180 and left[2] < 70, left  # red half
            assert right[2] > 180 and right[0] < 70, right  # blue half

            r = await client.get("/preview.mjpeg")
            assert r.status == 200
            assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            head = await r.content.readuntil(b"\r\n\r\n")
            assert head.startswith(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n".encode())
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            part = await r.content.readexactly(length)
            assert decode_jpeg(part).shape == (H, W, 3)
            r.close()

    asyncio.run(body())


def test_websocket_pushes_state_changes_and_metrics(ctx):
    ctx.metrics.latency(0.025)

    async def body() -> None:
        app = make_app(ctx, TOKEN)
        hub = app[dashboard.HUB_KEY]
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            pusher = asyncio.create_task(hub.run())
            ws = await client.ws_connect("/ws")
            first = json.loads((await ws.receive(timeout=5)).data)
            assert first["type"] == "state" and first["prompt"]["text"] == "a watercolour painting"
            metrics = json.loads((await ws.receive(timeout=5)).data)
            assert metrics["type"] == "metrics" and metrics["latency_p50_ms"] == pytest.approx(25.0)

            overlay = await client.ws_connect("/ws?metrics=0")
            assert json.loads((await overlay.receive(timeout=5)).data)["type"] == "state"

            # a change made on another thread (like a Twitch command) reaches both pages
            await asyncio.to_thread(ctx.control.governor.propose, "a stained glass window", source="dashboard",
                                    author="streamer")
            for conn in (ws, overlay):
                while True:
                    msg = json.loads((await conn.receive(timeout=5)).data)
                    if msg["type"] == "state":
                        break
                assert msg["prompt"]["text"] == "a stained glass window"
                assert msg["prompt"]["previous_text"] == "a watercolour painting"
            # overlays never get metrics; pages cannot send commands over the socket
            await overlay.send_str(json.dumps({"type": "kill"}))
            with pytest.raises(TimeoutError):
                while True:
                    msg = json.loads((await overlay.receive(timeout=1.5)).data)
                    assert msg["type"] != "metrics"
            assert ctx.bus.current().enabled
            await ws.close()
            await overlay.close()
            pusher.cancel()

    asyncio.run(body())


def test_component_prints_a_generated_token_once_and_never_logs_it(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv("STREAMER_DASHBOARD_TOKEN", raising=False)
    ctx = make_ctx(tmp_path)
    component = dashboard.build(ctx)
    assert component is not None and component.generated and len(component.token) >= 32
    caplog.set_level(logging.DEBUG)
    with running_dashboard(ctx, component.token) as url:
        pass  # the real announce is exercised below
    capsys.readouterr()  # the harness's own component printed a sign-in link of its own
    component.url = url + "/"
    component._announce("127.0.0.1")
    component._announce("127.0.0.1")  # a restart by the supervisor must not print it again
    err = capsys.readouterr().err
    # printed once, for scripts, and never inside a URL: the link carries a one-time code instead (issue 15)
    assert err.count(component.token) == 1 and "#token=" not in err and err.count(f"{url}/#code=") == 1
    assert all(component.token not in record.getMessage() for record in caplog.records)
    assert any(url in record.getMessage() for record in caplog.records)
    ctx.store.close()


def test_token_from_environment_and_disabled_dashboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STREAMER_DASHBOARD_TOKEN", "from-env-token")
    assert dashboard.resolve_token() == ("from-env-token", False)
    ctx = make_ctx(tmp_path)
    component = dashboard.build(ctx)
    assert component is not None and component.token == "from-env-token" and not component.generated
    with running_dashboard(ctx, component.token) as url:
        req = urllib.request.Request(url + "/api/kill", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer from-env-token"})
        assert urllib.request.urlopen(req).status == 200
        req = urllib.request.Request(url + "/api/revive", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 401
    assert not ctx.bus.current().enabled
    component.url = url + "/"
    component._announce("127.0.0.1")
    assert "from-env-token" not in capsys.readouterr().err  # a token the streamer chose is never printed
    ctx.store.close()
    off = make_ctx(tmp_path / "off", {"dashboard": {"enabled": False}})
    assert dashboard.build(off) is None
    off.store.close()


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    ctx = make_ctx(tmp_path, {"dashboard": {"port": port}})
    component = dashboard.Dashboard(ctx, TOKEN, generated=False)
    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}.*free port"):
        asyncio.run(component.run())
    taken.close()
    ctx.store.close()


def test_doctor_checks(monkeypatch):
    from dashboard_harness import make_settings

    monkeypatch.delenv("STREAMER_DASHBOARD_TOKEN", raising=False)
    checks = {c.name: c for c in dashboard.doctor_checks(make_settings({"dashboard": {"port": 0}}))}
    assert checks["dashboard address"].status == "OK"
    assert "generated" in checks["dashboard token"].detail
    assert checks["dashboard port"].status == "OK" and checks["dashboard pages"].status == "OK"
    wide = {c.name: c for c in dashboard.doctor_checks(make_settings({"dashboard": {"host": "0.0.0.0", "port": 0}}))}
    assert wide["dashboard address"].status == "WARN"
    monkeypatch.setenv("STREAMER_DASHBOARD_TOKEN", "secret-value")
    token_check = next(c for c in dashboard.doctor_checks(make_settings()) if c.name == "dashboard token")
    assert "STREAMER_DASHBOARD_TOKEN" in token_check.detail and "secret-value" not in token_check.line()
    off = list(dashboard.doctor_checks(make_settings({"dashboard": {"enabled": False}})))
    assert [c.status for c in off] == ["OK"]
