"""The control plane bundle: moderation, approval queue, governor and polls, built once by the app.

The Twitch, dashboard and OBS components receive this object; none of them writes audience text
to the PromptBus directly: proposals go through `governor.propose`, decisions through `approvals`,
polls through `polls`. `ControlPlane.run` is the component that keeps the governor's rate limit
and approval expiry and the polls' timers ticking.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamer.config import ModerationSettings, Settings
from streamer.control.policy.approvals import Approvals
from streamer.control.policy.governor import PromptGovernor
from streamer.control.policy.moderation import Moderation
from streamer.control.policy.polls import PollManager

if TYPE_CHECKING:
    from streamer.prompts import PromptBus
    from streamer.store import Store


@dataclass
class ControlPlane:
    """What the lead's app hands to the Twitch, dashboard and OBS components."""

    moderation: Moderation
    approvals: Approvals
    governor: PromptGovernor
    polls: PollManager
    name: str = "control-plane"

    async def run(self) -> None:
        """Tick the governor (scheduled prompts, approval expiry) and the polls until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.governor.run())
            tg.create_task(self.polls.run())


def build_control_plane(settings: Settings | ModerationSettings, store: Store, bus: PromptBus) -> ControlPlane:
    """Build the bundle and make the bus's own `propose` moderated too. Raises ConfigError when the
    streamer's template or presets contain a blocked term."""
    mod_settings = settings if isinstance(settings, ModerationSettings) else settings.moderation
    moderation = Moderation(mod_settings, store)
    approvals = Approvals(store)
    governor = PromptGovernor(bus, moderation, approvals, mod_settings)
    polls = PollManager(governor, store)
    bus.moderator = moderation
    return ControlPlane(moderation, approvals, governor, polls)


def build(ctx: Any) -> ControlPlane | None:
    """app.COMPONENTS entry: the plane the app already built (ctx.control), run as a component."""
    control = getattr(ctx, "control", None)
    return control if isinstance(control, ControlPlane) else None
