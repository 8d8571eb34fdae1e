"""PromptGovernor: the one entry point for audience and dashboard proposals.

propose() -> moderation (Moderation.review) -> rejected, or:
  approval mode and an untrusted source -> the approval queue ("queued"; approval applies it later,
  after moderating it again: the governor is the queue's vetter, also at start and when the
  blocklist changes, and an item refused then is denied, never approved);
  otherwise -> the rate limit: at most one audience change reaches the PromptBus every
  `min_change_interval_s`. A proposal inside the interval is "scheduled"; when the interval has
  passed the newest scheduled one is applied and older ones are "superseded" (listeners hear it,
  so a channel-points redemption can be refunded); one the blocklist holds after a change is
  "rejected" instead of applied. Trusted sources (the streamer's dashboard,
  polls) apply at once and restart the interval.
Time comes from an injected monotonic clock; `tick()` applies what is due, and `run()` is the
asyncio loop that calls it (and expires old approvals), so tests never sleep.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streamer.config import ModerationSettings
from streamer.control.policy.approvals import REFUSED_BY, ApprovalItem, Approvals
from streamer.control.policy.moderation import Moderation, storable

if TYPE_CHECKING:
    from streamer.prompts import PromptBus, Verdict

log = logging.getLogger(__name__)

Status = Literal["applied", "queued", "rejected", "scheduled", "superseded", "dropped"]


@dataclass(frozen=True)
class Proposal:
    """The outcome of a proposal. propose() returns applied/queued/rejected/scheduled; listeners also hear
    later outcomes: a scheduled or approved proposal that becomes applied, superseded (a newer one
    replaced it before its turn) or dropped (the kill switch cleared it).
    id: the approval-queue id when the proposal went through the queue, else None.
    text: the final model text (empty when rejected: never echo a blocked text back into chat).
    meta: the caller's own data, handed back unchanged (e.g. a channel-points redemption id)."""

    status: Status
    id: int | None
    reason: str
    text: str
    source: str = ""
    author: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    due_in_s: float = 0.0  # scheduled: seconds until it may apply


Listener = Callable[[Proposal], None]


