"""The one place where the Twitch code calls the control plane (streamer.control.policy.plane.ControlPlane).

Keeping these calls together means the chat commands, polls and rewards depend on a handful of
methods with plain results (`Outcome`, booleans, strings) rather than on every detail of the
governor, approvals and poll manager.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SOURCE = "twitch"


@dataclass(frozen=True)
class Outcome:
    """status: applied | queued | approved | denied | rejected | cooldown | unknown ...; id: approval id if any."""

    status: str
    id: str = ""
    reason: str = ""
    text: str = ""


def _outcome(p: Any) -> Outcome:
    status = getattr(p, "status", "unknown")
    status = getattr(status, "value", status)
    return Outcome(str(status), str(getattr(p, "id", "") or ""), str(getattr(p, "reason", "") or ""),
                   str(getattr(p, "text", "") or ""))


class PlaneAdapter:
    """Thin, typed facade over the ControlPlane for the Twitch side."""

    def __init__(self, control: Any) -> None:
        if control is None:
            raise RuntimeError("the control plane is missing: Twitch commands need streamer.control.policy.plane")
        self.control = control

    # prompts

    @property
    def governor(self) -> Any:
        return self.control.governor

    def propose(self, text: str, *, author: str, meta: dict[str, Any], source: str = SOURCE) -> Outcome:
        return _outcome(self.governor.propose(text, source=source, author=author, meta=meta))

    def style(self, preset: str, *, author: str, meta: dict[str, Any]) -> Outcome:
        """A curated look by name; moderation maps the name to the streamer's preset prompt."""
        presets = self.governor.moderation.presets()
        match = next((name for name in presets if name.casefold() == preset.strip().casefold()), None)
        if match is None:
            names = ", ".join(sorted(presets)) or "none configured"
            return Outcome("rejected", reason=f"unknown style; try one of: {names}")
        return self.propose(match, author=author, meta={**meta, "preset": match})

    def submit_for_approval(self, text: str, *, author: str, meta: dict[str, Any], source: str) -> Outcome:
        """Always through a moderator (channel points in approval route), after the moderation rules."""
        verdict = self.governor.moderation.review(text, source=source, author=author)
        if not verdict.allowed:
            return Outcome("rejected", reason=verdict.reason)
        item_id = self.control.approvals.submit(text, source=source, author=author, meta=meta, model_text=verdict.text)
        return Outcome("queued", str(item_id), f"waiting for a moderator (#{item_id})", verdict.text)

    def approval_state(self, approval_id: str) -> str:
        """pending | approved | denied | expired | unknown."""
        item = self.control.approvals.get(approval_id)
        return "unknown" if item is None else str(item.status)

    def approve(self, approval_id: str, *, by: str) -> Outcome:
        from streamer.control.policy.approvals import ApprovalError

        try:
            item = self.control.approvals.approve(approval_id, by=by)
        except ApprovalError as e:
            return Outcome("rejected", approval_id, str(e))
        return Outcome("approved", str(item.id), "", item.model_text)

    def deny(self, approval_id: str, *, by: str, reason: str = "") -> Outcome:
        from streamer.control.policy.approvals import ApprovalError

        try:
            item = self.control.approvals.deny(approval_id, by=by, reason=reason)
        except ApprovalError as e:
            return Outcome("rejected", approval_id, str(e))
        return Outcome("denied", str(item.id), item.reason)

    def pending(self) -> list[tuple[str, str, str]]:
        return [(str(i.id), str(i.text), str(i.author)) for i in self.control.approvals.pending()]

    def on_decisions(self, governor_listener: Any, approvals_listener: Any) -> None:
        """Hear later outcomes (applied/superseded/dropped; denied/expired) e.g. to settle channel points."""
        self.governor.add_listener(governor_listener)
        self.control.approvals.add_listener(approvals_listener)

    # kill switch

    def kill(self, *, by: str) -> None:
        self.governor.kill(by, source=SOURCE)

    def revive(self, *, by: str) -> None:
        self.governor.revive(by, source=SOURCE)

    def set_strength(self, value: float, *, by: str) -> None:
        self.governor.set_strength(value, by, source=SOURCE)

    # polls

    @property
    def polls(self) -> Any:
        return self.control.polls

    def install_poll_backend(self, backend: Any, *, use_native: bool) -> None:
        self.polls.set_default_backend(backend if use_native else None)

    async def start_poll(self, title: str, options: list[str], seconds: int, *, by: str, fallback: bool) -> tuple[bool, str]:
        """Start a poll (native when the default backend is set); with fallback, chat votes when Twitch refuses."""
        from streamer.control.policy.polls import PollError, PollSpec
        from streamer.control.twitch.polls import PollsUnsupported

        try:
            spec = PollSpec(title, tuple(options), seconds)
            try:
                snap = await self.polls.start(spec, by=by)
            except PollsUnsupported as e:
                if not fallback:
                    return False, str(e)
                log.warning("%s: using chat votes from now on", e)
                self.polls.set_default_backend(None)
                snap = await self.polls.start(spec, by=by, backend="chat")
        except (ValueError, PollError) as e:
            return False, str(e)
        choices = " ".join(f"[{i + 1}] {c}" for i, c in enumerate(snap.choices))
        if snap.backend == "chat":
            return True, f"POLL ({snap.seconds} s): {choices} -- vote with !vote <number>"
        return True, f"POLL ({snap.seconds} s): {choices} -- vote in the poll above the chat"

    def vote(self, voter_id: str, choice: str) -> tuple[bool, str]:
        from streamer.control.policy.polls import PollError

        try:
            self.polls.vote(voter_id, choice)
        except PollError as e:
            return False, str(e)
        return True, ""

    def on_poll_result(self, announce: Any) -> None:
        """announce(line) for every finished poll (winner or why not)."""

        def listener(snap: Any) -> None:
            if snap.status == "running":
                return
            if snap.winner is None:
                announce(f"poll over: {snap.result}")
            else:
                announce(f"poll over: [{snap.winner + 1}] {snap.winner_text} wins ({snap.votes[snap.winner]} of "
                         f"{snap.total} votes) -- {snap.result}")

        self.polls.add_listener(listener)
