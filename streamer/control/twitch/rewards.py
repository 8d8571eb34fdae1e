"""The channel-points "AI prompt" reward: created by this app, redemptions moderated, refunded when rejected.

Twitch lets an app fulfil or cancel (refund) only redemptions of rewards that the same client id
created, so the daemon creates its own reward (once; found again by title among the rewards this
client may manage). Each redemption goes to the approvals queue (or straight to the governor, per
`twitch.reward_route`) and is remembered in the Store, so a restart never forgets a refund:
approved -> FULFILLED; denied, rejected or expired -> CANCELED (the viewer gets the points back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamer.control.policy.governor import Proposal
from streamer.store import Store

if TYPE_CHECKING:
    from streamer.config import Settings
    from streamer.control.policy.approvals import ApprovalItem
    from streamer.control.policy.plane import ControlPlane

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS twitch_redemptions (
    redemption_id TEXT PRIMARY KEY,
    reward_id TEXT NOT NULL,
    user_login TEXT NOT NULL,
    text TEXT NOT NULL,
    approval_id TEXT,
    outcome TEXT,               -- NULL while undecided; FULFILLED or CANCELED once decided
    synced INTEGER NOT NULL DEFAULT 0,  -- 1 once Twitch accepted the status update
    created_at REAL NOT NULL
);
"""


_FINAL = {"applied": "FULFILLED", "rejected": "CANCELED", "superseded": "CANCELED", "dropped": "CANCELED"}
SOURCE = "twitch-points"  # the source the governor and the audit log name for redemptions


