"""Who may use the dashboard (issue 15): the Host check when bound to every interface, the one-time
sign-in code traded for a session token, and the preview refused to other sites' pages and capped per
client. Real servers on real sockets (aiohttp), over a real context."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from dashboard_harness import TOKEN, make_ctx, wait_for

from streamer.control.dashboard import access
from streamer.control.dashboard.access import SignIn
from streamer.control.dashboard.preview import BOUNDARY, PreviewFeed
from streamer.control.dashboard.server import make_app
from streamer.frames import Frame, now

AUTH = {"X-Streamer-Token": TOKEN, "Content-Type": "application/json"}


@asynccontextmanager
async def serving(ctx: Any, host: str = "127.0.0.1", sign_in: SignIn | None = None) -> AsyncIterator[int]:
    server = TestServer(make_app(ctx, TOKEN, sign_in), host=host)
    await server.start_server()
    try:
        yield server.port  # type: ignore[misc]
    finally:
        await server.close()


def own_lan_address() -> str:
    """This machine's address on its default route (no packet is sent: a UDP connect only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return ""
        address = probe.getsockname()[0]
    return "" if address.startswith("127.") else address


# ---- Host check ----------------------------------------------------------------------------------------
def test_bound_to_every_interface_only_this_machine_s_names_and_addresses_are_accepted(tmp_path):
    lan = own_lan_address()
    if not lan:
        pytest.skip("this machine has no non-loopback IPv4 address to connect to")
    ctx = make_ctx(tmp_path, {"dashboard": {"host": "0.0.0.0"}})

    async def body() -> None:
        async with serving(ctx, host="0.0.0.0") as port, aiohttp.ClientSession() as http:
            async def status(address: str, host_header: str) -> int:
                async with http.get(f"http://{address}:{port}/api/state", headers={"Host": host_header}) as r:
                    return r.status

            # DNS rebinding: a hostile name resolving to this machine; and addresses that are not ours
            assert await status("127.0.0.1", "evil.example") == 403
            assert await status(lan, f"evil.example:{port}") == 403
            assert await status(lan, f"203.0.113.9:{port}") == 403
            assert await status("127.0.0.1", f"{lan}:{port}") == 403  # ours, but not where this one came in
            # this machine, by the names and the address the request really reached
            assert await status("127.0.0.1", f"127.0.0.1:{port}") == 200
            assert await status("127.0.0.1", f"localhost:{port}") == 200
            assert await status(lan, f"{lan}:{port}") == 200
            assert await status(lan, f"{socket.gethostname()}:{port}") == 200

    asyncio.run(body())
    ctx.store.close()
    named = make_ctx(tmp_path / "named", {"dashboard": {"host": "0.0.0.0", "allowed_hosts": ["studio.lan"]}})

    async def named_body() -> None:
        async with serving(named, host="0.0.0.0") as port, aiohttp.ClientSession() as http:
            for host, want in (("studio.lan", 200), (f"studio.lan:{port}", 200), ("evil.example", 403)):
                async with http.get(f"http://{lan}:{port}/api/state", headers={"Host": host}) as r:
                    assert r.status == want, host

    asyncio.run(named_body())
    named.store.close()


def test_host_policy_of_a_single_address_is_unchanged():
    policy = access.allowed_hosts("192.168.1.20", ("studio.lan",))
    assert not policy.own_addresses
    assert policy.names == {"localhost", "127.0.0.1", "::1", "192.168.1.20", "studio.lan"}
    assert access.allowed_hosts("::").own_addresses and access.allowed_hosts("").own_addresses


# ---- sign-in codes and sessions ------------------------------------------------------------------------
def test_a_sign_in_code_works_once_and_its_session_token_drives_the_dashboard(ctx):
    clock = [1000.0]
    sign_in = SignIn(TOKEN, clock=lambda: clock[0])

    async def body() -> None:
        async with serving(ctx, sign_in=sign_in) as port, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"

            async def post(path: str, credential: str, **headers: str) -> tuple[int, dict[str, Any]]:
                sent = {"Content-Type": "application/json", "X-Streamer-Token": credential, **headers}
                async with http.post(base + path, data="{}", headers=sent) as r:
                    return r.status, (await r.json() if r.content_type == "application/json" else {})

            code = sign_in.new_code()
            assert (await post("/api/kill", code))[0] == 403  # a code is no token: it only signs in
            assert (await post("/api/session", code, Origin="http://evil.example"))[0] == 403  # and not spent
            status, answer = await post("/api/session", code)
            assert status == 200 and answer["status"] == "signed in"
            session = answer["token"]
            assert session != TOKEN and len(session) >= 32
            assert (await post("/api/session", code))[0] == 403  # spent
            assert (await post("/api/kill", session))[0] == 200 and not ctx.bus.current().enabled
            assert (await post("/api/revive", session))[0] == 200 and ctx.bus.current().enabled
            # the long-lived token (pasted into the page once) trades for a session token too
            status, answer = await post("/api/session", TOKEN)
            assert status == 200 and answer["token"] not in (TOKEN, session)
            # a code not used in time is refused
            late, in_time = sign_in.new_code(), sign_in.new_code()
            clock[0] += access.CODE_TTL_S - 1
            assert (await post("/api/session", in_time))[0] == 200
            clock[0] += 2
            assert (await post("/api/session", late))[0] == 403
            assert (await post("/api/session", "a-guess"))[0] == 403

    asyncio.run(body())


