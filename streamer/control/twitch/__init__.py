"""Twitch: the TwitchIO bot component, its chat commands, native polls, the channel-points reward,
token storage and the rate-limited chat outbox. TwitchIO is imported lazily, so this package
imports without the `twitch` extra."""
