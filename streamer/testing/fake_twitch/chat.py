"""Chat in the fake: the bot's messages (POST /helix/chat/messages) and chatters' (channel.chat.message).

Both directions of one feature in one place: what the client sends is checked (sender's token and
`user:write:chat`, 1 to 500 characters) and recorded in `sent` / `sent_times`; what a viewer types
is injected with `chat` as a complete EventSub event, every field as in Twitch's reference, since
TwitchIO drops a message with a missing field without a word.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from streamer.testing.fake_twitch.helix import HelixRoutes
from streamer.testing.fake_twitch.state import Token, error_response


class ChatRoutes(HelixRoutes):
    """POST /helix/chat/messages and the `chat` hook."""

    async def _h_post_chat_messages(self, request: web.Request, tok: Token) -> web.Response:
        body = await request.json()
        if (problem := self._need(tok, str(body.get("sender_id")), "user:write:chat")) is not None:
            return problem
        text = body.get("message", "")
        if not 1 <= len(text) <= 500:
            return error_response(400, "The message is too long")
        self.sent.append(body)
        self.sent_times.append(time.monotonic())
        self._wake()
        return web.json_response({"data": [{"message_id": str(uuid.uuid4()), "is_sent": True, "drop_reason": None}]})

    def chat_event(self, broadcaster_id: str, user_id: str, text: str, badges: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        owner, user = self.users[broadcaster_id], self.users[user_id]
        return {
            "broadcaster_user_id": owner.id,
            "broadcaster_user_login": owner.login,
            "broadcaster_user_name": owner.login.capitalize(),
            "source_broadcaster_user_id": None,
            "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None,
            "chatter_user_id": user.id,
            "chatter_user_login": user.login,
            "chatter_user_name": user.login.capitalize(),
            "message_id": str(uuid.uuid4()),
            "source_message_id": None,
            "is_source_only": None,
            "message": {
                "text": text,
                "fragments": [{"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}],
            },
            "color": "#00FF7F",
            "badges": [{"set_id": b, "id": "1", "info": ""} for b in badges],
            "source_badges": None,
            "message_type": "text",
            "cheer": None,
            "reply": None,
            "channel_points_custom_reward_id": None,
            "channel_points_animation_id": None,
        }

    async def chat(self, broadcaster_id: str, user_id: str, text: str, badges: list[str] = ()) -> None:  # type: ignore[assignment]
        """A chatter writes in the broadcaster's chat (badges: "moderator", "broadcaster", "vip", "subscriber")."""
        await self.notify(
            "channel.chat.message",
            {"broadcaster_user_id": broadcaster_id},
            self.chat_event(broadcaster_id, user_id, text, badges),
        )
