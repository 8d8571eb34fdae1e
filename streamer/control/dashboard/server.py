"""The streamer's dashboard and the OBS overlays: one aiohttp app on loopback.

Security model (the dashboard can stop the model, approve chat text and run polls, so any web page
the streamer visits must not be able to drive it; access.py has the parts):
- every state-changing request (anything but GET/HEAD) needs a credential in a header
  (`X-Streamer-Token` or `Authorization: Bearer`), never a cookie, so a cross-site form or image
  cannot carry it; GET never changes state; POST bodies must be JSON (no "simple" cross-site POST);
- a POST with a foreign Origin (or `Sec-Fetch-Site: cross-site`) is refused even with a token;
- the Host header must name this machine, which defeats DNS rebinding (a hostile name resolving to
  127.0.0.1 would otherwise be same-origin with us), also when bound to every interface;
- the preview is refused to other sites' pages, and capped per client (preview.py);
- a strict CSP on every response (`default-src 'self'`, scripts only from files), `nosniff`, and
  `frame-ancestors 'none'` for the dashboard; overlays may be embedded (OBS browser sources).
The token comes from STREAMER_DASHBOARD_TOKEN, or is generated at start. What is printed at start is
a one-time sign-in link (`#code=`, in the fragment, which browsers never send to servers): the page
trades the code for a session token, so the long-lived token never sits in a URL or browser history.
"""

from __future__ import annotations

import logging
import secrets
import socket
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from streamer.config import SECRET_ENV, secret
from streamer.control.dashboard.access import (
    CODE_TTL_S,
    SESSION_PATH,
    TOKEN_HEADER,
    HostPolicy,
    SignIn,
    allowed_hosts,
    cross_site,
    is_loopback,
    sent_credential,
)
from streamer.control.dashboard.api import DashboardApi, _optional_json_body
from streamer.control.dashboard.blocklist_api import BlocklistApi
from streamer.control.dashboard.live import LiveHub
from streamer.control.dashboard.preview import PreviewFeed

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD"})
ASSET_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# blob: images are the preview's pictures, which overlays/preview.js reads out of the MJPEG stream itself
_CSP_COMMON = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"
)
DASHBOARD_CSP = _CSP_COMMON + "; frame-ancestors 'none'"
OVERLAY_CSP = _CSP_COMMON  # OBS browser sources (and a streamer's own pages) may embed overlays
PREVIEW_PATHS = frozenset({"/preview.jpg", "/preview.mjpeg"})

SIGN_IN_KEY = web.AppKey("sign_in", SignIn)
HUB_KEY = web.AppKey("hub", LiveHub)
PREVIEW_KEY = web.AppKey("preview", PreviewFeed)


def resolve_token() -> tuple[str, bool]:
    """(token, generated): from STREAMER_DASHBOARD_TOKEN, or a fresh random one."""
    token = secret("dashboard_token")
    if token:
        return token, False
    return secrets.token_urlsafe(24), True


def _security_middleware(hosts: HostPolicy) -> Any:
    @web.middleware
    async def security(request: web.Request, handler: Any) -> web.StreamResponse:
        if not hosts.allows(request):
            raise web.HTTPForbidden(text="unexpected Host header (add it to dashboard.allowed_hosts)")
        origin = request.headers.get("Origin")
        foreign = origin is not None and origin != f"{request.scheme}://{request.host}"
        if foreign and request.path == "/ws":  # another site's page must not read the live feed either
            raise web.HTTPForbidden(text="cross-origin WebSocket refused")
        if request.path in PREVIEW_PATHS and (why := cross_site(request)):
            raise web.HTTPForbidden(text=f"the preview is not shown to other sites' pages ({why})")
        if request.method not in SAFE_METHODS:
            if foreign:
                raise web.HTTPForbidden(text="cross-origin request refused")
            if request.headers.get("Sec-Fetch-Site") == "cross-site":
                raise web.HTTPForbidden(text="cross-site request refused")
            sent = sent_credential(request)
            if not sent:
                raise web.HTTPUnauthorized(
                    text=f"send the dashboard token in the {TOKEN_HEADER} header",
                    headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
                )
            sign_in = request.app[SIGN_IN_KEY]
            # a sign-in code is good for one thing only: being traded for a session token, once
            if not (sign_in.check(sent) or (request.path == SESSION_PATH and sign_in.redeem(sent))):
                raise web.HTTPForbidden(text="wrong dashboard token, or a sign-in link already used or expired")
        return await handler(request)

    return security


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, errors and WebSocket upgrades included."""
    overlay = request.path.startswith("/overlays/")
    response.headers["Content-Security-Policy"] = OVERLAY_CSP if overlay else DASHBOARD_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if not overlay:
        response.headers["X-Frame-Options"] = "DENY"
    if request.path.startswith("/api/") or request.path in ("/metrics", "/healthz"):
        response.headers["Cache-Control"] = "no-store"


def _file_table(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, content type) for the servable files of one folder: a fixed allowlist, so no
    request path can ever reach outside it."""
    table = {}
    for path in sorted(folder.iterdir()):
        ctype = ASSET_TYPES.get(path.suffix)
        if ctype and path.is_file():
            table[path.name] = (path, ctype)
    return table


