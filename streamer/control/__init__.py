"""The control plane: prompts, moderation, Twitch, OBS and the dashboard (all on the asyncio loop)."""
