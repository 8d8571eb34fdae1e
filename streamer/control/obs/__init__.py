"""OBS over obs-websocket v5: the controller component (prompt text, scene activation, kill switch),
the connection wrapper, and `streamer obs setup` (creates the daemon's sources in OBS)."""
