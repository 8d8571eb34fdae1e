"""Stream-batch mode on the fast path (streamer/model/fast/path.py): the slots fill eagerly, the steady
step (one DiT forward of batch `steps`, always returning a chunk) is captured as one CUDA graph.

On the CPU: the host logic, with a stand-in for the CUDA graph (the fused step in Triton's interpreter;
a capture runs no kernels, a replay runs the step's device work and leaves the host counters alone, as
CUDA's do), and the fallback when the fast path cannot run. On a GPU (`gpu`): the captured replay
against the eager fused step and the eager engine over 14 chunks, a prompt change and a reset included.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_fast_path import _engine, gpu
from torch import Tensor

from streamer.model.builder import new_engine
from streamer.model.engine import ModelTransform
from streamer.model.fast.path import FastPath, fast_path_unavailable


def _frames(engine: ModelTransform, size: int, n: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(2)
    shape = (engine.frames_per_latent, size, size, 3)
    return [torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(engine.device) for _ in range(n)]


def _stream(
    engine: ModelTransform, fast: FastPath | None, frames: list[Tensor], *, prompt_at: int, reset_at: int
) -> tuple[list[Tensor | None], list[int]]:
    """The engine (eager, or with `fast` attached as the builder attaches it) over `frames`: a prompt
    change and a reset (a new stream) mid-way. Returns each chunk's output and the slots' `filled` after it."""
    engine.fast = fast
    engine.reset()
    engine._set_cross(engine.text.encode(["first"]).to(engine.device))
    step = fast.step if fast is not None else engine.step_tensor
    outs: list[Tensor | None] = []
    filled: list[int] = []
    assert engine.state.batch is not None
    for i, f in enumerate(frames):
        if i == reset_at:  # slots, KV cache and autoencoder start over; a captured graph is kept
            engine.reset()
        if i == prompt_at:  # rewrites the cross-attention K/V in place (the buffers the graph reads)
            engine._set_cross(engine.text.encode(["second"]).to(engine.device))
        out = step(f)
        outs.append(None if out is None else out.float())
        filled.append(engine.state.batch.filled)
    engine.fast = None
    return outs, filled


def _first_steady(engine: ModelTransform) -> int:
    """The chunk of a stream that first takes the captured path: KV history full and the slots filled."""
    return max(engine.cache.history, engine.batch - 1)


class _ReplayEagerly:
    """A recorded step's stand-in on the CPU: `replay` runs its device work (the fused step), with the
    host counter the step advances in Python left as a CUDA graph's replay leaves it."""

    def __init__(self, fast: _HostGraphs, frames: Tensor, out: Tensor) -> None:
        self.fast, self.frames, self.out = fast, frames, out

    def replay(self) -> None:
        batch = self.fast.engine.state.batch
        assert batch is not None
        filled = batch.filled
        self.fast.events.append("replay")
        out = FastPath._body(self.fast, self.frames)
        assert out is not None
        self.out.copy_(out)
        batch.filled = filled


class _HostGraphs(FastPath):
    """The fast path's host logic on the CPU: which chunk fills, warms up, captures or replays."""

    def __init__(self, engine: ModelTransform) -> None:
        self.events: list[str] = []
        super().__init__(engine)

    def _body(self, frames: Tensor) -> Tensor | None:  # what `step` runs eagerly (warm-up and replay: below)
        self.events.append("eager")
        return super()._body(frames)

    def _warm_up(self) -> Tensor | None:
        self.events.append("warm-up")
        assert self._in is not None
        return FastPath._body(self, self._in)

    def _record(self, frames: Tensor) -> tuple[_ReplayEagerly, Tensor]:  # type: ignore[override]
        # A capture traces the step's Python (its host counter advances) and runs none of its kernels.
        self.events.append("capture")
        batch = self.engine.state.batch
        assert batch is not None
        batch.filled += 1
        out = torch.empty_like(frames)  # the step's output: uint8 frames of the input's size
        return _ReplayEagerly(self, frames, out), out


@pytest.mark.parametrize("steps,window", [(2, 4), (4, 3)], ids=["cache-fills-last", "slots-fill-last"])
def test_stream_batch_fills_eagerly_then_replays_one_graph(
    monkeypatch: pytest.MonkeyPatch, steps: int, window: int
) -> None:
    monkeypatch.setattr("streamer.model.fast.path.fast_path_unavailable", lambda engine: None)
    engine = _engine("tiny", 16, "cpu", torch.float32, mode="stream-batch", steps=steps, window=window)
    frames, reset_at = _frames(engine, 16, 11), 6
    want, want_filled = _stream(engine, None, frames, prompt_at=4, reset_at=reset_at)
    fast = _HostGraphs(engine)
    got, got_filled = _stream(engine, fast, frames, prompt_at=4, reset_at=reset_at)

    s = _first_steady(engine)
    assert (s == engine.cache.history) == (steps == 2)  # each case has the other condition binding
    events = fast.events
    assert events[: s + 3] == ["eager"] * s + ["warm-up", "capture", "replay"]
    assert events[s + 3 : reset_at + 1] == ["replay"] * (reset_at - s - 2)
    # the new stream fills eagerly again, then replays the kept graph: no second warm-up or capture
    assert events[reset_at + 1 :] == ["eager"] * s + ["replay"] * (len(frames) - reset_at - s)
    assert fast.replays == (reset_at - s - 1) + (len(frames) - reset_at - s)
    assert got_filled == want_filled  # `filled` counts pushes through replays too
    assert [o is None for o in got] == [o is None for o in want] == [(i % reset_at) < steps - 1 for i in range(11)]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is not None and b is not None:
            assert a.shape == b.shape, i
            assert float((a - b).abs().max()) <= 1.0, f"chunk {i}: uint8 outputs differ by more than rounding"


