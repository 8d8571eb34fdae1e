"""The dashboard and the OBS overlays in a real headless Chromium (Debian's /usr/bin/chromium, driven
by Playwright), against the real dashboard server over a real context.

Screenshots of every page go to test-artifacts/ for a person to look at. Any console error (a CSP
violation included), page error or JavaScript dialog fails the test.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "control" / "dashboard"))
from dashboard_harness import TOKEN, make_ctx, running_dashboard, wait_for  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver fonts-dejavu-core "
                    "(.ci/system-deps.sh does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs Playwright for Python: .venv/bin/pip install playwright "
                    "(never `playwright install`: the tests use the system chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                              args=ARGS)
        yield b
        b.close()


@pytest.fixture
def app(tmp_path) -> Iterator[tuple[Any, str]]:
    ctx = make_ctx(tmp_path)
    ctx.pipeline.start()
    try:
        with running_dashboard(ctx) as url:
            yield ctx, url
    finally:
        ctx.pipeline.stop()
        ctx.store.close()


class Watched:
    """A page whose console errors, page errors and dialogs are collected (a dialog means script ran)."""

    def __init__(self, browser: Any, url: str, size: tuple[int, int] = (1280, 720)) -> None:
        self.context = browser.new_context(viewport={"width": size[0], "height": size[1]})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

        def on_dialog(dialog: Any) -> None:
            self.problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

        self.page.on("dialog", on_dialog)
        self.page.goto(url)

    def shot(self, name: str, *, transparent: bool = False) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), omit_background=transparent, full_page=not transparent)
        return path

    def expect_refusal(self, status: int) -> None:
        """Drop the console line Chromium writes for a refusal this test provoked on purpose."""
        self.problems = [p for p in self.problems if f"status of {status} " not in p]

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


def test_prompt_set_on_the_dashboard_appears_in_the_overlay(browser, app):
    ctx, url = app
    overlay = Watched(browser, f"{url}/overlays/prompt.html", (1280, 200))
    overlay.page.wait_for_function("() => document.getElementById('prompt-text')?.textContent === 'a watercolour painting'")
    dash = Watched(browser, f"{url}/#token={TOKEN}", (1280, 1400))
    page = dash.page
    assert "token" not in page.url  # the fragment is dropped from the address bar and history at once
    page.wait_for_selector("#conn.ok")
    assert page.is_hidden("#token-form")
    page.fill("#prompt-input", "a charcoal drawing of a harbour")
    page.click("#prompt-submit")
    page.wait_for_function("() => document.getElementById('prompt-result').textContent.startsWith('applied')")
    assert ctx.bus.current().text == "a charcoal drawing of a harbour"
    overlay.page.wait_for_function("() => document.getElementById('prompt-text').textContent === 'a charcoal drawing of a harbour'")
    assert "transition" in overlay.page.get_attribute(".prompt-card", "class")  # the change animates
    page.wait_for_function("() => document.getElementById('current-prompt').textContent.includes('charcoal')")

    page.fill("#prompt-input", "nude figure study")  # blocked by moderation: shown as refused, nothing changes
    page.click("#prompt-submit")
    page.wait_for_function("() => document.getElementById('prompt-result').textContent.includes('refused (422)')")
    assert ctx.bus.current().text == "a charcoal drawing of a harbour"
    dash.expect_refusal(422)

    page.click("#kill")
    wait_for(lambda: not ctx.bus.current().enabled, what="the kill switch")
    overlay.page.wait_for_function("() => document.querySelector('.prompt-card').classList.contains('off')")
    page.wait_for_function("() => document.getElementById('ai-state').textContent.includes('off')")
    page.wait_for_function("() => document.getElementById('fps-now').textContent.includes('fps')")  # metrics pushed
    page.wait_for_timeout(1200)  # a couple of chart points and preview frames for the screenshot
    dash.shot("dashboard")
    overlay.page.wait_for_timeout(900)  # let the transition finish before the picture
    overlay.shot("overlay-prompt", transparent=True)
    page.click("#revive")
    wait_for(lambda: ctx.bus.current().enabled, what="revive")
    dash.close()
    overlay.close()


def test_poll_started_on_the_dashboard_updates_the_overlay_bars(browser, app):
    ctx, url = app
    overlay = Watched(browser, f"{url}/overlays/poll.html", (720, 400))
    dash = Watched(browser, f"{url}/#token={TOKEN}", (1280, 1400))
    page = dash.page
    page.wait_for_selector("#conn.ok")
    page.fill("#poll-question", "What next?")
    page.fill("#poll-choices", "oil painting\npixel art\nclaymation")
    page.fill("#poll-seconds", "90")
    page.click("#poll-start")
    overlay.page.wait_for_function("() => document.getElementById('poll-title')?.textContent === 'What next?'")
    labels = overlay.page.eval_on_selector_all(".poll-label", "els => els.map(e => e.textContent)")
    assert labels == ["oil painting", "pixel art", "claymation"]
    countdown = overlay.page.text_content("#poll-countdown")
    assert countdown in ("1:30", "1:29", "1:28"), countdown

    for chatter, choice in [("a", 2), ("b", 2), ("c", 2), ("d", 1)]:
        ctx.control.polls.vote(chatter, choice)
    overlay.page.wait_for_function("() => document.querySelectorAll('.poll-option')[1].dataset.votes === '3'")
    overlay.page.wait_for_timeout(700)  # the bar's width transition
    widths = overlay.page.eval_on_selector_all(
        ".poll-bar-fill", "els => els.map(e => e.getBoundingClientRect().width / e.parentElement.getBoundingClientRect().width)")
    assert widths[1] == pytest.approx(0.75, abs=0.02) and widths[0] == pytest.approx(0.25, abs=0.02)
    assert widths[2] == 0
    assert overlay.page.text_content(".poll-footer") == "4 votes"
    overlay.shot("overlay-poll", transparent=True)
    page.wait_for_function("() => document.querySelectorAll('#poll-current .poll-option').length === 3")
    dash.shot("dashboard-poll")

    page.click("#poll-end")
    overlay.page.wait_for_function("() => document.querySelector('.poll-footer').textContent === 'Winner: pixel art'")
    assert overlay.page.text_content("#poll-countdown") == "ended"
    assert ctx.bus.current().text == "pixel art"
    dash.close()
    overlay.close()


def test_chat_text_is_shown_literally_and_runs_nothing(browser, app):
    ctx, url = app
    ctx.bus.set(XSS, source="twitch", author="<b>mallory</b>")  # trusted path: skips moderation on purpose
    ctx.control.approvals.submit(XSS, source="twitch", author="<script>alert(2)</script>", model_text="x")
    ctx.control.approvals.submit("a quiet forest at dawn", source="twitch", author="viewer2", model_text="x")
    overlay = Watched(browser, f"{url}/overlay")
    page = overlay.page
    page.wait_for_function(f"() => document.getElementById('prompt-text')?.textContent === {XSS!r}")
    page.wait_for_function("() => document.querySelectorAll('.queue-item').length === 2")
    assert page.text_content("#queue-count") == "2 requests"  # a waiting request's text is not on stream
    assert XSS not in page.text_content("#queue-widget") and "quiet forest" not in page.text_content("body")
    assert page.text_content(".queue-author") == "<script>alert(2)</script>"
    assert page.text_content("#prompt-by") == "by <b>mallory</b> (twitch)"
    assert page.eval_on_selector_all("body img, body b, body script:not([src])", "els => els.length") == 0
    dash = Watched(browser, f"{url}/#token={TOKEN}", (1280, 1400))
    dash.page.wait_for_function("() => document.querySelectorAll('#approvals .approval').length === 2")
    assert dash.page.text_content("#current-prompt") == XSS
    assert dash.page.text_content("#approvals .approval-text") == XSS
    assert dash.page.eval_on_selector_all("main img:not(#preview), main b, main script", "els => els.length") == 0
    dash.page.click("#approvals .approval:nth-child(2) .approve")  # approve the harmless one from the page
    wait_for(lambda: ctx.bus.current().text == "a quiet forest at dawn", what="the approval")
    page.wait_for_timeout(1500)  # give any injected handler every chance to fire
    page.wait_for_function("() => document.querySelectorAll('.queue-item').length === 1")
    overlay.shot("overlay-combined", transparent=True)
    # transparent where there is no card: OBS composites the page over the video
    corner = page.evaluate("""() => getComputedStyle(document.body).backgroundColor""")
    assert corner in ("rgba(0, 0, 0, 0)", "transparent")
    dash.close()
    overlay.close()


def test_dashboard_without_the_token_is_refused(browser, app):
    ctx, url = app
    dash = Watched(browser, f"{url}/", (1280, 900))
    page = dash.page
    page.wait_for_selector("#conn.ok")
    assert page.is_visible("#token-form")
    before = ctx.bus.current()
    page.click("#kill")
    page.wait_for_function("() => document.getElementById('control-result').textContent.includes('refused (401)')")
    page.fill("#prompt-input", "a sneaky prompt")
    page.click("#prompt-submit")
    page.wait_for_function("() => document.getElementById('prompt-result').textContent.includes('refused (401)')")
    # a page from another origin cannot drive it even knowing the routes: its request carries no token
    # and a foreign Origin; fetch from here with a forged header is refused too
    status = page.evaluate("""async () => (await fetch('/api/kill', {method: 'POST',
        headers: {'Content-Type': 'application/json', 'X-Streamer-Token': 'guess'}, body: '{}'})).status""")
    assert status == 403
    assert ctx.bus.current() == before
    dash.shot("dashboard-no-token")
    dash.expect_refusal(401)
    dash.expect_refusal(403)
    page.fill("#token-input", TOKEN)
    page.click("#token-entry button")
    page.click("#kill")
    wait_for(lambda: not ctx.bus.current().enabled, what="the kill switch with the token")
    dash.close()


def test_queue_and_output_preview_pages(browser, app):
    ctx, url = app
    ctx.control.approvals.submit("a paper-cut diorama", source="twitch", author="viewer3", model_text="x")
    queue = Watched(browser, f"{url}/overlays/queue.html", (720, 300))
    queue.page.wait_for_function("() => document.querySelectorAll('.queue-item').length === 1")
    assert queue.page.text_content(".queue-author") == "viewer3"
    ctx.control.approvals.deny(1, by="a mod")  # decided elsewhere (chat): the overlay drops it
    queue.page.wait_for_function("() => document.querySelector('.queue-card').classList.contains('hidden')")
    ctx.control.approvals.submit("a mossy stone bridge", source="twitch", author="viewer4", model_text="x")
    queue.page.wait_for_function("() => document.querySelector('.queue-author')?.textContent === 'viewer4'")
    assert "mossy" not in queue.page.text_content("body")  # names only until a moderator approves
    queue.shot("overlay-queue", transparent=True)
    queue.close()

    preview = Watched(browser, f"{url}/overlays/preview.html", (640, 480))
    preview.page.wait_for_function("() => document.getElementById('output').naturalWidth === 64")
    preview.page.wait_for_timeout(300)
    # the red/blue test picture, scaled to fill the page: sample both halves from a screenshot
    png = preview.shot("overlay-preview")
    import av

    with av.open(str(png)) as container:
        pixels = next(container.decode(video=0)).to_ndarray(format="rgb24")
    h, w = pixels.shape[:2]
    left, right = pixels[h // 2, w // 4], pixels[h // 2, 3 * w // 4]
    assert left[0] > 180 and left[2] < 80 and right[2] > 180 and right[0] < 80, (left, right)
    preview.close()


# ---------------------------------------------------------------- broadcast safety (issue 15)

HIDDEN = r"/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/"
TRICK = "a \u202eedun figure"  # paints as a blocked word, though its letters read "edun"


@pytest.fixture
def approval_app(tmp_path, request) -> Iterator[tuple[Any, str]]:
    shown = getattr(request, "param", "names")
    ctx = make_ctx(tmp_path, {"moderation": {"mode": "approval", "min_change_interval_s": 0.0},
                              "dashboard": {"overlay_queue": shown}})
    ctx.pipeline.start()
    try:
        with running_dashboard(ctx) as url:
            yield ctx, url
    finally:
        ctx.pipeline.stop()
        ctx.store.close()


def painted(page: Any) -> str:
    """Everything the page renders as text (innerText) and holds as text (textContent)."""
    return page.evaluate("() => document.body.innerText + '\\n' + document.body.textContent")


@pytest.mark.parametrize("approval_app", ["names", "count", "off"], indirect=True)
def test_waiting_requests_show_as_names_or_a_count_and_their_text_only_once_approved(browser, approval_app):
    ctx, url = approval_app
    shown = ctx.settings.dashboard.overlay_queue
    governor, approvals = ctx.control.governor, ctx.control.approvals
    assert governor.propose("\u202eedun", source="twitch", author="troll").status == "rejected"
    ok = governor.propose("a quiet\u200b forest\u2060 at dawn\u00ad", source="twitch", author="viewer5")
    assert ok.status == "queued"
    # as a queue written before this check existed could hold it: around the governor
    bad = approvals.submit(TRICK, source="twitch", author="viewer6", model_text=TRICK)
    overlay = Watched(browser, f"{url}/overlay")
    page = overlay.page
    page.wait_for_function("() => document.getElementById('prompt-text')?.textContent === 'a watercolour painting'")
    if shown == "off":
        page.wait_for_timeout(800)  # two pushes: the card must stay hidden
        assert page.is_hidden(".queue-card")
    else:
        page.wait_for_function("() => document.getElementById('queue-count')?.textContent === '2 requests'")
        authors = page.eval_on_selector_all(".queue-author", "els => els.map(e => e.textContent)")
        assert authors == (["viewer5", "viewer6"] if shown == "names" else [])
    text = painted(page)
    for word in ("edun", "nude", "figure", "quiet", "forest"):
        assert word not in text.lower(), (shown, word)
    assert not page.evaluate(f"() => {HIDDEN}.test(document.body.textContent)")

    dash = Watched(browser, f"{url}/#token={TOKEN}", (1280, 1400))
    dpage = dash.page
    dpage.wait_for_function("() => document.querySelectorAll('#approvals .approval').length === 2")
    texts = dpage.eval_on_selector_all("#approvals .approval-text", "els => els.map(e => e.textContent)")
    assert texts == ["a quiet forest at dawn", "a edun figure"]  # the moderator's view: no hidden characters
    with dpage.expect_response(lambda r: r.url.endswith(f"/api/approvals/{bad}/approve")) as answer:
        dpage.click(f"#approvals .approval[data-id='{bad}'] .approve")
    assert answer.value.status == 422 and answer.value.json()["status"] == "denied"
    dpage.wait_for_function("() => document.querySelectorAll('#approvals .approval').length === 1")
    item = approvals.get(bad)
    assert item.status == "denied" and item.reason == "blocked: sexual content"  # refused, never "approved"
    dash.expect_refusal(422)
    dpage.click(f"#approvals .approval[data-id='{ok.id}'] .approve")
    page.wait_for_function("() => document.getElementById('prompt-text').textContent === 'a quiet forest at dawn'")
    assert page.text_content("#prompt-by") == "by viewer5 (twitch)"
    page.wait_for_function("() => document.querySelector('.queue-card').classList.contains('hidden')")
    text = painted(page)
    assert "edun" not in text and "figure" not in text
    assert not page.evaluate(f"() => {HIDDEN}.test(document.body.textContent)")
    page.wait_for_timeout(900)  # let the transition finish before the picture
    overlay.shot(f"overlay-queue-{shown}", transparent=True)
    dash.close()
    overlay.close()


def test_long_text_stays_inside_its_box(browser, app):
    ctx, url = app
    ctx.bus.set("a very long prompt about " + "castles and dragons " * 40, source="console", author="streamer")
    ctx.control.approvals.submit("a cat", source="twitch", author="w" * 60, model_text="a cat")
    overlay = Watched(browser, f"{url}/overlay", (1280, 720))
    page = overlay.page
    page.wait_for_function("() => document.getElementById('prompt-text')?.textContent.startsWith('a very long')")
    shown = page.text_content("#prompt-text")
    assert len(shown) == 200 and shown.endswith("…")  # moderation.max_length (+ the template) at most
    box = page.evaluate("""() => { const e = document.getElementById('prompt-text');
        return {height: e.getBoundingClientRect().height, line: parseFloat(getComputedStyle(e).lineHeight),
                scroll: e.scrollHeight, client: e.clientHeight}; }""")
    assert box["height"] <= 3 * box["line"] + 1, box  # three lines, the rest cut
    page.wait_for_function("() => document.querySelectorAll('.queue-item').length === 1")
    assert page.text_content(".queue-author") == "w" * 24 + "…"  # names: 25 characters
    item = page.evaluate("""() => { const e = document.querySelector('.queue-item');
        return {right: e.getBoundingClientRect().right, card: document.querySelector('.queue-card').getBoundingClientRect().right}; }""")
    assert item["right"] <= item["card"], item
    overlay.shot("overlay-long-text", transparent=True)
    overlay.close()
