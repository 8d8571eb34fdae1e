"""Channel points in the fake: custom rewards, their redemptions, and the redemption.add event.

Twitch's ownership rule is modelled because the client depends on it: only the client id that
created a reward may update its redemptions, and `only_manageable_rewards` lists just those
(`make_reward` with another client id stands for a reward made elsewhere, e.g. in Twitch's
dashboard). `redeem` is the viewer's side: it records an UNFULFILLED redemption and sends the event.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from streamer.testing.fake_twitch.helix import HelixRoutes
from streamer.testing.fake_twitch.state import Token, error_response, twitch_time


class ChannelPointRoutes(HelixRoutes):
    """/helix/channel_points/custom_rewards[/redemptions] and the `redeem` hook."""

    def _reward_body(self, r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if not k.startswith("_")}

    async def _h_get_channel_points_custom_rewards(self, request: web.Request, tok: Token) -> web.Response:
        bid = request.query.get("broadcaster_id", "")
        if (problem := self._need(tok, bid, "channel:read:redemptions", "channel:manage:redemptions")) is not None:
            return problem
        only_ours = request.query.get("only_manageable_rewards", "false").lower() == "true"
        data = [
            self._reward_body(r)
            for r in self.rewards.values()
            if r["broadcaster_id"] == bid and (not only_ours or r["_client_id"] == self.client_id)
        ]
        return web.json_response({"data": data})

    async def _h_post_channel_points_custom_rewards(self, request: web.Request, tok: Token) -> web.Response:
        bid = request.query.get("broadcaster_id", "")
        if (problem := self._need(tok, bid, "channel:manage:redemptions")) is not None:
            return problem
        owner = self.users[bid]
        if owner.broadcaster_type not in ("affiliate", "partner"):
            return error_response(403, "The broadcaster must have partner or affiliate status.")
        body = await request.json()
        if any(r["title"] == body.get("title") for r in self.rewards.values() if r["broadcaster_id"] == bid):
            return error_response(400, "CREATE_CUSTOM_REWARD_DUPLICATE_REWARD")
        reward = self.make_reward(
            bid, body.get("title", ""), int(body.get("cost", 1)), body.get("prompt", ""), client_id=self.client_id
        )
        reward["is_user_input_required"] = bool(body.get("is_user_input_required", False))
        reward["global_cooldown_setting"] = {
            "is_enabled": bool(body.get("is_global_cooldown_enabled", False)),
            "global_cooldown_seconds": int(body.get("global_cooldown_seconds", 0)),
        }
        return web.json_response({"data": [self._reward_body(reward)]})

    def make_reward(self, bid: str, title: str, cost: int, prompt: str, *, client_id: str) -> dict[str, Any]:
        owner = self.users[bid]
        reward: dict[str, Any] = {
            "broadcaster_name": owner.login.capitalize(),
            "broadcaster_login": owner.login,
            "broadcaster_id": bid,
            "id": str(uuid.uuid4()),
            "image": None,
            "background_color": "#9147FF",
            "is_enabled": True,
            "cost": cost,
            "title": title,
            "prompt": prompt,
            "is_user_input_required": True,
            "max_per_stream_setting": {"is_enabled": False, "max_per_stream": 0},
            "max_per_user_per_stream_setting": {"is_enabled": False, "max_per_user_per_stream": 0},
            "global_cooldown_setting": {"is_enabled": False, "global_cooldown_seconds": 0},
            "is_paused": False,
            "is_in_stock": True,
            "default_image": {
                "url_1x": "https://static-cdn.jtvnw.net/custom-reward-images/default-1.png",
                "url_2x": "https://static-cdn.jtvnw.net/custom-reward-images/default-2.png",
                "url_4x": "https://static-cdn.jtvnw.net/custom-reward-images/default-4.png",
            },
            "should_redemptions_skip_request_queue": False,
            "redemptions_redeemed_current_stream": None,
            "cooldown_expires_at": None,
            "_client_id": client_id,
        }
        self.rewards[reward["id"]] = reward
        return reward

    async def _h_patch_channel_points_custom_rewards_redemptions(
        self, request: web.Request, tok: Token
    ) -> web.Response:
        bid = request.query.get("broadcaster_id", "")
        if (problem := self._need(tok, bid, "channel:manage:redemptions")) is not None:
            return problem
        reward = self.rewards.get(request.query.get("reward_id", ""))
        if reward is None:
            return error_response(404, "reward not found")
        if reward["_client_id"] != self.client_id:
            return error_response(
                403, "The client ID in the token does not match the client ID that created the reward."
            )
        red = self.redemptions.get(request.query.get("id", ""))
        if red is None or red["status"] != "UNFULFILLED":
            return error_response(404, "No redemptions with status UNFULFILLED were found.")
        status = (await request.json()).get("status")
        if status not in ("CANCELED", "FULFILLED"):
            return error_response(400, "invalid status")
        red["status"] = status
        self._wake()
        return web.json_response({"data": [red]})

    async def redeem(self, reward_id: str, user_id: str, text: str) -> str:
        """A viewer redeems the reward; Twitch sends channel.channel_points_custom_reward_redemption.add."""
        reward, user = self.rewards[reward_id], self.users[user_id]
        red = {
            "broadcaster_name": reward["broadcaster_name"],
            "broadcaster_login": reward["broadcaster_login"],
            "broadcaster_id": reward["broadcaster_id"],
            "id": str(uuid.uuid4()),
            "user_id": user.id,
            "user_name": user.login.capitalize(),
            "user_login": user.login,
            "user_input": text,
            "status": "UNFULFILLED",
            "redeemed_at": twitch_time(),
            "reward": {
                "id": reward["id"],
                "title": reward["title"],
                "prompt": reward["prompt"],
                "cost": reward["cost"],
            },
        }
        self.redemptions[red["id"]] = red
        event = {
            "id": red["id"],
            "broadcaster_user_id": red["broadcaster_id"],
            "broadcaster_user_login": red["broadcaster_login"],
            "broadcaster_user_name": red["broadcaster_name"],
            "user_id": user.id,
            "user_login": user.login,
            "user_name": user.login.capitalize(),
            "user_input": text,
            "status": "unfulfilled",
            "reward": red["reward"],
            "redeemed_at": red["redeemed_at"],
        }
        await self.notify(
            "channel.channel_points_custom_reward_redemption.add",
            {"broadcaster_user_id": reward["broadcaster_id"]},
            event,
        )
        return str(red["id"])