def overlays_dir() -> Path:
    return Path(str(resources.files("streamer_overlays")))


def assets_dir() -> Path:
    return Path(str(resources.files("streamer") / "assets"))


def _file_response(table: dict[str, tuple[Path, str]], name: str) -> web.Response:
    entry = table.get(name)
    if entry is None:
        raise web.HTTPNotFound()
    path, ctype = entry
    return web.Response(body=path.read_bytes(), content_type=ctype, charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


def make_app(ctx: Any, token: str, sign_in: SignIn | None = None) -> web.Application:
    """The aiohttp app for one AppContext (settings, bus, store, metrics, pipeline, control).

    `sign_in` holds the sign-in codes and sessions (the component keeps one across app restarts)."""
    ds = ctx.settings.dashboard
    app = web.Application(
        middlewares=[_security_middleware(allowed_hosts(ds.host, ds.allowed_hosts))],
        client_max_size=64 * 1024,
    )
    app[SIGN_IN_KEY] = sign_in if sign_in is not None else SignIn(token)
    api = DashboardApi(ctx)
    hub = LiveHub(api.state, api.metrics_view, metrics_interval=ds.metrics_interval_s)
    api.on_change = hub.notify
    api.subscribe(hub.notify)
    preview = PreviewFeed(ctx.pipeline.latest_output, fps=ds.preview_fps, quality=ds.preview_quality,
                          max_width=ds.preview_max_width)
    app[HUB_KEY] = hub
    app[PREVIEW_KEY] = preview
    app.on_response_prepare.append(_security_headers)

    async def closing(app: web.Application) -> None:
        preview.closing.set()
        await hub.close()

    app.on_shutdown.append(closing)

    assets = _file_table(assets_dir())
    overlays = _file_table(overlays_dir())

    async def index(request: web.Request) -> web.Response:
        return _file_response(assets, "dashboard.html")

    async def serve_asset(request: web.Request) -> web.Response:
        return _file_response(assets, request.match_info["name"])

    async def serve_overlay(request: web.Request) -> web.Response:
        return _file_response(overlays, request.match_info["name"])

    async def overlay(request: web.Request) -> web.Response:
        raise web.HTTPFound("/overlays/overlay.html")  # the combined overlay, for one OBS browser source

    async def start_session(request: web.Request) -> web.Response:
        """The middleware let a sign-in code (spent now) or a token through: hand this tab its own token."""
        await _optional_json_body(request)
        return web.json_response({"status": "signed in", "token": request.app[SIGN_IN_KEY].new_session()})

    app.router.add_get("/", index)
    app.router.add_get("/overlay", overlay)
    app.router.add_get("/assets/{name}", serve_asset)
    app.router.add_get("/overlays/{name}", serve_overlay)
    app.router.add_get("/ws", hub.handle_ws)
    app.router.add_get("/preview.jpg", preview.handle_jpeg)
    app.router.add_get("/preview.mjpeg", preview.handle_mjpeg)
    app.router.add_post(SESSION_PATH, start_session)
    app.add_routes(api.routes())
    app.add_routes(BlocklistApi(ctx, hub.notify).routes())
    return app


class Dashboard:
    """Component: serves the dashboard, overlays and live pushes until cancelled."""

    name = "dashboard"

    def __init__(self, ctx: Any, token: str, generated: bool) -> None:
        self.ctx = ctx
        self.token = token
        self.generated = generated
        self.sign_in = SignIn(token)
        self.url = ""
        self.started: Any = None  # optional asyncio.Event set once listening (tests)
        self._announced = False

    async def run(self) -> None:
        ds = self.ctx.settings.dashboard
        app = make_app(self.ctx, self.token, self.sign_in)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, ds.host, ds.port)
            try:
                await site.start()
            except OSError as e:
                raise RuntimeError(
                    f"dashboard cannot listen on {ds.host}:{ds.port}: {e.strerror or e}; "
                    "set [dashboard] port to a free port or stop the other program"
                ) from None
            host, port = runner.addresses[0][:2]
            shown = f"[{host}]" if ":" in host else host
            self.url = f"http://{shown}:{port}/"
            self._announce(ds.host)
            if self.started is not None:
                self.started.set()
            await app[HUB_KEY].run()
        finally:
            await runner.cleanup()

    def _announce(self, bind_host: str) -> None:
        if not is_loopback(bind_host):
            log.warning("dashboard listens on %s, reachable from other machines: keep the token secret", bind_host)
        log.info("dashboard: %s  OBS browser sources: %soverlay (prompt, poll, queue), %soverlays/preview.html (output)",
                 self.url, self.url, self.url)
        if not self._announced:
            # Deliberately print(), not logging: neither the code nor the token may reach a log. The link
            # carries a one-time code in the fragment (never sent to a server), not the token, so the
            # browser's history keeps nothing that still works once the page has signed in.
            print(f"dashboard sign-in link (works once, within {CODE_TTL_S / 3600:.0f} hours): "
                  f"{self.url}#code={self.sign_in.new_code()}", file=sys.stderr, flush=True)
            if self.generated:  # the one place it is shown: for scripts, or to paste into the page later
                print(f"dashboard token for scripts (generated for this run; set {SECRET_ENV['dashboard_token']} "
                      f"to fix it): {self.token}", file=sys.stderr, flush=True)
        self._announced = True


