"""Benchmarks: `streamer bench pipeline` (W5) and `streamer bench model` (W1-W4)."""
