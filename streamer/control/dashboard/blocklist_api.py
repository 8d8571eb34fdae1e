"""POST /api/blocklist: the streamer's "Blocked words" while live (token-checked like every POST).

Body (JSON object, each key optional, at most one of `terms` and `add`):
- `{}`: change nothing, answer the current lists (a POST, not a GET: which words the streamer blocks
  is not for every page on the web to read);
- `{"terms": [...]}`: replace the words added while running (`[]` removes them all);
- `{"add": [...]}`: add words to them (two dashboard tabs adding at once lose nothing).
The words use the config's blocklist syntax (`*stem` matches inside words) and come on top of the
shipped list and `moderation.blocklist_extra`; they are kept in the Store (runtime_terms.py). A change
re-checks every waiting proposal at once: the answer's `refused` lists the request numbers the new
list denied (never shown, never approved, channel points refunded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from streamer.config import ConfigError
from streamer.control.dashboard.api import BY, _optional_json_body, refusal
from streamer.control.policy.approvals import REFUSED_BY


class BlocklistApi:
    """The route's handler over the control plane; `on_change` tells the live pages (queue counts)."""

    def __init__(self, ctx: Any, on_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.on_change = on_change

    async def handle(self, request: web.Request) -> web.Response:
        body = await _optional_json_body(request)
        moderation = getattr(getattr(self.ctx, "control", None), "moderation", None)
        if moderation is None:
            raise refusal(web.HTTPServiceUnavailable, "the blocklist cannot change (no control plane)")
        unknown = sorted(set(body) - {"terms", "add"})
        if unknown:
            raise refusal(web.HTTPBadRequest, f"unknown field {unknown[0][:40]!r}: send 'terms' or 'add'")
        if "terms" in body and "add" in body:
            raise refusal(web.HTTPBadRequest, "send 'terms' (replace) or 'add', not both")
        refused: list[int] = []
        if body:
            add = "add" in body
            terms = body["add" if add else "terms"]
            if not isinstance(terms, list):
                raise refusal(web.HTTPBadRequest, f"'{'add' if add else 'terms'}' must be a list of words")
            approvals = self.ctx.control.approvals
            waiting = [item.id for item in approvals.pending()]
            try:
                moderation.set_blocklist(terms, by=BY, add=add)
            except ConfigError as e:  # malformed, too many, or it would block the streamer's own template
                raise refusal(web.HTTPBadRequest, str(e)) from None
            for item_id in waiting:
                item = approvals.get(item_id)
                if item is not None and item.status == "denied" and item.decided_by == REFUSED_BY:
                    refused.append(item_id)
            self.on_change()
        return web.json_response({
            "terms": list(moderation.runtime_terms),
            "config_terms": list(moderation.settings.blocklist_extra),
            "entries": moderation.blocklist.size,
            "refused": refused,
        })

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/blocklist", self.handle)]
