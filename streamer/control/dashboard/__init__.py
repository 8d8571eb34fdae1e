"""The streamer's web dashboard and the OBS overlay pages: one aiohttp app (server.py) with its JSON
API, the live WebSocket hub and the JPEG/MJPEG preview of the output."""