def test_sessions_are_bounded():
    sign_in = SignIn(TOKEN)
    first = sign_in.new_session()
    assert sign_in.check(first) and sign_in.check(TOKEN) and not sign_in.check("x")
    for _ in range(access.MAX_SESSIONS):
        sign_in.new_session()
    assert not sign_in.check(first) and sign_in.check(TOKEN)


# ---- the preview ---------------------------------------------------------------------------------------
async def first_part(response: aiohttp.ClientResponse) -> bytes:
    """Read one multipart part's JPEG out of an MJPEG stream."""
    head = (await response.content.readuntil(b"\r\n\r\n")).lstrip(b"\r\n")  # the CRLF ending the part before
    assert head.startswith(f"--{BOUNDARY}".encode()), head
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return await response.content.readexactly(length)


def test_the_preview_is_refused_to_other_sites_pages(ctx):
    ctx.pipeline.start()
    wait_for(lambda: ctx.pipeline.latest_output() is not None, 10, "an output frame")

    async def body() -> None:
        async with serving(ctx) as port, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            refused = [
                {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"},  # <img> on another site's page
                {"Sec-Fetch-Site": "same-site"},  # another port of 127.0.0.1 is the same site, not us
                {"Origin": "http://evil.example"},
                {"Origin": "null"},
                {"Referer": "http://evil.example/page.html"},  # plain http on a LAN address: no Sec-Fetch-*
                {"Referer": f"http://127.0.0.1:{port + 1}/"},
            ]
            for path in ("/preview.mjpeg", "/preview.jpg"):
                for headers in refused:
                    async with http.get(base + path, headers=headers) as r:
                        assert r.status == 403, (path, headers)
                        assert "other sites' pages" in await r.text()
            allowed = [
                {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "image"},  # the dashboard, OBS's preview page
                {"Sec-Fetch-Site": "none"},  # the address opened directly (a tab, an OBS browser source URL)
                {},  # not a browser (an OBS media source, curl)
                {"Referer": f"{base}/overlays/preview.html"},
            ]
            for headers in allowed:
                async with http.get(base + "/preview.jpg", headers=headers) as r:
                    assert r.status == 200 and r.content_type == "image/jpeg", headers
                async with http.get(base + "/preview.mjpeg", headers=headers) as r:
                    assert r.status == 200 and (await first_part(r)).startswith(b"\xff\xd8"), headers

    asyncio.run(body())


def test_a_fifth_stream_from_one_client_is_refused_while_another_client_still_gets_one(ctx):
    ctx.pipeline.start()
    wait_for(lambda: ctx.pipeline.latest_output() is not None, 10, "an output frame")

    async def body() -> None:
        async with serving(ctx) as port, aiohttp.ClientSession() as one:
            url = f"http://127.0.0.1:{port}/preview.mjpeg"
            streams = []
            for _ in range(4):
                r = await one.get(url)
                assert r.status == 200
                await first_part(r)  # really streaming
                streams.append(r)
            async with one.get(url) as fifth:
                assert fifth.status == 503 and "per client" in await fifth.text()
                assert fifth.headers["Retry-After"]
            other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))  # a second client: another address
            async with aiohttp.ClientSession(connector=other) as two, two.get(url) as r:
                assert r.status == 200 and (await first_part(r)).startswith(b"\xff\xd8")
            streams.pop().close()  # a viewer goes away: its slot is free again
            for _ in range(50):
                async with one.get(url) as again:
                    if again.status == 200:
                        await first_part(again)
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the freed slot was never given back")
            for r in streams:
                r.close()

    asyncio.run(body())


def test_a_still_picture_is_repeated_so_a_page_can_tell_it_from_a_dead_stream():
    frame = Frame(__import__("numpy").zeros((16, 16, 3), "uint8"), now(), index=0)
    feed = PreviewFeed(lambda: frame, fps=20)
    app = aiohttp.web.Application()
    app.router.add_get("/preview.mjpeg", feed.handle_mjpeg)

    async def body() -> None:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{server.port}/preview.mjpeg") as r:
                loop = asyncio.get_running_loop()
                first = await first_part(r)
                t0 = loop.time()
                again = await asyncio.wait_for(first_part(r), timeout=3 * 2.0)
                gap = loop.time() - t0
                assert again == first and 1.5 < gap < 3.5, gap  # the same picture, about KEEPALIVE_S later
        finally:
            feed.closing.set()
            await server.close()

    asyncio.run(body())
