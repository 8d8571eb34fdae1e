"""ConfigError and the helpers that keep its message one printable line.

A leaf of the config package: the loader (loading.py) and the cross-field checks (checks.py) both raise
ConfigError, and every value or key they quote goes through `_show` / `_clip` first, so a hostile or
broken config file can never put a newline, an escape sequence or a megabyte of text on the terminal.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A problem in a config file, phrased for the streamer: file, key, expected, got. Always one printable
    line (a key or value holding a newline, a bidi control or an escape sequence is shown escaped), so
    the CLI's answer is one line on the terminal, never a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(_printable(message))


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in _clip(text, 2000))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, limit: int = 60) -> str:
    """A value for an error message: repr, clipped. A 5000-digit int has no repr (Python's int-to-str
    limit) and a 3000-deep list overflows repr's recursion: both are described instead."""
    try:
        text = repr(value)
    except ValueError:  # int too long to convert to text
        text = f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    except RecursionError:
        text = f"a {type(value).__name__} nested too deeply to show"
    return _clip(text, limit)