class RewardService:
    """Keeps the reward and settles its redemptions through Helix Update Redemption Status."""

    def __init__(self, settings: Settings, store: Store, control: ControlPlane) -> None:
        self.tw = settings.twitch
        self.store = store
        self.control = control
        store.ensure_schema(_SCHEMA)
        self.reward_id: str | None = None
        self.unavailable = ""
        self._bot: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.decided = asyncio.Event()
        # Later outcomes (applied/superseded/dropped; denied/expired) settle the redemption.
        control.governor.add_listener(self._on_proposal)
        control.approvals.add_listener(self._on_approval_event)

    async def attach(self, bot: Any) -> None:
        self._bot = bot
        self._loop = asyncio.get_running_loop()
        if not self.tw.reward_enabled or self.tw.owner_id not in bot.tokens:
            return
        try:
            await self.ensure_reward()
        except Exception as e:
            status = getattr(e, "status", None)
            self.unavailable = f"{type(e).__name__} {status or ''}".strip()
            log.warning("channel-points reward unavailable (%s): channel points need Affiliate/Partner and the "
                        "broadcaster's channel:manage:redemptions scope", self.unavailable)
            return
        await self.settle()

    def detach(self) -> None:
        self._bot = None

    async def ensure_reward(self) -> str:
        owner = self._bot.create_partialuser(self.tw.owner_id)
        ours = await owner.fetch_custom_rewards(manageable=True)
        for reward in ours:
            if reward.title == self.tw.reward_title:
                self.reward_id = reward.id
                return reward.id
        reward = await owner.create_custom_reward(
            title=self.tw.reward_title, cost=self.tw.reward_cost, prompt=self.tw.reward_prompt,
            global_cooldown=self.tw.reward_cooldown_s or None, enabled=True,
        )
        self.reward_id = reward.id
        log.info("created the channel-points reward %r (%d points)", reward.title, reward.cost)
        return reward.id

    # ------------------------------------------------------------------ decisions

    def _decide(self, redemption_id: Any, outcome: str) -> None:
        """Record a final outcome once (the first decision wins); settle() sends it to Twitch."""
        if not redemption_id:
            return
        self.store.execute("UPDATE twitch_redemptions SET outcome = ? WHERE redemption_id = ? AND outcome IS NULL",
                           (outcome, str(redemption_id)))
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.decided.set)

    def _on_proposal(self, p: Proposal) -> None:
        outcome = _FINAL.get(str(p.status))
        if outcome is not None:
            self._decide(p.meta.get("redemption_id"), outcome)

    def _on_approval_event(self, event: str, item: ApprovalItem) -> None:
        if event in ("denied", "expired"):
            self._decide(item.meta.get("redemption_id"), "CANCELED")

    async def on_redemption(self, payload: Any) -> None:
        """channel.channel_points_custom_reward_redemption.add for any reward; ours are routed, others ignored."""
        if self.reward_id is None or payload.reward.id != self.reward_id or payload.status != "unfulfilled":
            return
        if self.store.query("SELECT 1 FROM twitch_redemptions WHERE redemption_id = ?", (payload.id,)):
            return  # Twitch may deliver a notification twice
        login = payload.user.name or payload.user.id
        text = payload.user_input or ""
        self.store.execute(
            "INSERT INTO twitch_redemptions (redemption_id, reward_id, user_login, text, created_at)"
            " VALUES (?, ?, ?, ?, ?)", (payload.id, payload.reward.id, login, text, time.time()))
        meta = {"user_id": payload.user.id, "redemption_id": payload.id, "reward_id": payload.reward.id}
        if self.tw.reward_route == "approval":
            outcome = self._submit_for_approval(text, login, meta)
        else:
            outcome = self.control.governor.propose(text, source=SOURCE, author=login, meta=meta)
        if outcome.status == "queued" and outcome.id:
            self.store.execute("UPDATE twitch_redemptions SET approval_id = ? WHERE redemption_id = ?",
                               (str(outcome.id), payload.id))
        elif outcome.status in _FINAL:
            self._decide(payload.id, _FINAL[outcome.status])
        log.info("redemption %s by %s: %s%s", payload.id, login, outcome.status,
                 f" ({outcome.reason})" if outcome.reason else "")
        await self.settle()

    def _submit_for_approval(self, text: str, login: str, meta: Mapping[str, Any]) -> Proposal:
        """`reward_route = "approval"`: always through a moderator, after the moderation rules (the
        governor queues only in approval mode)."""
        verdict = self.control.governor.moderation.review(text, source=SOURCE, author=login)
        if not verdict.allowed:
            return Proposal("rejected", None, verdict.reason, "", SOURCE, login, meta)
        item_id = self.control.approvals.submit(text, source=SOURCE, author=login, meta=meta, model_text=verdict.text)
        return Proposal("queued", item_id, f"waiting for a moderator (#{item_id})", verdict.text, SOURCE, login, meta)

    def reconcile(self) -> None:
        """After a restart: approvals decided while we were away (listeners missed them) settle the redemption."""
        rows = self.store.query(
            "SELECT redemption_id, approval_id FROM twitch_redemptions WHERE outcome IS NULL AND approval_id IS NOT NULL")
        for row in rows:
            item = self.control.approvals.get(row["approval_id"])
            state = "unknown" if item is None else item.status
            if state in ("denied", "expired", "unknown"):
                self._decide(row["redemption_id"], "CANCELED")
            elif state == "approved":
                self._decide(row["redemption_id"], "FULFILLED")

    async def settle(self) -> int:
        """Send every decided, unsynced outcome to Twitch; returns how many Twitch accepted."""
        import twitchio

        self.decided.clear()
        if self._bot is None or self.tw.owner_id not in self._bot.tokens:
            return 0
        done = 0
        rows = self.store.query(
            "SELECT redemption_id, reward_id, outcome FROM twitch_redemptions WHERE outcome IS NOT NULL AND synced = 0")
        for row in rows:
            try:
                await self._bot.http.patch_custom_reward_redemption(
                    broadcaster_id=self.tw.owner_id, token_for=self.tw.owner_id, reward_id=row["reward_id"],
                    id=row["redemption_id"], status=row["outcome"])
            except twitchio.HTTPException as e:
                if e.status in (400, 403, 404):  # already settled elsewhere, or not ours: nothing left to do
                    log.warning("redemption %s could not be set to %s (%s); leaving it", row["redemption_id"],
                                row["outcome"], e.status)
                else:
                    log.warning("redemption %s: Twitch error %s; will retry", row["redemption_id"], e.status)
                    continue
            else:
                done += 1
                log.info("redemption %s -> %s", row["redemption_id"], row["outcome"])
            self.store.execute("UPDATE twitch_redemptions SET synced = 1 WHERE redemption_id = ?", (row["redemption_id"],))
        return done
