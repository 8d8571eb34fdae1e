"""POST /api/blocklist: the streamer changes the blocklist while live, over the real dashboard server.

Reading, replacing and adding words; refusals that change nothing; the words kept in the Store across a
restart; and a change denies every waiting request the new list holds at once: it leaves the live state
(what overlays read), the moderator's list and the approval buttons, and is never applied.
(The same with chat from the fake Twitch and OBS's text source read back: tests/control/obs/
test_obs_broadcast_safety.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from dashboard_harness import TOKEN, make_ctx
from test_dashboard import serve

from streamer.control.policy.normalize import Blocklist

AUTH = {"X-Streamer-Token": TOKEN}


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path, {"moderation": {"mode": "approval", "min_change_interval_s": 0.0}})
    yield c
    c.store.close()


def served(ctx: Any, body: Any) -> None:
    serve(ctx, lambda client, app: body(client))


async def post(client: TestClient, path: str, body: Any, status: int = 200) -> Any:
    r = await client.post(path, json=body, headers=AUTH)
    data = await r.json()
    assert r.status == status, (path, body, r.status, data)
    return data


def test_read_replace_and_add(ctx):
    async def body(client: TestClient) -> None:
        shipped = Blocklist.build().size
        assert await post(client, "/api/blocklist", {}) == {"terms": [], "config_terms": [], "entries": shipped,
                                                            "refused": []}
        r = await client.post("/api/blocklist", headers=AUTH)  # no body at all: a read too
        assert r.status == 200 and (await r.json())["terms"] == []
        assert (await post(client, "/api/blocklist", {"terms": ["balloon", " Kite "]}))["terms"] == ["balloon", "Kite"]
        got = await post(client, "/api/blocklist", {"add": ["kite", "*spider"]})
        assert got["terms"] == ["balloon", "Kite", "*spider"] and got["entries"] == shipped + 3
        assert (await post(client, "/api/prompt", {"text": "spiderweb"}, 422))["reason"] == "blocked: blocked by the streamer"
        assert (await post(client, "/api/blocklist", {"terms": []}))["terms"] == []
        assert (await post(client, "/api/prompt", {"text": "spiderweb"}))["status"] == "applied"

    served(ctx, body)


@pytest.mark.parametrize("bad, words", [
    ({"terms": "balloon"}, "must be a list"),
    ({"add": [1, 2]}, "must be text"),
    ({"add": ["x"]}, "needs at least two Latin letters"),
    ({"add": ["ok word", "é"]}, "needs at least two Latin letters"),
    ({"add": ["y" * 101]}, "at most 100 characters"),
    ({"terms": [f"word{i}" for i in range(501)]}, "at most 500"),
    ({"terms": [], "add": []}, "not both"),
    ({"words": ["kite"]}, "unknown field 'words'"),
])
def test_a_refused_change_is_a_400_and_keeps_the_list(ctx, bad, words):
    async def body(client: TestClient) -> None:
        await post(client, "/api/blocklist", {"terms": ["balloon"]})
        got = await post(client, "/api/blocklist", bad, 400)
        assert got["status"] == "refused" and words in got["reason"], got
        assert (await post(client, "/api/blocklist", {}))["terms"] == ["balloon"]

    served(ctx, body)


def test_a_word_that_would_block_the_streamer_s_own_template_is_refused(tmp_path):
    ctx = make_ctx(tmp_path, {"moderation": {"template": "{prompt}, in the style of a kite festival"}})
    try:
        async def body(client: TestClient) -> None:
            got = await post(client, "/api/blocklist", {"add": ["kite"]}, 400)
            assert "moderation.template" in got["reason"]
            assert ctx.control.moderation.runtime_terms == ()

        served(ctx, body)
    finally:
        ctx.store.close()


def test_a_change_denies_the_waiting_requests_it_now_blocks_everywhere_at_once(ctx):
    approvals = ctx.control.approvals
    governor = ctx.control.governor
    doomed = governor.propose("a red b4ll00n over the sea", source="twitch", author="viewer1").id
    kept = governor.propose("a paper boat", source="twitch", author="viewer2").id
    assert [i.id for i in approvals.pending()] == [doomed, kept]

    async def body(client: TestClient) -> None:
        got = await post(client, "/api/blocklist", {"add": ["balloon"]})
        assert got["refused"] == [doomed]
        state = await (await client.get("/api/state")).json()  # what the overlays read (no token)
        assert state["queue"]["ids"] == [kept] and state["queue"]["count"] == 1
        listed = (await post(client, "/api/approvals/list", {}))["items"]
        assert [i["id"] for i in listed] == [kept] and "b4ll00n" not in str(listed)
        r = await client.post(f"/api/approvals/{doomed}/approve", json={}, headers=AUTH)
        assert r.status == 409 and "already denied by moderation" in (await r.json())["reason"]
        await post(client, f"/api/approvals/{kept}/approve", {})

    served(ctx, body)
    item = approvals.get(doomed)
    assert item.status == "denied" and item.decided_by == "moderation" and "blocked" in item.reason
    history = [row["text"] for row in ctx.store.query("SELECT text FROM prompt_history")]
    assert ctx.bus.current().text == "a paper boat" and not any("ll00n" in t for t in history)


def test_the_words_are_kept_across_a_restart(tmp_path):
    ctx = make_ctx(tmp_path)

    async def add(client: TestClient) -> None:
        await post(client, "/api/blocklist", {"add": ["balloon"]})

    served(ctx, add)
    ctx.store.close()
    again = make_ctx(tmp_path)  # the same Store file, as after a restart
    try:
        async def read(client: TestClient) -> None:
            assert (await post(client, "/api/blocklist", {}))["terms"] == ["balloon"]
            await post(client, "/api/prompt", {"text": "a balloon"}, 422)

        served(again, read)
    finally:
        again.store.close()
