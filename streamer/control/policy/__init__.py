"""Audience-prompt policy: normalisation, blocklist and moderation, the governor (rate limit, approval
mode), the approval queue and polls, bundled by `plane.build_control_plane`. No I/O beyond the Store."""
