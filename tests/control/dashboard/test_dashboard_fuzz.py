"""A bounded, seeded fuzz of every dashboard route and the WebSocket (issue 15).

Every request here is hostile or malformed: no token, a wrong one, the token where the docs do not
take it (query string, cookie), a cross-site Origin, a foreign Host (DNS rebinding), bodies that are
too large, not JSON, JSON of the wrong shape, nested thousands deep, with numbers beyond 64 bits,
bogus charsets or lone surrogates, and approval ids that overflow SQLite. Each must be answered with a
4xx (never a 5xx, never a 2xx), and afterwards nothing may have changed: the prompt bus, the
governor, the running poll, the pipeline's reset flag and every row of every table in the store.
A last part mutates the field values of valid bodies at random: those may succeed, but never 5xx,
and a refusal changes nothing. The routes come from the app's router, so a new route is fuzzed too.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from dashboard_harness import TOKEN, VALID_BODIES, make_ctx, wait_for

from streamer.control.dashboard.server import make_app

SEED = 15
MUTATIONS_PER_ROUTE = 40
RANDOM_BODIES_PER_ROUTE = 12
AUTH = {"X-Streamer-Token": TOKEN}
JSON_TYPE = {"Content-Type": "application/json"}

FILLED = {"{id}": "1", "{name}": "dashboard.html"}
REFUSED = range(400, 500)


def _path(template: str, **values: str) -> str:
    for key, default in FILLED.items():
        template = template.replace(key, values.get(key.strip("{}"), default))
    return template


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, HEAD twins left out."""
    found = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        found.append((route.method, info.get("path") or info["formatter"]))
    return found


