"""`PinnedUploader`: host tensors to a CUDA device through two small pinned buffers on a side stream.

Why not `tensor.to("cuda")`: from pageable memory that is a synchronous cudaMemcpy, and when the source is
a memory-mapped file the copy itself faults the pages in from disk. On the H100 (2026-12-06) the umT5
weights read on a background thread that way held up every CUDA call of the thread building the engine for
the whole 6.6 s read, so the overlap gained nothing. Here the disk read happens in a plain CPU copy into a
pinned buffer (no CUDA call in flight), and the device copy is an asynchronous DMA from that buffer, so
other threads' CUDA calls wait for no disk.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_BYTES = 64 << 20  # per buffer: big enough for full-speed DMA, small enough to pin in milliseconds


class PinnedUploader:
    """`upload(src)` -> a copy of the host tensor `src` on `device`; call `finish()` before the copies are
    used from another stream or thread (it waits for the last DMA)."""

    def __init__(self, device: torch.device, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.device = device
        self.buffers = [torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        self.freed = [torch.cuda.Event(), torch.cuda.Event()]  # recorded after the DMA that reads each buffer
        self.stream = torch.cuda.Stream(device)
        self.slot = 0

    def upload(self, src: Tensor) -> Tensor:
        out = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # `out` may reuse memory freed there
        host = src.contiguous().reshape(-1).view(torch.uint8)
        dest = out.reshape(-1).view(torch.uint8)
        size = len(self.buffers[0])
        for start in range(0, host.numel(), size):
            n = min(size, host.numel() - start)
            slot, self.slot = self.slot, self.slot ^ 1
            self.freed[slot].synchronize()  # the DMA that last read this buffer is done
            self.buffers[slot][:n].copy_(host[start : start + n])  # the disk read, if any, happens here
            with torch.cuda.stream(self.stream):
                dest[start : start + n].copy_(self.buffers[slot][:n], non_blocking=True)
                self.freed[slot].record(self.stream)
        out.record_stream(self.stream)
        return out

    def finish(self) -> None:
        self.stream.synchronize()
