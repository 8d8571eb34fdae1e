"""What the dashboard's pages may show of the approval queue and the prompt (broadcast safety).

The live state (`/ws`, `/api/state`) needs no token and feeds the OBS overlays, so it never holds a
waiting request's text: only how many wait, their numbers and, with `dashboard.overlay_queue =
"names"`, who asked (names as moderation shows them). The text goes to the token-holding dashboard
only (`moderator_queue`, behind `POST /api/approvals/list`), and reaches the stream once a moderator
approved it, as the prompt the governor applied. Every text here passes `display_text`: no control,
bidi or zero-width characters, clipped.
"""

from __future__ import annotations

from typing import Any

from streamer.config import Settings
from streamer.control.policy.moderation import NAME_MAX, shown_prompt_limit
from streamer.control.policy.normalize import display_text
from streamer.prompts import PromptState

NAMES_MAX = 20  # names listed in the live state (the overlay shows five and "+N more")


def _name(control: Any, author: str) -> str:
    """Who asked, as pages may show it: moderation's public name when there is a control plane."""
    if not author:
        return ""
    moderation = getattr(control, "moderation", None)
    return moderation.public_name(author) if moderation is not None else display_text(author, NAME_MAX)


def public_queue(control: Any, shown: str) -> dict[str, Any]:
    """The waiting requests as the overlays may know them: {"shown", "count", "ids", "names"}.
    shown is `dashboard.overlay_queue`: "names" lists who asked, "count" and "off" list nobody (the
    overlay shows the count, or nothing). Numbers are no one's words; the dashboard uses `ids` to know
    when to fetch the list with the token."""
    approvals = getattr(control, "approvals", None)
    items = approvals.pending() if approvals is not None else []
    view: dict[str, Any] = {"shown": shown, "count": len(items), "ids": [i.id for i in items], "names": []}
    if shown == "names":
        view["names"] = [{"id": i.id, "author": _name(control, i.author)} for i in items[:NAMES_MAX]]
    return view


def moderator_queue(control: Any, settings: Settings) -> list[dict[str, Any]]:
    """The waiting requests for the token-holding dashboard: what was typed (hidden characters removed,
    clipped to moderation.max_length) and the text it would become (moderated again at approval)."""
    approvals = getattr(control, "approvals", None)
    if approvals is None:
        return []
    limit = settings.moderation.max_length
    return [
        {"id": i.id, "author": display_text(i.author, NAME_MAX), "source": display_text(i.source, NAME_MAX),
         "created_at": i.created_at, "text": display_text(i.text, limit),
         "model_text": display_text(i.model_text, shown_prompt_limit(settings.moderation))}
        for i in approvals.pending()
    ]


def shown_prompt(p: PromptState, control: Any, settings: Settings) -> dict[str, Any]:
    """The prompt state as pages show it. Audience text reaches the bus only through moderation; this
    also covers what the streamer's own paths set (config, console): no hidden characters, clipped."""
    limit = shown_prompt_limit(settings.moderation)
    return {
        "text": display_text(p.text, limit),
        "previous_text": display_text(p.previous_text, limit),
        "version": p.version,
        "source": display_text(p.source, NAME_MAX),
        "author": _name(control, p.author),
        "reason": display_text(p.reason, 200),
        "changed_at": p.changed_at,
        "enabled": p.enabled,
        "strength": p.strength,
    }
