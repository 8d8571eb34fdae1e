"""Dashboard HTTP API: auth on every state change, CSRF/Origin/Host checks, CSP, metrics, health, preview.

The app under test is the real one (make_app) over a real context: PromptBus, Store (SQLite in
tmp_path), Metrics, Pipeline, and the control plane's Moderation/Approvals/Governor.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from dashboard_harness import TOKEN, VALID_BODIES, make_ctx

from streamer.control.dashboard.server import make_app

AUTH = {"X-Streamer-Token": TOKEN}

BODIES: dict[str, dict[str, Any]] = {path.replace("{id}", "1"): body for path, body in VALID_BODIES.items()}


def serve(ctx: Any, body: Callable[[TestClient, web.Application], Awaitable[None]]) -> None:
    async def main() -> None:
        app = make_app(ctx, TOKEN)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await body(client, app)

    asyncio.run(main())


def post_paths(app: web.Application) -> list[str]:
    paths = []
    for route in app.router.routes():
        if route.method not in ("GET", "HEAD"):
            info = route.resource.get_info() if route.resource else {}
            paths.append(info.get("path") or info["formatter"].replace("{id}", "1"))
    return paths


def snapshot(ctx: Any) -> tuple[Any, ...]:
    """Everything a control could change."""
    approvals = [(a.id, a.status) for a in ctx.control.approvals.recent()]
    poll = ctx.control.polls.current() if getattr(ctx.control, "polls", None) else None
    return (ctx.bus.current(), approvals, ctx.pipeline._reset_requested.is_set(), poll,
            ctx.control.moderation.runtime_terms)


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path)
    c.control.approvals.submit("a castle made of cheese", source="twitch", author="viewer1", model_text="x")
    yield c
    c.store.close()


def test_every_state_changing_route_is_covered_and_refused_without_the_token(ctx):
    async def body(client: TestClient, app: web.Application) -> None:
        paths = post_paths(app)
        assert sorted(paths) == sorted(BODIES), "a new POST route needs a body in BODIES (and this test)"
        before = snapshot(ctx)
        for path in paths:
            r = await client.post(path, json=BODIES[path])
            assert r.status == 401, (path, r.status, await r.text())
            assert "WWW-Authenticate" in r.headers
            r = await client.post(path, json=BODIES[path], headers={"X-Streamer-Token": "wrong"})
            assert r.status == 403, path
            r = await client.post(path, json=BODIES[path], headers={"Authorization": "Bearer wrong"})
            assert r.status == 403, path
            r = await client.get(path)  # GET never changes anything
            assert r.status == 405, path
        assert snapshot(ctx) == before

    serve(ctx, body)


def test_prompt_goes_through_moderation(ctx):
    async def body(client: TestClient, app: web.Application) -> None:
        r = await client.post("/api/prompt", json={"text": "a pencil sketch of a lighthouse"}, headers=AUTH)
        assert r.status == 200, await r.text()
        assert (await r.json())["status"] == "applied"
        state = ctx.bus.current()
        assert state.text == "a pencil sketch of a lighthouse" and state.source == "dashboard"

        r = await client.post("/api/prompt", json={"text": "a n.u.d.e portrait"}, headers=AUTH)
        assert r.status == 422
        result = await r.json()
        assert result["status"] == "rejected" and result["text"] == ""
        assert ctx.bus.current() == state  # unchanged

        for bad in [{"text": ""}, {"text": 5}, {}, {"text": "x" * 5000}]:
            r = await client.post("/api/prompt", json=bad, headers=AUTH)
            assert r.status in (400, 413), bad
        r = await client.post("/api/prompt", data="text=hi", headers={**AUTH, "Content-Type": "text/plain"})
        assert r.status == 415  # only JSON: no "simple" cross-site form post
        r = await client.post("/api/prompt", data="{not json", headers={**AUTH, "Content-Type": "application/json"})
        assert r.status == 400
        assert ctx.bus.current() == state

    serve(ctx, body)


def test_kill_switch_strength_and_reset(ctx):
    async def body(client: TestClient, app: web.Application) -> None:
        r = await client.post("/api/kill", json={}, headers=AUTH)
        assert r.status == 200 and (await r.json())["enabled"] is False
        assert ctx.bus.current().enabled is False
        r = await client.post("/api/revive", json={}, headers=AUTH)
        assert (await r.json())["enabled"] is True and ctx.bus.current().enabled

        r = await client.post("/api/strength", json={"strength": 0.45}, headers=AUTH)
        assert r.status == 200 and ctx.bus.current().strength == pytest.approx(0.45)
        for bad in (1.5, -0.1, "0.5", True):
            r = await client.post("/api/strength", json={"strength": bad}, headers=AUTH)
            assert r.status == 400, bad
        assert ctx.bus.current().strength == pytest.approx(0.45)
        r = await client.post("/api/strength", json={"strength": None}, headers=AUTH)
        assert r.status == 200 and ctx.bus.current().strength is None

        assert not ctx.pipeline._reset_requested.is_set()
        r = await client.post("/api/reset", json={}, headers=AUTH)
        assert r.status == 200 and ctx.pipeline._reset_requested.is_set()

    serve(ctx, body)


def test_approve_and_deny(ctx):
    approvals = ctx.control.approvals
    second = approvals.submit("a neon city at night", source="twitch", author="viewer2", model_text="x")

    async def body(client: TestClient, app: web.Application) -> None:
        r = await client.get("/api/state")
        queue = (await r.json())["queue"]
        assert queue["ids"] == [1, second] and queue["count"] == 2 and queue["shown"] == "names"
        assert queue["names"] == [{"id": 1, "author": "viewer1"}, {"id": second, "author": "viewer2"}]
        assert "cheese" not in await r.text() and "neon" not in await r.text()  # public pages: no text, no meta
        r = await client.post("/api/approvals/list", json={}, headers=AUTH)  # the text: with the token only
        listed = (await r.json())["items"]
        assert [(q["id"], q["text"]) for q in listed] == [(1, "a castle made of cheese"), (second, "a neon city at night")]
        assert set(listed[0]) == {"id", "author", "source", "text", "model_text", "created_at"}  # no meta

        r = await client.post("/api/approvals/1/approve", json={}, headers=AUTH)
        assert r.status == 200, await r.text()
        assert approvals.get(1).status == "approved" and approvals.get(1).decided_by == "dashboard"
        assert ctx.bus.current().text == "a castle made of cheese"  # the governor applied it

        r = await client.post(f"/api/approvals/{second}/deny", json={"reason": "not tonight"}, headers=AUTH)
        assert r.status == 200
        item = approvals.get(second)
        assert item.status == "denied" and item.reason == "not tonight"
        assert ctx.bus.current().text == "a castle made of cheese"

        r = await client.post("/api/approvals/1/deny", json={}, headers=AUTH)
        assert r.status == 409  # already decided
        r = await client.post("/api/approvals/999/approve", json={}, headers=AUTH)
        assert r.status == 404
        r = await client.post("/api/approvals/abc/approve", json={}, headers=AUTH)
        assert r.status == 404
        assert approvals.pending() == []

    serve(ctx, body)


def test_poll_start_vote_and_end(ctx):
    polls = ctx.control.polls

    async def body(client: TestClient, app: web.Application) -> None:
        r = await client.post("/api/poll/start", json=BODIES["/api/poll/start"], headers=AUTH)
        assert r.status == 200, await r.text()
        state = await (await client.get("/api/state")).json()
        poll = state["poll"]
        assert poll["status"] == "running" and [c["text"] for c in poll["choices"]] == ["oil painting", "pixel art"]
        assert 25 < poll["ends_at"] - state["server_time"] <= 30
        for bad, status in [({"title": "x", "options": ["only one"], "duration_s": 30}, 400),
                            ({"title": "x", "options": ["a", "b"], "duration_s": 5}, 400),
                            ({"title": "naked?", "options": ["a", "b"], "duration_s": 30}, 400),
                            (BODIES["/api/poll/start"], 409)]:  # one poll at a time
            r = await client.post("/api/poll/start", json=bad, headers=AUTH)
            assert r.status == status, (bad, await r.text())
        polls.vote("chatter-1", 2)
        polls.vote("chatter-2", 2)
        polls.vote("chatter-3", 1)
        poll = (await (await client.get("/api/state")).json())["poll"]
        assert [c["votes"] for c in poll["choices"]] == [1, 2]

        r = await client.post("/api/poll/end", json={}, headers=AUTH)
        assert r.status == 200
        ended = (await r.json())["poll"]
        assert ended["status"] == "ended" and ended["winner_text"] == "pixel art"
        assert ctx.bus.current().text == "pixel art" and ctx.bus.current().source == "poll"
        poll = (await (await client.get("/api/state")).json())["poll"]
        assert poll["status"] == "ended" and poll["winner_text"] == "pixel art"  # shown a while on the overlays
        r = await client.post("/api/poll/end", json={}, headers=AUTH)
        assert r.status == 409  # nothing running

    serve(ctx, body)


def test_cross_origin_and_foreign_host_are_refused_even_with_the_token(ctx):
    async def body(client: TestClient, app: web.Application) -> None:
        before = ctx.bus.current()
        evil = {**AUTH, "Origin": "http://evil.example"}
        r = await client.post("/api/kill", json={}, headers=evil)
        assert r.status == 403
        r = await client.post("/api/kill", json={}, headers={**AUTH, "Sec-Fetch-Site": "cross-site"})
        assert r.status == 403
        # DNS rebinding: a hostile name that resolves to 127.0.0.1 makes the browser send its Host
        r = await client.post("/api/kill", json={}, headers={**AUTH, "Host": "evil.example:8765"})
        assert r.status == 403
        r = await client.get("/api/state", headers={"Host": "evil.example"})
        assert r.status == 403
        r = await client.get("/ws", headers={"Origin": "http://evil.example"})
        assert r.status == 403
        assert ctx.bus.current() == before
        same = {**AUTH, "Origin": str(client.make_url("")).rstrip("/")}
        r = await client.post("/api/kill", json={}, headers=same)
        assert r.status == 200 and not ctx.bus.current().enabled

    serve(ctx, body)


def test_security_headers_on_every_kind_of_response(ctx):
    async def body(client: TestClient, app: web.Application) -> None:
        for path, method in [("/", "GET"), ("/assets/dashboard.js", "GET"), ("/api/state", "GET"),
                             ("/nope", "GET"), ("/api/kill", "POST"), ("/metrics", "GET")]:
            r = await client.request(method, path)
            csp = r.headers.get("Content-Security-Policy", "")
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert "unsafe-inline" not in csp and "script-src 'self'" in csp
            assert r.headers.get("X-Content-Type-Options") == "nosniff", path
            assert r.headers.get("X-Frame-Options") == "DENY", path
        r = await client.get("/overlays/prompt.html")
        assert r.status == 200 and r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors" not in csp  # OBS may embed overlays
        assert r.headers["X-Content-Type-Options"] == "nosniff" and "X-Frame-Options" not in r.headers
        r = await client.get("/overlay", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/overlays/overlay.html"
        # no inline script anywhere in the shipped pages (the CSP would block it anyway)
        for path in ["/", "/overlays/prompt.html", "/overlays/poll.html", "/overlays/queue.html",
                     "/overlays/overlay.html", "/overlays/preview.html"]:
            html = await (await client.get(path)).text()
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
            assert not re.search(r"<[^>]+\s(?:on[a-z]+|style)\s*=", html, re.I), path  # no inline handlers/styles
        # the static routes serve a fixed allowlist: no traversal, no Python source
        for path in ["/overlays/__init__.py", "/overlays/..%2F..%2Fpyproject.toml", "/assets/..%2Fdashboard.py"]:
            assert (await client.get(path)).status == 404, path

    serve(ctx, body)


PROM_LINE = re.compile(
    r'^(?:# (?:HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+'
    r'|[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? '
    r'[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|NaN|Inf))$'
)


def test_metrics_is_prometheus_text_and_healthz(ctx):
    ctx.metrics.latency(0.040)
    ctx.metrics.observe("engine", 0.012)
    ctx.metrics.count("drops_input", 3)

    async def body(client: TestClient, app: web.Application) -> None:
        r = await client.get("/metrics")
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
        lines = text.strip().splitlines()
        bad = [line for line in lines if not PROM_LINE.match(line)]
        assert not bad, bad
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")}
        assert samples['streamer_latency_seconds{quantile="0.5"}'] == pytest.approx(0.040)
        assert samples["streamer_drops_input_total"] == 3
        r = await client.get("/healthz")
        assert r.status == 200
        health = await r.json()
        assert health["ok"] is True and health["transform"] == "passthrough"

    serve(ctx, body)


def test_steps_rebuild_the_model_through_the_pipeline(ctx, monkeypatch):
    asked: list[int] = []
    monkeypatch.setattr(ctx.pipeline, "set_steps", asked.append)

    async def body(client: TestClient, app: web.Application) -> None:
        r = await client.post("/api/steps", json={"steps": 3})
        assert r.status in (401, 403) and asked == []
        r = await client.post("/api/steps", json={"steps": 3}, headers=AUTH)
        assert r.status == 200 and asked == [3]
        for bad in ("3", 2.5, True, None):
            r = await client.post("/api/steps", json={"steps": bad}, headers=AUTH)
            assert r.status == 400, bad
        assert asked == [3]

    serve(ctx, body)


def test_steps_on_a_passthrough_pipeline_is_a_clear_conflict(ctx):
    async def body(client: TestClient, app: web.Application) -> None:
        r = await client.post("/api/steps", json={"steps": 3}, headers=AUTH)
        assert r.status == 409 and "no model configured" in await r.text()
        r = await client.post("/api/steps", json={"steps": 0}, headers=AUTH)
        assert r.status in (400, 409)

    serve(ctx, body)