class PromptGovernor:
    """Moderation, approval queue and rate limit in front of the PromptBus (thread-safe)."""

    def __init__(
        self,
        bus: PromptBus,
        moderation: Moderation,
        approvals: Approvals,
        settings: ModerationSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.moderation = moderation
        self.approvals = approvals
        self.settings = settings
        self._clock = clock
        self._lock = threading.RLock()
        self._last_change = -math.inf
        self._scheduled: Proposal | None = None
        self._listeners: list[Listener] = []
        approvals.add_listener(self._on_approval)
        # Every approval, and every pending item at start and after a blocklist change, is moderated
        # again by the current rules: what waited must not reach the model (or an overlay) on old ones.
        approvals.set_vetter(self._vet)
        moderation.add_blocklist_listener(self.recheck_pending)
        self.recheck_pending()

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: Listener) -> None:
        """`listener(proposal)` for every outcome, including later ones (applied, superseded, dropped)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, proposals: list[Proposal]) -> None:
        for p in proposals:
            for listener in list(self._listeners):
                try:
                    listener(p)
                except Exception:
                    log.exception("governor listener failed")

    # ------------------------------------------------------------------ proposals

    def propose(
        self, text: str, *, source: str, author: str, meta: Mapping[str, Any] | None = None
    ) -> Proposal:
        """Moderate and route one proposal (see the module doc). Never raises on hostile text."""
        meta = dict(meta or {})
        # Names come from chat too: make them storable (no lone surrogates) and bounded before they
        # reach the bus, the Store and the logs.
        source, author = storable(source, 100), storable(author, 100)
        verdict = self.moderation.review(text, source=source, author=author)
        if not verdict.allowed:
            outcome = Proposal("rejected", None, verdict.reason, "", source, author, meta)
            self._emit([outcome])
            return outcome
        if self.settings.mode == "approval" and not self.moderation.is_trusted(source):
            item_id = self.approvals.submit(text, source=source, author=author, meta=meta, model_text=verdict.text)
            self.moderation.audit.record("queued", source=source, author=author, raw=text,
                                         reason=f"waiting for approval as #{item_id}", text=verdict.text)
            outcome = Proposal("queued", item_id, f"waiting for a moderator (#{item_id})", verdict.text,
                               source, author, meta)
            self._emit([outcome])
            return outcome
        return self._offer(verdict.text, source, author, meta, None, trusted=self.moderation.is_trusted(source))

    def _offer(
        self, text: str, source: str, author: str, meta: dict[str, Any], item_id: int | None, *, trusted: bool
    ) -> Proposal:
        events: list[Proposal] = []
        with self._lock:
            now = self._clock()
            wait = self._last_change + self.settings.min_change_interval_s - now
            if trusted or wait <= 0:
                if self._scheduled is not None:  # a newer decision wins over whatever waited
                    events.append(self._replace(self._scheduled, "superseded", "a newer prompt was applied first"))
                    self._scheduled = None
                self._last_change = now
                outcome = self._apply(Proposal("applied", item_id, "applied", text, source, author, meta))
            else:
                if self._scheduled is not None:
                    events.append(self._replace(self._scheduled, "superseded", "a newer proposal replaced it"))
                outcome = Proposal("scheduled", item_id, f"next prompt change in {math.ceil(wait)} s", text,
                                   source, author, meta, due_in_s=wait)
                self._scheduled = outcome
                self.moderation.audit.record("scheduled", source=source, author=author, reason=outcome.reason, text=text)
        self._emit([*events, outcome])
        return outcome

    def _apply(self, p: Proposal) -> Proposal:
        self.bus.set(p.text, source=p.source, author=p.author, reason="approved" if p.id is not None else "proposed")
        self.moderation.audit.record("applied", source=p.source, author=p.author, text=p.text,
                                     reason=f"approval #{p.id}" if p.id is not None else "")
        return p

    def _replace(self, p: Proposal, status: Status, reason: str) -> Proposal:
        self.moderation.audit.record(status, source=p.source, author=p.author, reason=reason, text=p.text)
        return Proposal(status, p.id, reason, p.text, p.source, p.author, p.meta)

    def tick(self, now: float | None = None) -> Proposal | None:
        """Apply the scheduled proposal if its time has come; returns it (status applied) or None."""
        with self._lock:
            now = self._clock() if now is None else now
            p = self._scheduled
            if p is None or now < self._last_change + self.settings.min_change_interval_s:
                return None
            self._scheduled = None
            self._last_change = now
            outcome = self._apply(Proposal("applied", p.id, "applied", p.text, p.source, p.author, p.meta))
        self._emit([outcome])
        return outcome

    def scheduled(self) -> Proposal | None:
        """The proposal waiting for the interval to pass, if any."""
        return self._scheduled

    def seconds_until_next_change(self) -> float:
        """0 when an audience proposal would apply at once."""
        return max(0.0, self._last_change + self.settings.min_change_interval_s - self._clock())

    def _vet(self, item: ApprovalItem) -> Verdict:
        """The approval queue's vetter: the blocklist may have changed while the item waited, and a queue
        filled by someone else may hold text that never went through review."""
        return self.moderation.review(item.text, source=item.source, author=item.author)

    def recheck_pending(self) -> list[ApprovalItem]:
        """Moderate every pending approval again; refused ones are denied (and heard as rejected). The
        proposal waiting for the rate limit is checked too: one the blocklist now holds is never applied."""
        with self._lock:
            p = self._scheduled
            hit = None if p is None else self.moderation.find_blocked(p.text)
            if p is not None and hit is not None:
                self._scheduled = None
        if p is not None and hit is not None:
            self._emit([self._replace(p, "rejected", f"blocked: {hit.category}")])
        return self.approvals.recheck()

    def _on_approval(self, event: str, item: ApprovalItem) -> None:
        if event == "denied" and item.decided_by == REFUSED_BY:
            self._emit([Proposal("rejected", item.id, item.reason, "", item.source, item.author, item.meta)])
        elif event == "approved":
            # approve() vetted it a moment ago: model_text is the freshly moderated text
            self._offer(item.model_text, item.source, item.author, dict(item.meta), item.id, trusted=False)

    # ------------------------------------------------------------------ the streamer's and mods' controls

    def kill(self, by: str, *, source: str = "dashboard", reason: str = "") -> None:
        """Kill switch: the engine goes to passthrough; a scheduled proposal is dropped."""
        with self._lock:
            dropped = self._scheduled
            self._scheduled = None
        self.bus.set_enabled(False, source=source, author=by, reason=reason or "kill switch")
        self.moderation.audit.record("kill", source=source, author=by, reason=reason or "kill switch")
        if dropped is not None:
            self._emit([self._replace(dropped, "dropped", "the AI was switched off")])

    def revive(self, by: str, *, source: str = "dashboard", reason: str = "") -> None:
        """Model back on (with the current prompt; propose a new one first to change it)."""
        self.bus.set_enabled(True, source=source, author=by, reason=reason or "revived")
        self.moderation.audit.record("revive", source=source, author=by, reason=reason or "revived")

    def set_strength(self, value: float | None, by: str, *, source: str = "dashboard") -> None:
        """Override the model's strength (0..1); None returns to the configured value.
        Raises ValueError with a message fit for a chat reply on anything else."""
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"strength must be a number between 0 and 1, got {value!r}")
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"strength must be between 0 and 1, got {value}")
            value = float(value)
        self.bus.set_strength(value, source=source, author=by)
        self.moderation.audit.record("strength", source=source, author=by, reason=f"strength {value}")

    def status(self) -> dict[str, Any]:
        """A JSON-friendly summary for the dashboard."""
        state = self.bus.current()
        s = self._scheduled
        return {
            "mode": self.settings.mode,
            "enabled": state.enabled,
            "strength": state.strength,
            "prompt": state.text,
            "next_change_in_s": round(self.seconds_until_next_change(), 1),
            "scheduled": None if s is None else {"text": s.text, "author": s.author, "source": s.source},
            "pending_approvals": len(self.approvals.pending()),
        }

    # ------------------------------------------------------------------ the loop

    async def run(self, poll_s: float = 0.25) -> None:
        """Apply scheduled proposals on time and expire old approvals; runs until cancelled."""
        next_expiry = 0.0
        while True:
            try:
                self.tick()
                if self.settings.approval_max_age_s > 0 and self._clock() >= next_expiry:
                    next_expiry = self._clock() + 5.0
                    for item in self.approvals.expire(self.settings.approval_max_age_s):
                        self.moderation.audit.record("expired", source=item.source, author=item.author,
                                                     raw=item.text, reason=item.reason)
            except Exception:  # keep the loop alive: a transient SQLite error must not stop prompt changes
                log.exception("governor tick failed")
            await asyncio.sleep(poll_s)
