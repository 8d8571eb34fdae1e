"""The pipelined engine (streamer/model/pipeline/) on the CPU: gloo across 2-3 stage processes, tiny preset.

Its output must equal the one-process engine's chunk by chunk (sequential and stream-batch, prompt
changes included); a killed stage must make a model failure in bounded time, then the stages come back.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from streamer.config import Settings, from_dict
from streamer.frames import Frame
from streamer.model.builder import build_model_transform
from streamer.model.pipeline.engine import PipelinedTransform, build_pipelined
from streamer.model.pipeline.group import PipelineOptions, StageFailure
from streamer.model.refiner import refiner_of
from streamer.prompts import PromptState
from streamer.transform import Transform

H, W = 40, 72  # the pipeline's frame size, not the model's 64x64
# one thread per stage, as the reference (fixture one_thread): bit-for-bit comparisons on any machine
FAST = PipelineOptions(timeout_s=20.0, start_timeout_s=60.0, backoff_initial_s=0.2, backoff_max_s=1.0, cpu_threads=1)
PROMPTS = [PromptState(text="a watercolour painting")] * 4 + [PromptState(text="a charcoal sketch", strength=0.5)] * 6


def _settings(**over: object) -> Settings:
    base = {"width": 64, "height": 64, "steps": 2, "window": 4, "sinks": 1, "transition_chunks": 3, "dtype": "float32"}
    base.update(over)
    return from_dict({"model": base, "video": {"width": W, "height": H}})


def _frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return [Frame(np.roll(base, 5 * i, axis=1).copy(), capture_time=100.0 + i, index=i, pts=i / 30) for i in range(n)]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The reference computes on one thread, as each stage does here (2 cores shared out): a sum split over
    threads may round differently (MKL picks its split by load), and these tests compare bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(engine: Transform, frames: list[Frame]) -> list[Frame]:
    out: list[Frame] = []
    for f, p in zip(frames, PROMPTS, strict=True):
        out += engine.step(f, p)
    if isinstance(engine, PipelinedTransform):
        out += engine.drain()
    return out


def _same(got: list[Frame], want: list[Frame]) -> None:
    assert [f.capture_time for f in got] == [f.capture_time for f in want]  # same chunks, same order
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.pixels, w.pixels)


@pytest.mark.parametrize(
    ("stages", "over"),
    [
        (2, {}),  # the shipped tiny weights (a shortcut model: the step size reaches the first stage)
        (3, {"checkpoint": "random", "vae": "random", "steps": 3}),
        (2, {"checkpoint": "random", "vae": "random", "mode": "stream-batch"}),
        (3, {"checkpoint": "random", "vae": "random", "mode": "stream-batch", "steps": 3, "adaptive_sinks": True}),
    ],
    ids=["sequential-2-shipped", "sequential-3", "stream-batch-2", "stream-batch-3"],
)
def test_pipelined_output_equals_one_process_chunk_by_chunk(
    stages: int, over: dict[str, object], one_thread: None
) -> None:
    frames = _frames(len(PROMPTS))
    reference = build_model_transform(_settings(**over), warmup=False)
    if refiner_of(reference.dit) is not None:  # the shipped model's: the pipelined engine runs without it
        del reference.dit.refiner
    want = _run(reference, frames)
    pipelined = build_pipelined(_settings(**over, gpus=stages), ["cpu"] * stages, FAST)
    try:
        assert [len(range(*r)) for r in pipelined.group.layers] and len(pipelined.group.layers) == stages
        got = _run(pipelined, frames)
        assert len(want) >= len(frames) - 3  # the stream batch's fill delays a few frames in both
        _same(got, want)
        reference.reset()  # a new stream (the prompt now moves back from the last one): both alike again
        pipelined.reset()
        _same(_run(pipelined, frames), _run(reference, frames))
    finally:
        pipelined.close()


def test_a_killed_stage_is_a_model_failure_in_bounded_time_then_the_stages_restart() -> None:
    settings = _settings(checkpoint="random", vae="random", steps=1, gpus=2)
    engine = build_pipelined(settings, ["cpu", "cpu"], FAST)
    try:
        frames = _frames(6)
        assert _run_some(engine, frames[:3])
        victim = engine.group._procs[1]
        os.kill(victim.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(StageFailure, match=r"stage 1 .*killed by signal 9"):
            for f in frames[3:] * 10:
                engine.step(f, PROMPTS[0])
            engine.drain()
        assert time.monotonic() - t0 < 5.0  # seen from the process's exit, not from a collective's timeout
        assert not victim.is_alive() and not engine.group._procs  # the survivors are stopped too
        with pytest.raises(StageFailure, match="stages down after"):  # passthrough meanwhile: it says why
            engine.step(frames[0], PROMPTS[0])
        deadline = time.monotonic() + 60
        while not engine.group.ready and time.monotonic() < deadline:
            time.sleep(0.2)
        assert engine.group.ready and engine.group.generation == 2
        engine.reset()  # what the daemon does when it retries the model
        assert _run_some(engine, frames)
    finally:
        engine.close()
    assert not any(p.is_alive() for p in engine.group._procs)


def test_ctrl_c_reaching_a_stage_does_not_stop_it() -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: the daemon stops the stages as
    it shuts down, so a stage must not die of it first (a stage failure, a restart, a traceback)."""
    engine = build_pipelined(_settings(checkpoint="random", vae="random", steps=1, gpus=2), ["cpu", "cpu"], FAST)
    try:
        frames = _frames(6)
        assert _run_some(engine, frames[:3])
        for p in engine.group._procs:
            os.kill(p.pid, signal.SIGINT)
        assert _run_some(engine, frames[3:] * 2)  # still running, the same generation
        assert all(p.is_alive() for p in engine.group._procs) and engine.group.generation == 1
    finally:
        engine.close()
    assert not any(p.is_alive() for p in engine.group._procs)


def _run_some(engine: PipelinedTransform, frames: list[Frame]) -> list[Frame]:
    out: list[Frame] = []
    for f in frames:
        out += engine.step(f, PROMPTS[0])
    return out + engine.drain()


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graphs"])
def test_pipelined_on_two_gpus_equals_one_gpu(graphs: bool) -> None:
    """NCCL between cuda:0 and cuda:1, per-stage CUDA graphs on or off, against the one-GPU eager engine."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs (NCCL between stages)")
    over = {"checkpoint": "random", "vae": "random", "mode": "stream-batch", "device": "cuda"}
    frames = _frames(len(PROMPTS))
    want = _run(build_model_transform(_settings(**over, fast_path=False), warmup=False), frames)
    pipelined = build_pipelined(_settings(**over, fast_path=graphs, gpus=2), ["cuda:0", "cuda:1"], FAST)
    try:
        _same(_run(pipelined, frames), want)
    finally:
        pipelined.close()