def doctor_checks(settings: Any) -> Iterable[Any]:
    """`streamer doctor` provider: address, token source, port, shipped pages."""
    from streamer.doctor import Check

    ds = settings.dashboard
    if not ds.enabled:
        yield Check("dashboard", "OK", "disabled ([dashboard] enabled = false)")
        return
    where = f"http://{ds.host}:{ds.port}/"
    if is_loopback(ds.host):
        yield Check("dashboard address", "OK", f"{where} (this machine only)")
    else:
        yield Check("dashboard address", "WARN", f"{where} is reachable from other machines",
                    "set [dashboard] host = \"127.0.0.1\" unless you need it on the network")
    env = SECRET_ENV["dashboard_token"]
    yield Check("dashboard token", "OK", f"from {env}" if secret("dashboard_token") else
                f"generated at each start and printed once ({env} unset)")
    try:
        with socket.socket(socket.AF_INET6 if ":" in ds.host else socket.AF_INET) as probe:
            probe.bind((ds.host, ds.port))
        yield Check("dashboard port", "OK", f"{ds.port} is free")
    except OSError as e:
        yield Check("dashboard port", "WARN", f"cannot bind {ds.host}:{ds.port}: {e.strerror or e} "
                    "(fine if the daemon is running now)", "pick a free [dashboard] port")
    missing = [n for n in ("dashboard.html", "dashboard.js") if n not in _file_table(assets_dir())]
    missing += [n for n in ("overlay.html", "overlay.js", "live.js") if n not in _file_table(overlays_dir())]
    yield Check("dashboard pages", "FAIL" if missing else "OK",
                f"missing: {', '.join(missing)}" if missing else "dashboard and overlays installed",
                "reinstall the package (overlays/ and streamer/assets/ are package data)")


def build(ctx: Any) -> Dashboard | None:
    if not ctx.settings.dashboard.enabled:
        return None
    token, generated = resolve_token()
    return Dashboard(ctx, token, generated)
