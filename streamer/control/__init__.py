"""The control plane: everything on the asyncio loop that steers the video (no model code here).

- `policy/`: what audience text must pass before it reaches the PromptBus (moderation, governor,
  approvals, polls), bundled as the `ControlPlane`;
- `twitch/`: the Twitch bot, its chat commands, native polls and the channel-points reward;
- `obs/`: the OBS controller and `streamer obs setup`;
- `dashboard/`: the streamer's web dashboard and the OBS overlay server;
- `console.py`: prompts typed into the daemon's terminal.
"""
