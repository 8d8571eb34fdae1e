"""One blocking obs-websocket v5 session (obsws-python), with errors a streamer can act on.

obsws-python is blocking, not thread-safe per client, never reconnects and logs the password at
INFO, so: its logger is silenced here, every request goes through one lock, and callers decide
when to reconnect (see `streamer.control.obs.controller`). A session is a request client plus, optionally,
an event client whose reader thread is watched for liveness (it stops silently when OBS goes away).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from streamer.config import ObsSettings, secret

log = logging.getLogger(__name__)

# obs-websocket request status codes we branch on (obs-websocket 5.x protocol.md, RequestStatus)
RESOURCE_NOT_FOUND = 600
RESOURCE_ALREADY_EXISTS = 601


def silence_obsws_logging() -> None:
    """obsws-python logs `password='...'` at INFO and tracebacks for every failed request: we report errors ourselves."""
    logging.getLogger("obsws_python").setLevel(logging.CRITICAL + 1)


class ObsError(RuntimeError):
    """OBS could not be reached or refused a request; the message says what to do."""


class ObsAuthError(ObsError):
    """OBS refused the password (or none was given while OBS requires one)."""


class ObsRequestError(ObsError):
    """A request failed inside OBS (e.g. code 600: no such source)."""

    def __init__(self, request: str, code: int, comment: str) -> None:
        super().__init__(f"OBS request {request} failed (code {code}): {comment}")
        self.request = request
        self.code = code


def _where(settings: ObsSettings) -> str:
    return f"ws://{settings.host}:{settings.port}"


class ObsSession:
    """A connected, authenticated request client (+ optional event client). Thread-safe requests.

    `on_event(event_type, data)` runs on obsws-python's reader thread: keep it short.
    """

    def __init__(
        self,
        settings: ObsSettings,
        password: str | None = None,
        *,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        event_subs: int | None = None,
    ) -> None:
        silence_obsws_logging()
        import obsws_python  # the `obs` extra; imported late so the daemon runs without it
        from obsws_python.error import OBSSDKError

        self.settings = settings
        self._lock = threading.Lock()
        self._events: Any = None
        password = password if password is not None else (secret("obs_password") or "")
        try:
            # host is always passed: otherwise obsws-python reads a config.toml from the cwd or $HOME.
            self._req = obsws_python.ReqClient(
                host=settings.host, port=settings.port, password=password, timeout=settings.connect_timeout_s
            )
            if on_event is not None:
                self._events = obsws_python.EventClient(
                    host=settings.host,
                    port=settings.port,
                    password=password,
                    timeout=settings.connect_timeout_s,
                    subs=event_subs if event_subs is not None else int(obsws_python.Subs.LOW_VOLUME),
                )
                self._events.callback.trigger = on_event  # one generic handler instead of on_<name> methods
        except OBSSDKError as e:
            if "password" in str(e) or "identify" in str(e):
                hint = ("OBS requires a password: set OBS_WEBSOCKET_PASSWORD" if not password
                        else "the password in OBS_WEBSOCKET_PASSWORD was refused")
                raise ObsAuthError(
                    f"{_where(settings)}: authentication failed: {hint} "
                    "(OBS: Tools > WebSocket Server Settings > Show Connect Info)"
                ) from None
            raise ObsError(f"{_where(settings)}: {e}") from None
        except (OSError, TimeoutError) as e:
            raise ObsError(
                f"{_where(settings)}: cannot connect ({type(e).__name__}: {e}); is OBS running with "
                "Tools > WebSocket Server Settings > Enable WebSocket server on this port?"
            ) from None
        except Exception as e:  # websocket-client's own exceptions (handshake, closed socket)
            raise ObsError(f"{_where(settings)}: cannot connect ({type(e).__name__}: {e})") from None

    def request(self, name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; returns its responseData ({} when there is none). Raises ObsError."""
        from obsws_python.error import OBSSDKRequestError

        with self._lock:
            try:
                return self._req.send(name, data, raw=True) or {}
            except OBSSDKRequestError as e:
                comment = str(e).split("With message: ", 1)[-1]
                raise ObsRequestError(name, e.code, comment) from None
            except Exception as e:  # closed socket, timeout: the session is dead
                raise ObsError(f"{_where(self.settings)}: {name} failed: {type(e).__name__}: {e}") from None

    def events_alive(self) -> bool:
        """False once the event reader thread has stopped (OBS closed the socket or exited)."""
        return self._events is None or self._events.worker.is_alive()

    def close(self) -> None:
        for client in (self._req, self._events):
            if client is None:
                continue
            try:
                client.base_client.ws.close()
            except Exception:  # already closed by the peer
                pass
        if self._events is not None:
            self._events.worker.join(timeout=2.0)


def connect(settings: ObsSettings, password: str | None = None) -> ObsSession:
    """A request-only session (for `streamer obs setup` and `streamer doctor`)."""
    return ObsSession(settings, password)
