"""Console control: prompts typed into the terminal go through moderation; slash commands control the engine."""

from types import SimpleNamespace

from streamer import config
from streamer.control.console import handle_line
from streamer.control.policy.plane import build_control_plane
from streamer.prompts import PromptBus, prompt_history
from streamer.store import Store


class FakePipeline:
    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1

    def transform_status(self):
        return "tiny on cpu"


def make_ctx(tmp_path):
    settings = config.load(None)
    store = Store(tmp_path / "c.db")
    bus = PromptBus("start", store=store)
    build_control_plane(settings, store, bus)
    return SimpleNamespace(settings=settings, bus=bus, pipeline=FakePipeline(), store=store)


def test_prompt_lines_are_moderated_and_recorded(tmp_path):
    ctx = make_ctx(tmp_path)
    assert handle_line(ctx, "neon city at night\n").startswith("prompt set")
    assert ctx.bus.current().text == "neon city at night" and ctx.bus.current().source == "console"
    reply = handle_line(ctx, "n.u.d.e beach")
    assert reply.startswith("prompt rejected") and ctx.bus.current().text == "neon city at night"
    assert prompt_history(ctx.store, 1)[0]["text"] == "neon city at night"


def test_slash_commands(tmp_path):
    ctx = make_ctx(tmp_path)
    assert handle_line(ctx, "/off") == "model off (passthrough)" and not ctx.bus.current().enabled
    assert handle_line(ctx, "/on") == "model on" and ctx.bus.current().enabled
    handle_line(ctx, "/reset")
    assert ctx.pipeline.resets == 1
    assert handle_line(ctx, "/strength 0.4") == "strength 0.4" and ctx.bus.current().strength == 0.4
    assert handle_line(ctx, "/strength 7").startswith("usage")
    assert "tiny on cpu" in handle_line(ctx, "/status")
    assert handle_line(ctx, "/bogus").startswith("unknown command /bogus")
    assert handle_line(ctx, "   ") == ""
