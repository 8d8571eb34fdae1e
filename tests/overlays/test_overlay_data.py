"""What the unauthenticated live state (the overlays' feed) holds of the approval queue and the prompt,
per `dashboard.overlay_queue`, and how the dashboard API answers an approval moderation refuses.
(The same in a real browser: test_browser_overlays.py.)"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "control" / "dashboard"))
from dashboard_harness import TOKEN, make_ctx  # noqa: E402

from streamer import config  # noqa: E402
from streamer.config import ConfigError  # noqa: E402
from streamer.control.dashboard.server import make_app  # noqa: E402

AUTH = {"X-Streamer-Token": TOKEN}
TRICK = "a \u202eedun figure"


def served(ctx: Any, body: Any) -> None:
    async def main() -> None:
        async with TestClient(TestServer(make_app(ctx, TOKEN), host="127.0.0.1")) as client:
            await body(client)

    asyncio.run(main())


def approval_ctx(tmp_path: Path, shown: str) -> Any:
    ctx = make_ctx(tmp_path, {"moderation": {"mode": "approval", "min_change_interval_s": 0.0},
                              "dashboard": {"overlay_queue": shown}})
    ctx.control.governor.propose("a lighthouse\u200b at dusk", source="twitch", author="alice\u202e")
    ctx.control.approvals.submit(TRICK, source="twitch", author="nude_dude", model_text=TRICK)  # around the governor
    return ctx


@pytest.mark.parametrize("shown", ["names", "count", "off"])
def test_the_live_state_never_holds_a_waiting_request_s_text(tmp_path, shown):
    ctx = approval_ctx(tmp_path, shown)

    async def body(client: TestClient) -> None:
        state = await (await client.get("/api/state")).text()
        async with client.ws_connect("/ws?metrics=0") as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == WSMsgType.TEXT
            pushed = msg.data
        for text in (state, pushed):
            assert "lighthouse" not in text and "edun" not in text and "figure" not in text
            queue = json.loads(text)["queue"]
            assert queue["shown"] == shown and queue["count"] == 2 and queue["ids"] == [1, 2]
            # names: cleaned (no bidi), and a name holding a blocked word is not painted either
            expected = [{"id": 1, "author": "alice"}, {"id": 2, "author": "a viewer"}] if shown == "names" else []
            assert queue["names"] == expected
        r = await client.post("/api/approvals/list", json={})
        assert r.status == 401  # the text is for the token holder only
        items = (await (await client.post("/api/approvals/list", json={}, headers=AUTH)).json())["items"]
        assert [(i["text"], i["author"]) for i in items] == [("a lighthouse at dusk", "alice"), ("a edun figure", "nude_dude")]

    served(ctx, body)
    ctx.store.close()


def test_an_approval_moderation_refuses_is_answered_as_refused(tmp_path):
    ctx = approval_ctx(tmp_path, "names")

    async def body(client: TestClient) -> None:
        r = await client.post("/api/approvals/2/approve", json={}, headers=AUTH)
        assert r.status == 422
        assert await r.json() == {"ok": False, "id": 2, "status": "denied", "reason": "blocked: sexual content"}
        assert ctx.bus.current().text == "a watercolour painting"
        r = await client.post("/api/approvals/1/approve", json={}, headers=AUTH)
        assert r.status == 200 and (await r.json())["status"] == "approved"
        assert ctx.bus.current().text == "a lighthouse at dusk"
        prompt = (await (await client.get("/api/state")).json())["prompt"]
        assert prompt["text"] == "a lighthouse at dusk" and prompt["author"] == "alice"

    served(ctx, body)
    ctx.store.close()


def test_the_prompt_as_pages_show_it_has_no_hidden_characters(tmp_path):
    ctx = make_ctx(tmp_path)
    # the streamer's own paths (config, console) skip moderation: the pages still show no hidden characters
    ctx.bus.set("a cat\u202e\u200b in\x00 a hat " + "x" * 500, source="console\u2066", author="nude_lover")

    async def body(client: TestClient) -> None:
        prompt = (await (await client.get("/api/state")).json())["prompt"]
        assert prompt["text"].startswith("a cat in a hat xxx") and prompt["text"].endswith("…")
        assert len(prompt["text"]) == ctx.settings.moderation.max_length
        assert prompt["source"] == "console" and prompt["author"] == "a viewer"

    served(ctx, body)
    ctx.store.close()


def test_overlay_queue_is_a_checked_setting():
    assert config.from_dict({}).dashboard.overlay_queue == "names"
    assert config.from_dict({"dashboard": {"overlay_queue": "count"}}).dashboard.overlay_queue == "count"
    with pytest.raises(ConfigError, match=r"'dashboard.overlay_queue' must be one of 'names', 'count', 'off'; got 'text'"):
        config.from_dict({"dashboard": {"overlay_queue": "text"}}, "streamer.toml")
