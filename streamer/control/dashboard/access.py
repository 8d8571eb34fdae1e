"""Who may use the dashboard: the Host check, the token and sign-in sessions, and cross-site refusals.

- Host: a request must name this machine. With `dashboard.host` a single address, that is the
  loopback names, the address and `allowed_hosts`. Bound to every interface (`0.0.0.0` / `::`), the
  machine's own names and whichever of its addresses the connection arrived at are accepted too, and
  nothing else: a DNS-rebinding page (a hostile name resolving to this machine) names itself in Host.
- Token: every state-changing request carries a credential in a header, never a cookie: the
  long-lived token (STREAMER_DASHBOARD_TOKEN, or generated per run) or a session token the page got by
  exchanging a one-time sign-in code (`SignIn`). The printed link carries only that code, so the
  long-lived token never sits in a URL or in the browser's history; a code is spent on first use.
- Cross-site: a preview image asked for by another site's page (`<img src=.../preview.mjpeg>`) is
  refused, so no web page can take the preview slots the dashboard and OBS use.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

TOKEN_HEADER = "X-Streamer-Token"
SESSION_PATH = "/api/session"  # trades a sign-in code (or the token) for a session token
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})
# A printed sign-in link works once. Unused, it only sits in the terminal (beside the token itself, when
# that was generated), so the expiry is for hygiene and generous: the streamer may open it hours later.
CODE_TTL_S = 12 * 3600.0
MAX_SESSIONS = 32  # signed-in tabs remembered; the oldest is forgotten first


def host_name(host_header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1'."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is not part of the address
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # a dual-stack socket's IPv4 peer
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class HostPolicy:
    """Host names a request may name; `own_addresses`: also the machine's address the request came in on."""

    names: frozenset[str]
    own_addresses: bool = False

    def allows(self, request: web.Request) -> bool:
        host = host_name(request.host).lower()
        if host in self.names:
            return True
        if not self.own_addresses:
            return False
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local = _address(str(sockname[0])) if isinstance(sockname, tuple) and sockname else None
        return local is not None and _address(host) == local


def allowed_hosts(bind_host: str, extra: tuple[str, ...] = ()) -> HostPolicy:
    """The Host check for a server bound to `bind_host` with `dashboard.allowed_hosts` = `extra`."""
    names = set(LOOPBACK_NAMES) | {h.lower() for h in extra}
    if bind_host not in ALL_INTERFACES:
        names.add(bind_host.lower())
        return HostPolicy(frozenset(names))
    machine = socket.gethostname().lower()
    names |= {machine, f"{machine}.local"}  # its own name, and the mDNS one LAN browsers use
    return HostPolicy(frozenset(names), own_addresses=True)


def cross_site(request: web.Request) -> str:
    """Why this request comes from another site's page ('' when it does not).

    Browsers send Sec-Fetch-Site to loopback and https servers: only `same-origin` (our own pages,
    OBS's browser source showing them) and `none` (an address typed or opened directly) are ours.
    Elsewhere (plain http on a LAN address) the Origin and Referer are all there is to go on. A client
    that sends none of them is not a browser driven by a web page, and is let through.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site[:20]}"
    own = f"{request.scheme}://{request.host}"
    origin = request.headers.get("Origin")
    if origin is not None and origin != own:
        return "another site's Origin"
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}" != own:
            return "another site's Referer"
    return ""


def _same(sent: str, secret: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8", "replace"), secret.encode("utf-8"))


class SignIn:
    """The long-lived token, one-time sign-in codes and the session tokens handed out for them.

    Kept by the dashboard component across restarts of its web app, so a printed link stays valid.
    """

    def __init__(self, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.token = token
        self._clock = clock
        self._codes: dict[str, float] = {}  # code -> monotonic expiry
        self._sessions: OrderedDict[str, None] = OrderedDict()

    def new_code(self) -> str:
        now = self._clock()
        self._codes = {c: t for c, t in self._codes.items() if t > now}
        code = secrets.token_urlsafe(18)
        self._codes[code] = now + CODE_TTL_S
        return code

    def redeem(self, sent: str) -> bool:
        """True once for a code that was issued and has not expired; it is spent either way."""
        now = self._clock()
        for code, expires in list(self._codes.items()):
            if _same(sent, code):
                del self._codes[code]
                return expires > now
        return False

    def new_session(self) -> str:
        session = secrets.token_urlsafe(24)
        self._sessions[session] = None
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def check(self, sent: str) -> bool:
        """The long-lived token or a live session token (compared in constant time)."""
        ok = _same(sent, self.token)
        for session in self._sessions:
            ok |= _same(sent, session)
        return ok


def sent_credential(request: web.Request) -> str:
    """The credential in X-Streamer-Token or `Authorization: Bearer`, '' when none."""
    sent = request.headers.get(TOKEN_HEADER, "")
    auth = request.headers.get("Authorization", "")
    if not sent and auth.lower().startswith("bearer "):
        sent = auth[7:].strip()
    return sent
