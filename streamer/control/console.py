"""Console control: type a prompt into the daemon's terminal (before Twitch or the dashboard exist).

Lines are read on a thread (stdin blocks) and applied on the loop. A plain line proposes a prompt
(through moderation, like any other text); `/off`, `/on`, `/reset`, `/strength 0.6` and `/status`
are the streamer's own controls.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.app import AppContext

log = logging.getLogger(__name__)

HELP = "type a prompt and Enter; /off /on /reset /strength 0.6 /status /help"


def handle_line(ctx: AppContext, line: str) -> str:
    """Apply one console line; returns the reply to print."""
    line = line.strip()
    if not line:
        return ""
    bus = ctx.bus
    if line in ("/help", "/?"):
        return HELP
    if line == "/off":
        bus.set_enabled(False, source="console", author="streamer")
        return "model off (passthrough)"
    if line == "/on":
        bus.set_enabled(True, source="console", author="streamer")
        return "model on"
    if line == "/reset":
        ctx.pipeline.reset()
        return "model state reset"
    if line == "/status":
        return f"{ctx.pipeline.transform_status()} | prompt: {bus.current().text!r}"
    if line.startswith("/strength"):
        try:
            value = float(line.split(maxsplit=1)[1])
            bus.set_strength(value, source="console", author="streamer")
            return f"strength {value}"
        except (IndexError, ValueError) as e:
            return f"usage: /strength 0..1 ({e})"
    if line.startswith("/"):
        return f"unknown command {line.split()[0]}; {HELP}"
    verdict = bus.propose(line, source="console", author="streamer")
    return f"prompt set: {verdict.text!r}" if verdict.allowed else f"prompt rejected: {verdict.reason}"


class ConsoleControl:
    name = "console"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        print(f"console: {HELP}", flush=True)
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def reader() -> None:  # a daemon thread: a blocked readline must not hold up shutdown
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")

        threading.Thread(target=reader, name="streamer-console", daemon=True).start()
        while True:
            line = await lines.get()
            if line == "":  # EOF: no terminal (service, CI); nothing more to read
                return
            reply = handle_line(self.ctx, line)
            if reply:
                print(f"\n{reply}", flush=True)


def build(ctx: AppContext) -> ConsoleControl | None:
    if not ctx.settings.prompt.console or not ctx.interactive or sys.stdin is None or not sys.stdin.isatty():
        return None
    return ConsoleControl(ctx)
