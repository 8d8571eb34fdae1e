"""The dashboard's JSON API: read the live state, and the token-checked controls.

Every control goes through the same paths as chat: a prompt typed here is proposed to the
governor (moderation, cooldown, approval mode) with source "dashboard"; the kill switch, strength,
approvals and polls call the control plane. When the control plane is unavailable (it failed to
import) the PromptBus is used directly, still moderated when a moderator is set.
The auth, Origin and CSP checks live in dashboard.py's middleware, not here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from streamer.config import effective_strength
from streamer.control.dashboard.queue_view import moderator_queue, public_queue, shown_prompt
from streamer.control.policy.approvals import REFUSED_BY

log = logging.getLogger(__name__)

BY = "dashboard"  # who the audit log names for actions taken here
RESULT_SHOWN_S = 15.0  # how long a finished poll's result stays on the overlays
MAX_PROMPT_CHARS = 2000  # hard cap before moderation (which applies its own, smaller one)


def _plain(obj: Any) -> Any:
    """A JSON-friendly copy of a dataclass / object / container."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


MAX_JSON_DEPTH = 32  # the deepest body any route takes is 3 levels; deeper is garbage, not a request
MAX_INT_DIGITS = 19  # every id, count and setting here is far below 10**19; longer integers are refused unparsed


class _BodyError(ValueError):
    """A body that is JSON but not one this API takes; the message is the answer."""