def snapshot(ctx: Any, *, audit: bool = True) -> tuple[Any, ...]:
    """Everything a request could change. audit=False leaves out the moderation audit, which a
    refused prompt (422) rightly writes to."""
    c = ctx.control
    status = dict(c.governor.status())
    status.pop("next_change_in_s", None)  # a countdown, not state
    poll = c.polls.current()
    tables = [r[0] for r in ctx.store.query("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    rows = {t: [tuple(r) for r in ctx.store.query(f"SELECT * FROM {t}")]  # noqa: S608 (names from sqlite_master)
            for t in tables if audit or t != "moderation_audit"}
    if not audit and "sqlite_sequence" in rows:  # the audit table's row counter moves with the audit
        rows["sqlite_sequence"] = [r for r in rows["sqlite_sequence"] if r[0] != "moderation_audit"]
    return (ctx.bus.current(), status, None if poll is None else (poll.id, poll.status, poll.votes),
            ctx.pipeline._reset_requested.is_set(), rows)


class Fuzzer:
    """Sends requests, asserts each outcome and keeps the counts."""

    def __init__(self, client: TestClient, ctx: Any) -> None:
        self.client = client
        self.ctx = ctx
        self.rng = random.Random(SEED)
        self.statuses: Counter[int] = Counter()
        self.tried = 0

    async def refused(self, method: str, path: str, *, expect: range | set[int] = REFUSED,
                      api_error: bool = False, **kwargs: Any) -> int:
        """One request that must be refused with a status in `expect` and change nothing; api_error:
        the refusal comes from the API's parsing, so its body is one line of JSON with a reason."""
        before = snapshot(self.ctx)
        async with self.client.request(method, path, allow_redirects=False, **kwargs) as r:
            text = (await r.read()).decode("utf-8", "replace")
            status = r.status
            ctype = r.content_type
        self.tried += 1
        self.statuses[status] += 1
        what = (method, path, {k: v for k, v in kwargs.items() if k != "data"}, status, text[:200])
        assert status in expect, what
        if api_error:
            assert ctype == "application/json" and "\n" not in text.strip(), what
            assert json.loads(text)["reason"], what
        assert snapshot(self.ctx) == before, what
        return status

    async def answered(self, method: str, path: str, **kwargs: Any) -> int:
        """A request that may succeed; it must not 5xx, and a refusal must change nothing."""
        before, quiet = snapshot(self.ctx), snapshot(self.ctx, audit=False)
        async with self.client.request(method, path, allow_redirects=False, **kwargs) as r:
            text = (await r.read()).decode("utf-8", "replace")
            status = r.status
        self.tried += 1
        self.statuses[status] += 1
        what = (method, path, kwargs.get("data", b"")[:200], status, text[:200])
        assert status < 500, what
        if status == 422:  # moderation said no: only its audit row may be new
            assert snapshot(self.ctx, audit=False) == quiet, what
        elif status >= 400:
            assert snapshot(self.ctx) == before, what
        return status

    def header_junk(self) -> str:
        """Random Latin-1 without control characters (a client cannot send those in a header)."""
        chars = [chr(c) for c in (*range(0x21, 0x7F), *range(0xA0, 0x100))]
        return "".join(self.rng.choice(chars) for _ in range(self.rng.randint(1, 40)))

    def random_json(self, depth: int = 0) -> Any:
        rng = self.rng
        kinds = ["str", "int", "float", "bool", "null", "big", "neg"] + (["list", "dict"] if depth < 3 else [])
        kind = rng.choice(kinds)
        if kind == "str":
            return "".join(rng.choice("ab \u202e\u0000\U0001f600é<>\"'\\") for _ in range(rng.randint(0, 12)))
        if kind == "int":
            return rng.randint(-(2**63), 2**63 - 1)
        if kind == "float":
            return rng.uniform(-1e300, 1e300) * rng.choice([1, 1e-300, 1e-6])
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "big":
            return 10 ** rng.randint(19, 30)  # beyond 64 bits, still < 4300 digits
        if kind == "neg":
            return -rng.randint(0, 10**6)
        if kind == "list":
            return [self.random_json(depth + 1) for _ in range(rng.randint(0, 4))]
        if kind == "dict":
            return {str(rng.randint(0, 9)): self.random_json(depth + 1) for _ in range(rng.randint(0, 3))}
        return None


# Bodies that are not a JSON object this API takes, each with Content-Type: application/json.
def malformed_json_bodies() -> list[bytes]:
    deep = 5000
    return [
        b" ",
        b"{not json",
        b"[" * deep + b"]" * deep,  # the C scanner recurses per level: RecursionError before the fix
        b'{"a":' * 40 + b"1" + b"}" * 40,  # parses, but deeper than any route takes
        b'{"text": "hi", "strength": ' + b"9" * 5000 + b"}",  # beyond Python's int digit limit
        b'{"strength": ' + b"9" * 30 + b"}",  # beyond 64 bits
        b'{"strength": 1e999}',
        b'{"strength": -1e999}',
        b'{"strength": NaN}',
        b'{"strength": Infinity}',
        b'{"text": "\\ud800"}',  # a lone surrogate: valid JSON escape, no valid text
        b'{"reason": "\\udfff"}',
        b"[]",
        b'"a string"',
        b"42",
        b"null",
        b"true",
        b"\xff\xfe{\x00}\x00",
        b'{"text": "caf\xe9"}',  # Latin-1, not UTF-8
    ]


WRONG_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
               "application/json-patch+json", "text/json", "application/xml", "image/png", ""]
BOGUS_CHARSETS = ["bogus-xyz", "utf-16", "utf-32", "latin-1", "utf-8x", "\"utf-16\"", "idna", "rot13", "zlib_codec"]


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path)
    c.control.approvals.submit("a castle made of cheese", source="twitch", author="viewer1", model_text="x")
    c.pipeline.start()  # a running pipeline, so /preview.jpg and /healthz answer as they do live
    wait_for(lambda: c.pipeline.latest_output() is not None, 10, "an output frame")
    yield c
    c.pipeline.stop()
    c.store.close()


def _serve(ctx: Any, body: Any) -> None:
    async def main() -> None:
        async with TestClient(TestServer(make_app(ctx, TOKEN), host="127.0.0.1")) as client:
            await body(client, client.server.app)

    asyncio.run(main())


