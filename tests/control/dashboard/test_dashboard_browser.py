"""Sign-in links and the live preview in a real headless Chromium (issue 15): a one-time code becomes a
session token and leaves the address bar; the preview reconnects after a daemon restart and once a
slot is free; another site's page cannot take the preview slots.

Uses the Chromium fixture (`browser`, through conftest.py) and the `Watched` page of
tests/overlays/test_browser_overlays.py: any console error, page error or dialog fails the test.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_harness import TOKEN, make_ctx, running_dashboard, wait_for
from test_browser_overlays import Watched  # tests/overlays: conftest.py puts it on the path

from streamer.control.dashboard.access import SignIn

pytestmark = pytest.mark.browser
TOKEN_KEY = "streamer-dashboard-token"  # dashboard.js keeps the session token under this name
LIVE = "() => document.getElementById('output').dataset.state === 'live'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ctx(tmp_path) -> Iterator[Any]:
    c = make_ctx(tmp_path, {"dashboard": {"port": free_port()}})  # a fixed port, so a restart comes back on it
    c.pipeline.start()
    wait_for(lambda: c.pipeline.latest_output() is not None, 10, "an output frame")
    yield c
    c.pipeline.stop()
    c.store.close()


def stored_token(page: Any) -> str | None:
    return page.evaluate(f"() => sessionStorage.getItem('{TOKEN_KEY}')")  # type: ignore[no-any-return]


def test_a_sign_in_link_becomes_a_session_token_and_leaves_no_credential_in_the_address(browser, ctx):
    sign_in = SignIn(TOKEN)
    with running_dashboard(ctx, sign_in=sign_in) as url:
        code = sign_in.new_code()
        dash = Watched(browser, f"{url}/#code={code}", (1280, 900))
        page = dash.page
        page.wait_for_function(f"() => !!sessionStorage.getItem('{TOKEN_KEY}')")
        session = stored_token(page)
        assert session not in (TOKEN, code) and sign_in.check(session)  # its own token, not the long-lived one
        assert page.url == f"{url}/" and page.evaluate("() => location.hash") == ""  # nothing left to keep
        assert page.is_hidden("#token-form")
        page.click("#kill")
        wait_for(lambda: not ctx.bus.current().enabled, what="the kill switch with the session token")

        # the same link again (from the history, or copied to another tab): spent, and says so
        again = Watched(browser, f"{url}/#code={code}", (1280, 900))
        again.page.wait_for_selector("#token-form:not(.hidden)")
        assert "already used" in again.page.text_content("#token-hint")
        assert stored_token(again.page) is None and again.page.url == f"{url}/"
        again.expect_refusal(403)
        again.close()

        # an old-style #token= link, and a pasted token, both end with a session token kept instead
        old = Watched(browser, f"{url}/#token={TOKEN}", (1280, 900))
        old.page.wait_for_function(f"() => !['{TOKEN}', null].includes(sessionStorage.getItem('{TOKEN_KEY}'))")
        assert sign_in.check(stored_token(old.page)) and old.page.url == f"{url}/"
        old.close()
        pasted = Watched(browser, f"{url}/", (1280, 900))
        pasted.page.fill("#token-input", TOKEN)
        pasted.page.click("#token-entry button")
        pasted.page.wait_for_function(f"() => !['{TOKEN}', null].includes(sessionStorage.getItem('{TOKEN_KEY}'))")
        pasted.page.click("#revive")
        wait_for(lambda: ctx.bus.current().enabled, what="revive with the pasted token's session")
        pasted.close()
        dash.close()


def test_the_preview_page_comes_back_after_a_daemon_restart(browser, ctx):
    with running_dashboard(ctx) as url:
        preview = Watched(browser, f"{url}/overlays/preview.html", (640, 480))
        preview.page.wait_for_function(LIVE)
        # waited for, not read once: the next part may be loading, and Chromium reports naturalWidth 0
        # for an <img> whose src has just changed until the new picture has loaded
        preview.page.wait_for_function("() => document.getElementById('output').naturalWidth === 64",
                                       timeout=5_000)
    # the daemon is gone: the stream ended, and the page keeps trying
    preview.page.wait_for_function("() => document.getElementById('output').dataset.state === 'reconnecting'",
                                   timeout=15_000)
    with running_dashboard(ctx) as again:
        assert again == url
        preview.page.wait_for_function(LIVE, timeout=20_000)
    preview.problems = [p for p in preview.problems if "ERR_CONNECTION_REFUSED" not in p]
    preview.close()


def test_a_preview_refused_for_want_of_a_slot_connects_once_one_is_free(browser, ctx):
    with running_dashboard(ctx) as url:
        hogs = [urllib.request.urlopen(f"{url}/preview.mjpeg", timeout=10) for _ in range(4)]  # this machine's 4
        preview = Watched(browser, f"{url}/overlays/preview.html", (640, 480))
        page = preview.page
        page.wait_for_function("() => Number(document.getElementById('output').dataset.reconnects || 0) >= 1")
        assert page.evaluate("() => document.getElementById('output').dataset.state") == "reconnecting"
        for hog in hogs:
            hog.close()
        page.wait_for_function(LIVE, timeout=20_000)
        preview.expect_refusal(503)
        preview.close()


class _EvilPage(http.server.BaseHTTPRequestHandler):
    """Another site (http://localhost:PORT is not http://127.0.0.1): a page of preview <img> tags."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = "<!doctype html><title>evil</title>" + "".join(
            f'<img src="{self.target}/preview.mjpeg?{i}" alt="">' for i in range(8))
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_another_site_s_page_cannot_take_the_preview_slots(browser, ctx):
    with running_dashboard(ctx) as url:
        _EvilPage.target = url
        evil_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EvilPage)
        threading.Thread(target=evil_server.serve_forever, daemon=True).start()
        try:
            evil = Watched(browser, f"http://localhost:{evil_server.server_address[1]}/", (640, 480))
            evil.page.wait_for_function("() => [...document.images].every((i) => i.complete)")
            assert evil.page.evaluate("() => [...document.images].map((i) => i.naturalWidth)") == [0] * 8
            # ...while it stays open, OBS's preview page and the dashboard both still get a picture
            preview = Watched(browser, f"{url}/overlays/preview.html", (640, 480))
            preview.page.wait_for_function(LIVE)
            dash = Watched(browser, f"{url}/", (1280, 900))
            dash.page.wait_for_function("() => document.getElementById('preview').dataset.state === 'live'")
            evil.expect_refusal(403)
            for page in (evil, preview, dash):
                page.close()
        finally:
            evil_server.shutdown()
            evil_server.server_close()


