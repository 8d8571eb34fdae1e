"""The control traffic a live channel makes, sent all through the soak: prompt changes on the dashboard,
chat proposals that wait for approval, approvals on the dashboard, and chat votes in a running poll.

One action per tick, in rotation, each recorded in the ledger once the daemon has taken it. Chat goes
through the fake Twitch as EventSub notifications (what a real channel's chat becomes); a message it
could not deliver (the daemon's websocket is down) is counted as unsent. `paused` stops the traffic
(the soak quiesces it before it SIGKILLs the daemon, so every item sent can be checked afterwards).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from streamer.soak.client import DashboardClient
from streamer.soak.daemon import OWNER, VIEWER_BASE, VIEWERS
from streamer.soak.ledger import Ledger

log = logging.getLogger(__name__)

CHOICES = ("ink", "neon", "sepia")
POLL_MARGIN_S = 3.0  # no vote this close to a poll's end: it might land after the poll closed


class Traffic:
    def __init__(self, client: DashboardClient, fake: Any, ledger: Ledger, *, poll_s: int = 30) -> None:
        self.client, self.fake, self.ledger, self.poll_s = client, fake, ledger, poll_s
        self.paused = asyncio.Event()
        self.turn = 0  # which action is next
        self.n = 0  # numbers every text sent, so each is unique (several senders share this counter)
        self.poll: tuple[int, float] | None = None  # (poll id, wall time it ends)
        self.voters = 0
        self.approved: set[int] = set()

    async def run(self, every_s: float) -> None:
        actions = [self.dashboard_prompt, self.chat_proposal, self.poll_vote, self.approve_one]
        while True:
            if not self.paused.is_set():
                action = actions[self.turn % len(actions)]
                self.turn += 1
                try:
                    await action()
                except Exception:  # the soak measures the daemon; a bug here must not end the run silently
                    log.exception("soak traffic: %s failed", action.__name__)
            await asyncio.sleep(every_s)

    async def chat(self, user_id: str, text: str, *badges: str) -> bool:
        """Say `text` in the channel as `user_id`; True when the daemon's subscription received it."""
        if user_id not in self.fake.users:
            self.fake.add_user(user_id, f"viewer{user_id}")
        event = self.fake.chat_event(OWNER, user_id, text, list(badges))
        delivered = await self.fake.notify("channel.chat.message", {"broadcaster_user_id": OWNER}, event)
        return bool(delivered)

    def viewer(self) -> str:
        self.voters += 1
        return str(VIEWER_BASE + self.voters % VIEWERS)

    async def dashboard_prompt(self, label: str = "look", timeout_s: float = 3.0) -> bool:
        self.n += 1
        text = f"soak {label} {self.n}"
        status, body = await self.client.post("/api/prompt", {"text": text}, timeout_s=timeout_s)
        if status == 200 and isinstance(body, dict) and body.get("status") == "applied":
            self.ledger.add("prompt", str(body.get("text", text)))
            self.ledger.add("audit", text)
            return True
        self._not_taken("prompt", status)
        return False

    async def chat_proposal(self) -> bool:
        self.n += 1
        text = f"soak idea {self.n}"
        if await self.chat(self.viewer(), f"!ai {text}"):
            self.ledger.add("proposal", text)
            self.ledger.add("audit", text)
            return True
        self.ledger.unsent["proposal"] += 1
        return False

    async def approve_one(self) -> None:
        status, body = await self.client.post("/api/approvals/list")
        if status != 200 or not isinstance(body, dict):
            self._not_taken("approval", status)
            return
        waiting = [
            i
            for i in body.get("items", [])
            if str(i.get("text", "")).startswith("soak idea") and i.get("id") not in self.approved
        ]
        if not waiting:
            return
        item_id = int(min(waiting, key=lambda i: int(i["id"]))["id"])
        status, answer = await self.client.post(f"/api/approvals/{item_id}/approve")
        if status == 200 and isinstance(answer, dict) and answer.get("status") == "approved":
            self.approved.add(item_id)
            self.ledger.add("approval", str(item_id), "approved")
        else:
            self._not_taken("approval", status)

    async def poll_vote(self) -> None:
        now = time.time()
        if self.poll is None or now > self.poll[1] - POLL_MARGIN_S:
            if self.poll is not None and now < self.poll[1] + 1.0:
                return  # let it close before the next one starts
            await self._start_poll()
            return
        poll_id = self.poll[0]
        voter = self.viewer()
        choice = 1 + self.n % len(CHOICES)
        if await self.chat(voter, f"!vote {choice}"):
            self.ledger.add("vote", f"{poll_id}/{voter}", str(choice - 1))
        else:
            self.ledger.unsent["vote"] += 1

    async def _start_poll(self) -> None:
        status, body = await self.client.post(
            "/api/poll/start", {"title": f"soak poll {self.n}", "choices": list(CHOICES), "seconds": self.poll_s}
        )
        if status == 200 and isinstance(body, dict) and isinstance(body.get("poll"), dict):
            poll = body["poll"]
            self.poll = (int(poll["id"]), float(poll["ends_at"]))
            self.voters = 0
        elif status == 409:  # one is still running (restored after a restart): vote in it when the state says so
            state = await self.client.state()
            poll = (state or {}).get("poll") or {}
            if poll.get("status") == "running":
                self.poll = (int(poll["id"]), float(poll["ends_at"]))
        else:
            self._not_taken("poll", status)

    def _not_taken(self, kind: str, status: int | None) -> None:
        if status is None:
            self.ledger.unsent[kind] += 1
        else:
            self.ledger.refused[f"{kind}: {status}"] += 1