async def _chunks(total: int) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length up front), so only reading it can find it too large."""
    piece = b'{"text": "' + b"x" * 8000
    sent = 0
    while sent < total:
        yield piece
        sent += len(piece)


async def _auth_and_origin(f: Fuzzer, posts: list[str]) -> None:
    """The token only in a header, never a cross-site request, never a foreign Host."""
    foreign_hosts = ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", "localhost.evil.example",
                     "[::2]:8765", "0x7f000001"]
    for template in posts:
        path, body = _path(template), VALID_BODIES[template]
        await f.refused("POST", path, json=body, expect={401})
        for token in ("wrong", TOKEN[:-1], TOKEN + "x", f.header_junk(), "é" + TOKEN):
            await f.refused("POST", path, json=body, expect={401, 403}, headers={"X-Streamer-Token": token})
            await f.refused("POST", path, json=body, expect={401, 403}, headers={"Authorization": f"Bearer {token}"})
        await f.refused("POST", path, json=body, expect={401}, headers={"Authorization": f"Basic {TOKEN}"})
        for name in ("token", "X-Streamer-Token", "access_token"):  # docs: header only, never the URL
            await f.refused("POST", path, json=body, expect={401}, params={name: TOKEN})
        await f.refused("POST", path, json=body, expect={401}, headers={"Cookie": f"token={TOKEN}"})
        for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example"):
            await f.refused("POST", path, json=body, expect={403}, headers={**AUTH, "Origin": origin})
        await f.refused("POST", path, json=body, expect={403}, headers={**AUTH, "Sec-Fetch-Site": "cross-site"})
        for host in foreign_hosts:
            await f.refused("POST", path, json=body, expect={403}, headers={**AUTH, "Host": host})
        for method in ("PUT", "PATCH", "DELETE"):
            await f.refused(method, path, json=body, expect={401, 405})
            await f.refused(method, path, json=body, expect={405}, headers=AUTH)


async def _bodies(f: Fuzzer, posts: list[str]) -> None:
    """With the right token, every body that is not a JSON object of the right size is a 4xx with a
    one-line JSON reason."""
    for template in posts:
        path = _path(template)
        await f.refused("POST", path, expect={413}, api_error=True, headers=AUTH,
                        json={"text": "x" * 100_000, "reason": "x"})
        await f.refused("POST", path, expect={413}, api_error=True, data=_chunks(100_000),
                        headers={**AUTH, **JSON_TYPE})
        for data in malformed_json_bodies():
            await f.refused("POST", path, expect={400}, api_error=True, data=data, headers={**AUTH, **JSON_TYPE})
        for _ in range(RANDOM_BODIES_PER_ROUTE):
            junk = f.rng.randbytes(f.rng.randint(1, 2000))
            await f.refused("POST", path, expect={400}, api_error=True, data=junk, headers={**AUTH, **JSON_TYPE})
            ctype = f.rng.choice(WRONG_TYPES)
            await f.refused("POST", path, expect={415}, api_error=True, data=junk,
                            headers={**AUTH, "Content-Type": ctype or "application/octet-stream"})
        valid = json.dumps(VALID_BODIES[template]).encode()
        for ctype in WRONG_TYPES[:-1]:
            await f.refused("POST", path, expect={415}, api_error=True, data=valid, headers={**AUTH, "Content-Type": ctype})
        for charset in BOGUS_CHARSETS:
            await f.refused("POST", path, expect={415}, api_error=True, data=valid,
                            headers={**AUTH, "Content-Type": f"application/json; charset={charset}"})


async def _approval_ids(f: Fuzzer) -> None:
    """Ids that name no request, 64-bit overflow included (SQLite raised OverflowError -> 500)."""
    ids = [str(2**63), str(2**64), "9" * 30, "9" * 5000, "0", "-1", "1e5", "0x1", "abc", "%F0%9F%98%80",
           "%EF%BC%91", "1%00", "%20%31", "１"]
    for verb in ("approve", "deny"):
        for item_id in ids:
            await f.refused("POST", f"/api/approvals/{item_id}/{verb}", expect={404}, api_error=True,
                            json={}, headers=AUTH)


async def _mutations(f: Fuzzer, posts: list[str]) -> None:
    """Valid bodies with field values (and extra fields) swapped for random JSON: may succeed, never 5xx."""
    for template in posts:
        for _ in range(MUTATIONS_PER_ROUTE):
            body = dict(VALID_BODIES[template])
            for key in list(body) + ["text", "strength", "steps", "cancel", "options"]:
                if f.rng.random() < 0.5:
                    body[key] = f.random_json()
            item_id = f.rng.choice(["1", "2", str(f.rng.randint(0, 2**63 - 1))])
            await f.answered("POST", _path(template, id=item_id), json=body, headers=AUTH)


async def _reads(f: Fuzzer, gets: list[str]) -> None:
    """Reading never needs the token, but only from this machine's names; bodies and tokens on a GET
    change nothing."""
    for template in gets:
        path = _path(template)
        for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):
            await f.refused("GET", path, expect={403}, headers={"Host": host})
        if path in ("/preview.mjpeg", "/ws"):  # a stream and an upgrade: covered below and in _websocket
            continue
        await f.answered("GET", path, params={"token": TOKEN}, data=f.rng.randbytes(100_000), headers=JSON_TYPE)
        await f.answered("GET", path, headers={"Origin": "http://evil.example", **AUTH})


async def _websocket(f: Fuzzer, client: TestClient) -> None:
    """/ws is read-only: a cross-site page may not open it, and whatever a page sends changes nothing."""
    await f.refused("GET", "/ws", expect={403}, headers={"Origin": "http://evil.example"})
    await f.refused("GET", "/ws", expect={403}, headers={"Origin": "null"})
    await f.refused("GET", "/ws?metrics=0", expect={400, 403}, headers={"Host": "evil.example"})
    await f.refused("GET", "/ws", expect={400})  # no Upgrade: not a WebSocket handshake
    for query in (f"?token={TOKEN}", "?metrics=0", "?metrics=%00%FF", f"?metrics={'9' * 5000}"):
        before = snapshot(f.ctx)
        ws = await client.ws_connect("/ws" + query, headers=AUTH)
        first = await ws.receive(timeout=5)
        assert first.type == WSMsgType.TEXT and json.loads(first.data)["type"] == "state"
        for message in ['{"type": "prompt", "text": "pwned"}', "kill", json.dumps(VALID_BODIES)]:
            await ws.send_str(message)
        await ws.send_bytes(f.rng.randbytes(1000))
        await ws.send_str("x" * 10_000)  # over max_msg_size: the server closes this connection
        msg = await ws.receive(timeout=5)
        while msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):  # state/metrics pushes, then the close
            msg = await ws.receive(timeout=5)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
        await ws.close()
        f.tried += 1
        f.statuses[101] += 1
        assert snapshot(f.ctx) == before, query


def test_every_route_refuses_hostile_and_malformed_requests_and_changes_nothing(ctx):
    async def body(client: TestClient, app: web.Application) -> None:
        f = Fuzzer(client, ctx)
        found = routes(app)
        posts = [p for m, p in found if m == "POST"]
        gets = [p for m, p in found if m == "GET"]
        assert sorted(posts) == sorted(VALID_BODIES), "a new POST route needs a body in VALID_BODIES"
        assert {m for m, _ in found} == {"GET", "POST"}, found
        await _auth_and_origin(f, posts)
        await _bodies(f, posts)
        await _approval_ids(f)
        await _reads(f, gets)
        await _websocket(f, client)
        # the refusals came from the checks, not a broken server: the same request with the token works
        r = await client.post("/api/kill", json={}, headers=AUTH)
        assert r.status == 200 and not ctx.bus.current().enabled
        await _mutations(f, posts)
        print(f"\ndashboard fuzz (seed {SEED}): {f.tried} requests, {len(posts)} POST + {len(gets)} GET routes "
              f"+ /ws; status histogram: {dict(sorted(f.statuses.items()))}")
        assert not [s for s in f.statuses if s >= 500]

    _serve(ctx, body)


def test_the_review_s_http_500s_are_one_line_4xx_answers(ctx):
    """The four inputs the security review found answered with a 500 and a traceback in the log."""
    cases = [
        ("/api/prompt", b"[" * 20_000 + b"]" * 20_000, "application/json", 400, "nested"),
        ("/api/prompt", b'{"text": "hi"}', "application/json; charset=bogus-xyz", 415, "UTF-8"),
        ("/api/strength", b'{"strength": ' + b"9" * 400 + b"}", "application/json", 400, "digits"),
        ("/api/strength", b'{"strength": 1e999}', "application/json", 400, "out of range"),
        ("/api/approvals/99999999999999999999999/approve", b"{}", "application/json", 404, "no request"),
    ]

    async def body(client: TestClient, app: web.Application) -> None:
        before = snapshot(ctx)
        for path, data, ctype, status, words in cases:
            r = await client.post(path, data=data, headers={**AUTH, "Content-Type": ctype})
            text = await r.text()
            assert r.status == status, (path, text)
            assert r.content_type == "application/json" and "\n" not in text, text
            assert words in json.loads(text)["reason"], text
        assert snapshot(ctx) == before

    _serve(ctx, body)