def test_blocked_words_saved_on_the_dashboard_take_a_waiting_request_off_the_page(browser, tmp_path):
    ctx = make_ctx(tmp_path, {"dashboard": {"port": free_port()},
                              "moderation": {"mode": "approval", "min_change_interval_s": 0.0}})
    ctx.pipeline.start()
    governor = ctx.control.governor
    doomed = governor.propose("a red balloon over the sea", source="twitch", author="viewer1").id
    kept = governor.propose("a paper boat", source="twitch", author="viewer2").id
    try:
        with running_dashboard(ctx) as url:
            dash = Watched(browser, f"{url}/#token={TOKEN}", (1280, 1400))
            page = dash.page
            page.wait_for_function("() => document.querySelectorAll('#approvals li').length === 2")
            page.wait_for_function("() => document.getElementById('blocklist-info').textContent.includes('entries')")
            assert page.input_value("#blocklist-terms") == ""
            page.fill("#blocklist-terms", "kite\n  balloon \n\n")
            page.click("#blocklist-save")
            page.wait_for_function("() => document.getElementById('blocklist-result').textContent.startsWith('saved')")
            assert page.text_content("#blocklist-result") == f"saved 2 words; refused waiting request #{doomed}"
            assert ctx.control.moderation.runtime_terms == ("kite", "balloon")
            page.wait_for_function(f"() => [...document.querySelectorAll('#approvals li')].map((li) => li.dataset.id)"
                                   f".join() === '{kept}'")
            assert "balloon" not in page.text_content("#approvals")
            # a word that would block nothing but is malformed: refused, the list and the queue unchanged
            page.fill("#blocklist-terms", "kite\nx")
            page.click("#blocklist-save")
            page.wait_for_function("() => document.getElementById('blocklist-result').textContent.includes('refused (400)')")
            dash.expect_refusal(400)
            assert ctx.control.moderation.runtime_terms == ("kite", "balloon")
            dash.close()
        assert ctx.control.approvals.get(doomed).decided_by == "moderation"
    finally:
        ctx.pipeline.stop()
        ctx.store.close()