def refusal(status: type[web.HTTPException], reason: str, **kwargs: Any) -> web.HTTPException:
    """A 4xx whose body is one line of JSON: {"status": "refused", "reason": ...} (the dashboard page
    shows `reason`; scripts get the same shape as a refused prompt)."""
    body = json.dumps({"status": "refused", "reason": reason}, ensure_ascii=True)
    return status(text=body, content_type="application/json", **kwargs)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _BodyError(f"a number in the body has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise _BodyError(f"a number in the body is out of range: {text[:30]}")
    return value


def _parse_constant(name: str) -> Any:
    raise _BodyError(f"{name} is not JSON")  # Python's json would accept NaN and Infinity


def _check_tree(body: Any) -> None:
    """Depth and strings of a parsed body, without recursion: a lone UTF-16 surrogate ("\\ud800") is
    valid JSON but no valid text, and SQLite refuses to store it."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _BodyError(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _BodyError("a string in the body holds a lone UTF-16 surrogate") from None
        elif isinstance(value, dict):
            stack.extend((v, depth + 1) for v in (*value.keys(), *value.values()))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or a 4xx naming what is wrong with it."""
    # Only JSON: a cross-site <form> can only send urlencoded/multipart/text, so this is one more CSRF wall.
    if request.content_type != "application/json":
        raise refusal(web.HTTPUnsupportedMediaType, "send a JSON body with Content-Type: application/json")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):  # JSON is UTF-8 (RFC 8259 §8.1); any other name is refused, not looked up
        raise refusal(web.HTTPUnsupportedMediaType, f"JSON bodies are UTF-8, not charset={charset[:40]}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise refusal(web.HTTPRequestEntityTooLarge, f"the body is larger than {limit} bytes",
                      max_size=limit, actual_size=request.content_length or limit + 1) from None
    try:
        body = json.loads(raw.decode("utf-8"), parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
        _check_tree(body)
    except RecursionError:  # the C scanner recurses once per level; a 64 KiB body can nest far deeper than it allows
        raise refusal(web.HTTPBadRequest, f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except _BodyError as e:
        raise refusal(web.HTTPBadRequest, str(e)) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise refusal(web.HTTPBadRequest, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise refusal(web.HTTPBadRequest, "the JSON body must be an object")
    return body


async def _optional_json_body(request: web.Request) -> dict[str, Any]:
    """For controls that need no fields: no body at all is fine, but one that is sent must be a JSON
    object (a form post or garbage is refused, not ignored)."""
    return await _json_body(request) if request.body_exists else {}


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise refusal(web.HTTPBadRequest, f"'{name}' must be a {want}")
    return value


def _item_id(request: web.Request) -> int:
    """The approval id in the URL: SQLite row ids are 1 .. 2**63-1, so anything else names no request
    (and a longer number would overflow SQLite's integer)."""
    raw = request.match_info["id"]
    if raw.isascii() and raw.isdigit() and len(raw) <= MAX_INT_DIGITS and 0 < int(raw) < 2**63:
        return int(raw)
    raise refusal(web.HTTPNotFound, f"there is no request #{raw[:40]}")


class DashboardApi:
    """Handlers over an AppContext-like object (settings, bus, store, metrics, pipeline, control)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.on_change: Callable[..., None] = lambda *a: None  # set to LiveHub.notify
        self._last_poll: tuple[Any, float] = (None, 0.0)
        polls = getattr(self.control, "polls", None)
        if polls is not None:
            polls.add_listener(self._remember_poll)

    @property
    def control(self) -> Any:
        return getattr(self.ctx, "control", None)

    def subscribe(self, notify: Callable[..., None]) -> None:
        """Register `notify` with every part that can tell us of changes (thread-safe callers)."""
        self.ctx.bus.add_listener(notify)
        c = self.control
        if c is None:
            return
        for part in ("governor", "approvals", "polls"):
            add = getattr(getattr(c, part, None), "add_listener", None)
            if add is not None:
                add(notify)

    # ------------------------------------------------------------------ read side

    def state(self) -> dict[str, Any]:
        """What the pages show: prompt (+ transition), transform, poll, approval queue."""
        p = self.ctx.bus.current()
        m = self.ctx.settings.model
        c = self.control
        return {
            "prompt": shown_prompt(p, c, self.ctx.settings),
            "transition_chunks": m.transition_chunks,
            "model": {"preset": m.preset, "steps": getattr(self.ctx.pipeline, "model_steps", m.steps), "strength": effective_strength(m),
                      "width": m.width, "height": m.height},
            "transform": self.ctx.pipeline.transform_status(),
            "poll": self._poll_view(c),
            "queue": public_queue(c, self.ctx.settings.dashboard.overlay_queue),
            "governor": self._governor_view(c),
        }

    @staticmethod
    def _governor_view(c: Any) -> dict[str, Any] | None:
        if getattr(c, "governor", None) is None:
            return None
        status = _plain(c.governor.status())
        # a countdown would make every push differ from the last: pages would be re-sent the whole
        # state twice a second for nothing
        status.pop("next_change_in_s", None)
        return status  # type: ignore[no-any-return]

    def _poll_view(self, c: Any) -> dict[str, Any] | None:
        """The running poll, else the one that just finished (for RESULT_SHOWN_S, so overlays can show
        the winner). seconds_left is left out: it changes every read, and pages count down from
        ends_at and the message's server_time instead."""
        polls = getattr(c, "polls", None)
        if polls is None:
            return None
        snap = polls.current()
        if snap is None:
            last, at = self._last_poll
            if last is None or last.status == "running" or time.monotonic() - at > RESULT_SHOWN_S:
                return None
            snap = last
        view = snap.view()
        view.pop("seconds_left", None)
        return _plain(view)  # type: ignore[no-any-return]

    def _remember_poll(self, snap: Any) -> None:
        self._last_poll = (snap, time.monotonic())

    def metrics_view(self) -> dict[str, Any]:
        return _plain(self.ctx.metrics.snapshot())  # type: ignore[no-any-return]

    async def get_state(self, request: web.Request) -> web.Response:
        return web.json_response({**self.state(), "metrics": self.metrics_view(), "server_time": time.time()})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.ctx.metrics.prometheus_text(), content_type="text/plain",
                            charset="utf-8", headers={"X-Prometheus-Format": "0.0.4"})

    async def healthz(self, request: web.Request) -> web.Response:
        pipeline = self.ctx.pipeline
        stopped = bool(getattr(pipeline, "stopped", False))
        problem = "the pipeline has stopped" if stopped else pipeline.health_problem()  # e.g. NaN model output
        body = {"ok": problem is None, "transform": pipeline.transform_status(),
                "output": pipeline.latest_output() is not None}
        if problem is not None:
            body["problem"] = problem
        return web.json_response(body, status=200 if problem is None else 503)

    # ------------------------------------------------------------------ controls (token-checked upstream)

    def _changed(self) -> None:
        self.on_change()

    async def set_prompt(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        text = _field(body, "text", str).strip()
        if not text:
            raise refusal(web.HTTPBadRequest, "the prompt is empty")
        if len(text) > MAX_PROMPT_CHARS:
            raise refusal(web.HTTPRequestEntityTooLarge, f"a prompt is at most {MAX_PROMPT_CHARS} characters",
                          max_size=MAX_PROMPT_CHARS, actual_size=len(text))
        governor = getattr(self.control, "governor", None)
        if governor is not None:
            proposal = governor.propose(text, source=BY, author="streamer", meta={})
            result = _plain(proposal)
            accepted = proposal.status != "rejected"
        else:
            verdict = self.ctx.bus.propose(text, source=BY, author="streamer")
            result = {"status": "applied" if verdict.allowed else "rejected", "reason": verdict.reason,
                      "text": verdict.text}
            accepted = verdict.allowed
        self._changed()
        return web.json_response(result, status=200 if accepted else 422)

    async def kill(self, request: web.Request) -> web.Response:
        await _optional_json_body(request)
        return self._enable(False)

    async def revive(self, request: web.Request) -> web.Response:
        await _optional_json_body(request)
        return self._enable(True)

    def _enable(self, on: bool) -> web.Response:
        governor = getattr(self.control, "governor", None)
        if governor is not None:
            (governor.revive if on else governor.kill)(by=BY)
        else:
            self.ctx.bus.set_enabled(on, source=BY, author="streamer", reason="dashboard " + ("on" if on else "off"))
        self._changed()
        return web.json_response({"enabled": self.ctx.bus.current().enabled})

    async def set_strength(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        value = _field(body, "strength", (int, float), required=False)
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise refusal(web.HTTPBadRequest, "strength must be between 0 and 1 (or null for the configured value)")
        value = None if value is None else float(value)
        governor = getattr(self.control, "governor", None)
        if governor is not None:
            try:
                governor.set_strength(value, by=BY)
            except ValueError as e:
                raise refusal(web.HTTPBadRequest, str(e)) from None
        else:
            self.ctx.bus.set_strength(value, source=BY, author="streamer")
        self._changed()
        return web.json_response({"strength": self.ctx.bus.current().strength})

    async def set_steps(self, request: web.Request) -> web.Response:
        """Denoising steps: a new model is built in the background and swapped in when ready."""
        body = await _json_body(request)
        steps = _field(body, "steps", int)
        if isinstance(steps, bool):
            raise refusal(web.HTTPBadRequest, "steps must be an integer")
        try:
            self.ctx.pipeline.set_steps(steps)
        except ValueError as e:
            raise refusal(web.HTTPBadRequest, str(e)) from None
        except RuntimeError as e:
            raise refusal(web.HTTPConflict, str(e)) from None
        self._changed()
        return web.json_response({"steps": steps, "applying": True})

    async def reset(self, request: web.Request) -> web.Response:
        """Forget the model's temporal state (a stuck look, a scene cut)."""
        await _optional_json_body(request)
        self.ctx.pipeline.reset()
        return web.json_response({"reset": True})

    def _decide(self, request: web.Request, decide: Callable[[Any, int], Any]) -> web.Response:
        approvals = getattr(self.control, "approvals", None)
        if approvals is None:
            raise refusal(web.HTTPServiceUnavailable, "the approval queue is not available (no control plane)")
        item_id = _item_id(request)
        if approvals.get(item_id) is None:
            raise refusal(web.HTTPNotFound, f"there is no request #{item_id}")
        try:
            item = decide(approvals, item_id)
        except LookupError as e:  # ApprovalError: already decided (by a mod in chat, say)
            raise refusal(web.HTTPConflict, str(e)) from None
        self._changed()
        # moderation may refuse an approval on its second look: answer what was decided, not what was asked
        refused = item.status == "denied" and item.decided_by == REFUSED_BY
        return web.json_response({"ok": not refused, "id": item.id, "status": item.status, "reason": item.reason},
                                 status=422 if refused else 200)

    async def approvals_list(self, request: web.Request) -> web.Response:
        """The waiting requests with their text, for the dashboard (a POST, so only with the token: the
        live state that overlays read has numbers and names only)."""
        await _optional_json_body(request)
        return web.json_response({"items": moderator_queue(self.control, self.ctx.settings)})

    async def approve(self, request: web.Request) -> web.Response:
        await _optional_json_body(request)  # no fields, but garbage in the body is refused, not ignored
        return self._decide(request, lambda a, item_id: a.approve(item_id, by=BY))

    async def deny(self, request: web.Request) -> web.Response:
        body = await _optional_json_body(request)
        reason = (_field(body, "reason", str, required=False) or "denied on the dashboard")[:200]
        return self._decide(request, lambda a, item_id: a.deny(item_id, by=BY, reason=reason))

    def _polls(self) -> Any:
        polls = getattr(self.control, "polls", None)
        if polls is None:
            raise refusal(web.HTTPServiceUnavailable, "polls are not available (no control plane)")
        return polls

    async def poll_start(self, request: web.Request) -> web.Response:
        """{"title", "options": [...], "duration_s"}; checked by PollSpec (Twitch's limits) and the blocklist."""
        body = await _json_body(request)
        spec = {k: body[k] for k in ("title", "choices", "options", "seconds", "duration_s") if k in body}
        try:
            snap = await self._polls().start(spec, by=BY)
        except ValueError as e:  # PollSpecError: bad title/choices/length or a blocked text
            raise refusal(web.HTTPBadRequest, str(e)) from None
        except RuntimeError as e:  # PollError: one is already running
            raise refusal(web.HTTPConflict, str(e)) from None
        self._changed()
        return web.json_response({"ok": True, "poll": _plain(snap.view())})

    async def poll_end(self, request: web.Request) -> web.Response:
        """End the running poll now and apply its winner ({"cancel": true} ends it without a winner)."""
        body = await _optional_json_body(request)
        polls = self._polls()
        try:
            snap = await (polls.cancel(by=BY) if body.get("cancel") is True else polls.end(by=BY))
        except RuntimeError as e:  # PollError: none running
            raise refusal(web.HTTPConflict, str(e)) from None
        self._changed()
        return web.json_response({"ok": True, "poll": _plain(snap.view())})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/state", self.get_state),
            web.get("/metrics", self.metrics),
            web.get("/healthz", self.healthz),
            web.post("/api/prompt", self.set_prompt),
            web.post("/api/kill", self.kill),
            web.post("/api/revive", self.revive),
            web.post("/api/strength", self.set_strength),
            web.post("/api/steps", self.set_steps),
            web.post("/api/reset", self.reset),
            web.post("/api/approvals/list", self.approvals_list),
            web.post("/api/approvals/{id}/approve", self.approve),
            web.post("/api/approvals/{id}/deny", self.deny),
            web.post("/api/poll/start", self.poll_start),
            web.post("/api/poll/end", self.poll_end),
        ]
