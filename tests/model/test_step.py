"""One chunk step, one forward: the eager engine and the fast path run the very same code objects.

A profiler hook records every Python function entered while each path steps a chunk; both must enter
`streamer.model.step.chunk_step` and `DiT.forward` (the fast path swaps the ops, never the step or the
model). On a CPU the fast path's fused kernels run in Triton's interpreter, without the CUDA graph.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType

import torch
from test_fast_path import _engine

from streamer.model import step as step_module
from streamer.model.dit import DiT
from streamer.model.fast.ops import FusedOps
from streamer.model.fast.path import FastPath
from streamer.model.ops import DiTOps


def _entered(fn: Callable[[], object]) -> set[CodeType]:
    seen: set[CodeType] = set()

    def hook(frame, event, _arg) -> None:  # noqa: ANN001
        if event == "call":
            seen.add(frame.f_code)

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def test_eager_and_fast_paths_run_the_same_chunk_step_and_forward() -> None:
    engine = _engine("tiny", 16, "cpu", torch.float32)
    frames = torch.randint(0, 256, (1, 16, 16, 3), dtype=torch.uint8)
    eager = _entered(lambda: engine.step_tensor(frames))
    engine.reset()
    fast = FastPath(engine, use_graph=False)
    fused = _entered(lambda: fast.step(frames))
    for code in (step_module.chunk_step.__code__, DiT.forward.__code__):
        assert code in eager and code in fused, code.co_name
    # and the ops differ where they should: the eager reference in one, the fused kernels in the other
    assert DiTOps.self_attention.__code__ in eager and DiTOps.self_attention.__code__ not in fused
    assert FusedOps.self_attention.__code__ in fused and FusedOps.self_attention.__code__ not in eager
