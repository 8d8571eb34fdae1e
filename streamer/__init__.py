"""streamer: a live AI video transformation daemon that sits beside OBS Studio."""

__version__ = "0.1.0"
