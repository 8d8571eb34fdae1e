"""Native polls in the fake: POST/PATCH /helix/polls and the channel.poll.begin/progress/end events.

A poll's whole life is here: Helix creates it (partner or affiliate only, one active at a time,
Twitch's limits on title, choices and duration) or ends it early; the test hooks `vote` and
`finish_poll` stand in for the viewers and the clock; each change goes out as the EventSub event
TwitchIO expects, whose fields differ between begin, progress and end.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web

from streamer.testing.fake_twitch.helix import HelixRoutes
from streamer.testing.fake_twitch.state import TIME_FORMAT, Token, error_response, twitch_time


class PollRoutes(HelixRoutes):
    """/helix/polls and the `vote` / `finish_poll` hooks."""

    def _poll_body(self, poll: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in poll.items() if not k.startswith("_")}

    async def _h_post_polls(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        bid = str(body.get("broadcaster_id"))
        if (problem := self._need(tok, bid, "channel:manage:polls")) is not None:
            return problem
        owner = self.users[bid]
        if owner.broadcaster_type not in ("affiliate", "partner"):
            return error_response(403, "The broadcaster must be a partner or affiliate to run polls.")
        title, choices, duration = body.get("title", ""), body.get("choices", []), body.get("duration", 0)
        if not (
            1 <= len(title) <= 60
            and 2 <= len(choices) <= 5
            and 15 <= duration <= 1800
            and all(1 <= len(c.get("title", "")) <= 25 for c in choices)
        ):
            return error_response(400, "Invalid poll")
        if any(p["status"] == "ACTIVE" for p in self.polls.values()):
            return error_response(400, "The broadcaster already has an active poll.")
        poll = {
            "id": str(uuid.uuid4()),
            "broadcaster_id": bid,
            "broadcaster_name": owner.login.capitalize(),
            "broadcaster_login": owner.login,
            "title": title,
            "choices": [
                {"id": str(uuid.uuid4()), "title": c["title"], "votes": 0, "channel_points_votes": 0, "bits_votes": 0}
                for c in choices
            ],
            "bits_voting_enabled": False,
            "bits_per_vote": 0,
            "channel_points_voting_enabled": bool(body.get("channel_points_voting_enabled", False)),
            "channel_points_per_vote": int(body.get("channel_points_per_vote", 0) or 0),
            "status": "ACTIVE",
            "duration": duration,
            "started_at": twitch_time(),
            "ended_at": None,
        }
        self.polls[poll["id"]] = poll
        await self._poll_event("channel.poll.begin", poll)
        return web.json_response({"data": [self._poll_body(poll)]})

    async def _h_patch_polls(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        if (problem := self._need(tok, str(body.get("broadcaster_id")), "channel:manage:polls")) is not None:
            return problem
        poll = self.polls.get(body.get("id", ""))
        if poll is None:
            return error_response(404, "poll not found")
        if poll["status"] != "ACTIVE" or body.get("status") not in ("TERMINATED", "ARCHIVED"):
            return error_response(400, "poll is not active or status is invalid")
        await self._end_poll(poll, body["status"])
        return web.json_response({"data": [self._poll_body(poll)]})

    async def _poll_event(self, kind: str, poll: dict[str, Any]) -> None:
        event: dict[str, Any] = {
            "id": poll["id"],
            "broadcaster_user_id": poll["broadcaster_id"],
            "broadcaster_user_login": poll["broadcaster_login"],
            "broadcaster_user_name": poll["broadcaster_name"],
            "title": poll["title"],
            "choices": [{"id": c["id"], "title": c["title"]} for c in poll["choices"]]
            if kind == "channel.poll.begin"
            else [
                {
                    "id": c["id"],
                    "title": c["title"],
                    "bits_votes": 0,
                    "channel_points_votes": c["channel_points_votes"],
                    "votes": c["votes"],
                }
                for c in poll["choices"]
            ],
            "bits_voting": {"is_enabled": False, "amount_per_vote": 0},
            "channel_points_voting": {
                "is_enabled": poll["channel_points_voting_enabled"],
                "amount_per_vote": poll["channel_points_per_vote"],
            },
            "started_at": poll["started_at"],
        }
        if kind == "channel.poll.end":
            event["status"] = poll["status"].lower()
            event["ended_at"] = poll["ended_at"]
        else:
            start = dt.datetime.strptime(poll["started_at"], TIME_FORMAT).replace(tzinfo=dt.UTC)
            event["ends_at"] = (start + dt.timedelta(seconds=poll["duration"])).strftime(TIME_FORMAT)
        await self.notify(kind, {"broadcaster_user_id": poll["broadcaster_id"]}, event)

    async def _end_poll(self, poll: dict[str, Any], status: str) -> None:
        poll["status"], poll["ended_at"] = status, twitch_time()
        await self._poll_event("channel.poll.end", poll)

    async def vote(self, poll_id: str, choice_index: int, n: int = 1) -> None:
        """Viewers vote in the native poll UI; Twitch sends channel.poll.progress."""
        self.polls[poll_id]["choices"][choice_index]["votes"] += n
        await self._poll_event("channel.poll.progress", self.polls[poll_id])

    async def finish_poll(self, poll_id: str) -> None:
        """The poll's time is up."""
        await self._end_poll(self.polls[poll_id], "COMPLETED")
