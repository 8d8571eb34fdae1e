"""A stage's blocks as CUDA graphs: one per stream-batch row, replayed once the KV history is full.

On a GPU a stage's share of a pass is many small launches; captured, it is one. The captured region is
the stage's blocks over static input buffers (tokens, h, e, e0); the prologue (first stage), the head
and sampler update (last stage), the cache commit and the send/recv stay outside, eager. The first
steady pass of a row runs on a side stream as the capture's warm-up (as the one-process fast path
does), the next is captured. Untested on the CPU machines this was written on: the next session with
GPUs measures it (docs/multi-gpu.md); `model.fast_path = false` turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)


class StageGraphs:
    """`run(row)` computes the stage's blocks from `inputs` (static buffers the caller fills first)."""

    def __init__(self, run: Callable[[int], tuple[Tensor, Tensor]], inputs: list[Tensor]) -> None:
        self.run, self.inputs = run, inputs
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[Tensor, Tensor]]] = {}
        self.warmed: set[int] = set()

    def __call__(self, row: int, values: list[Tensor], steady: bool) -> tuple[Tensor, Tensor]:
        for buf, v in zip(self.inputs, values, strict=True):
            buf.copy_(v)
        if not steady:
            return self.run(row)
        if row in self.graphs:
            graph, out = self.graphs[row]
            graph.replay()
        elif row not in self.warmed:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.run(row)
            torch.cuda.current_stream().wait_stream(side)
            self.warmed.add(row)
        else:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.run(row)
            self.graphs[row] = (graph, out)
            graph.replay()
            log.info("pipeline stage: captured row %d's blocks as a CUDA graph", row)
        return out[0].clone(), out[1].clone()  # the next replay overwrites them; a send may still read them