def test_stream_batch_with_the_fast_path_asked_for_on_the_cpu_runs_eager() -> None:
    """The builder attaches the fast path on CUDA only; the reason it gives is the device, not the mode."""
    engine = _engine("tiny", 16, "cpu", torch.float32, mode="stream-batch", steps=2)
    assert fast_path_unavailable(engine) == "needs a CUDA device (engine on cpu)"
    built = new_engine(dataclasses.replace(engine.settings, fast_path=True), engine.parts, 16, 16)
    assert built.fast is None and built.path == "eager" and built.batch == 2
    frames = _frames(built, 16, 3)
    outs = [built.step_tensor(f) for f in frames]
    assert outs[0] is None and all(o is not None for o in outs[1:])


@pytest.mark.parametrize("preset,size,steps", [("tiny", 64, 2), ("tiny", 64, 3), ("wan-1.3b", 128, 2)])
def test_stream_batch_graph_replay_matches_eager_with_prompt_change_and_reset(
    preset: str, size: int, steps: int
) -> None:
    engine = _engine(preset, size, "cuda", torch.bfloat16, mode="stream-batch", steps=steps)
    frames, prompt_at, reset_at = _frames(engine, size, 14), 6, 9
    want, want_filled = _stream(
        engine, FastPath(engine, use_graph=False), frames, prompt_at=prompt_at, reset_at=reset_at
    )
    graph = FastPath(engine)
    got, got_filled = _stream(engine, graph, frames, prompt_at=prompt_at, reset_at=reset_at)
    s = _first_steady(engine)
    assert graph._graph is not None
    assert graph.replays == (reset_at - s - 1) + (len(frames) - reset_at - s), "steady chunks replay one graph"
    assert got_filled == want_filled
    assert [o is None for o in got] == [o is None for o in want]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is None or b is None:
            continue
        diff = (a - b).abs()
        assert float(diff.mean()) < 0.5 and float((diff > 2).float().mean()) < 1e-3, f"chunk {i}: {diff.max()}"
    # and the captured stream batch stays close to the engine's own eager step (bf16: a few code values)
    plain, _ = _stream(engine, None, frames, prompt_at=prompt_at, reset_at=reset_at)
    assert [o is None for o in plain] == [o is None for o in got]
    for i, (a, b) in enumerate(zip(got, plain, strict=True)):
        if a is not None and b is not None:
            assert float((a - b).abs().mean()) < 4.0, f"chunk {i}: fast vs eager engine"


def test_the_builder_captures_stream_batch_at_start() -> None:
    """The daemon's path: `new_engine` warms up and captures at start (FastPath.prepare), resets, and a
    stream then fills eagerly and replays the graph; its output is the eager engine's within bf16 rounding."""
    engine = _engine("tiny", 64, "cuda", torch.bfloat16, mode="stream-batch", steps=2)
    built = new_engine(dataclasses.replace(engine.settings, fast_path=True), engine.parts, 64, 64)
    fast = built.fast
    assert isinstance(fast, FastPath) and fast._graph is not None and "graph captured" in built.path
    assert built.state.batch is not None and built.state.batch.filled == 0  # the warm-up stream was reset
    frames, s = _frames(built, 64, 12), _first_steady(built)
    replays = fast.replays
    got, _ = _stream(built, fast, frames, prompt_at=4, reset_at=7)
    want, _ = _stream(engine, None, frames, prompt_at=4, reset_at=7)
    assert fast.replays - replays == (7 - s) + (len(frames) - 7 - s)  # captured once, at start
    assert [o is None for o in got] == [o is None for o in want]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is not None and b is not None:
            assert float((a - b).abs().mean()) < 4.0, f"chunk {i}: fast vs eager engine"


for _m in gpu:
    test_stream_batch_graph_replay_matches_eager_with_prompt_change_and_reset = _m(
        test_stream_batch_graph_replay_matches_eager_with_prompt_change_and_reset
    )
    test_the_builder_captures_stream_batch_at_start = _m(test_the_builder_captures_stream_batch_at_start)
