"""What travels between stages, and how: fixed-shape tensors over torch.distributed send/recv.

Every message is a header (int64 [8]: kind, epoch, chunk, step, row, flags, frame height, width), then
the tensors its kind implies, their shapes fixed by the settings (`PassSpec`): nothing is negotiated on
the wire. A pass carries the residual stream and the next block's input (tokens, h), the time embedding
(e, e0) and what the last stage needs for the sampler update (the pass's input latent, the chunk's
noises and timesteps). Sends are isend with a bounded number in flight (a ring never deadlocks on them);
every receive waits with a timeout, so a dead peer is an error, never a hang.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import time
from collections import deque
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from streamer.config import ModelSettings
from streamer.model.config import DiTConfig


class Kind(enum.IntEnum):
    PASS = 1  # one DiT pass of one chunk (one stream-batch slot): activations follow
    PROMPT = 2  # new text states for the cross-attention K/V: states follow
    RESET = 3  # a new stream
    HEARTBEAT = 4  # the first stage is idle: proof of life, so an idle stage's receive never times out
    STOP = 5
    STATS = 6  # each stage reports its busy time and peak memory since the last STATS (benchmarks)


class Flag(enum.IntFlag):
    COMMIT = 1  # after this pass, keep the chunk's K/V as history (every stage, for its layers)
    FINAL = 2  # the last pass of its chunk: the last stage decodes (or drops) instead of sending it round
    EMIT = 4  # a FINAL pass whose frames go out (a stream batch still filling its slots has none)


@dataclasses.dataclass
class Header:
    kind: Kind
    epoch: int = 0
    chunk: int = 0
    step: int = 0
    row: int = 0
    flags: Flag = Flag(0)
    height: int = 0
    width: int = 0

    def pack(self, device: torch.device) -> Tensor:
        values = [int(self.kind), self.epoch, self.chunk, self.step, self.row, int(self.flags), self.height, self.width]
        return torch.tensor(values, dtype=torch.int64, device=device)

    @classmethod
    def unpack(cls, t: Tensor) -> Header:
        kind, epoch, chunk, step, row, flags, height, width = (int(v) for v in t.tolist())
        return cls(Kind(kind), epoch, chunk, step, row, Flag(flags), height, width)


HEADER_LEN = 8


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """Shapes and dtypes of a pass's tensors, from the settings (every stage computes the same)."""

    tokens: tuple[int, ...]
    time: tuple[int, ...]
    time0: tuple[int, ...]
    latent: tuple[int, ...]
    noises: tuple[int, ...]
    steps: int
    text: tuple[int, ...]
    acc: torch.dtype
    dtype: torch.dtype

    @classmethod
    def of(cls, m: ModelSettings, cfg: DiTConfig, dtype: torch.dtype, latent_channels: int) -> PassSpec:
        lh, lw = m.height // 8, m.width // 8
        n_tokens = cfg.tokens_per_frame(lh, lw)
        latent = (1, latent_channels, 1, lh, lw)
        return cls(
            tokens=(1, n_tokens, cfg.dim),
            time=(1, 1, cfg.dim),
            time0=(1, 1, 6, cfg.dim),
            latent=latent,
            noises=(m.steps, *latent),
            steps=m.steps,
            text=(1, cfg.text_len, cfg.text_dim),
            acc=torch.promote_types(dtype, torch.float32),
            dtype=dtype,
        )

    def pass_layout(self) -> list[tuple[tuple[int, ...], torch.dtype]]:
        """tokens, h, e, e0, the pass's input latent, the chunk's noises, its timesteps."""
        return [
            (self.tokens, self.acc),
            (self.tokens, self.dtype),
            (self.time, self.acc),
            (self.time0, self.acc),
            (self.latent, self.acc),
            (self.noises, self.dtype),
            ((self.steps,), torch.float32),
        ]


class LinkTimeout(RuntimeError):
    """A peer did not answer within the collective timeout (it died, or hangs)."""


class Link:
    """This stage's sends and receives. `busy_since` tells the watchdog (stage.py) how long a wait lasts."""

    def __init__(self, device: torch.device, timeout_s: float, max_in_flight: int) -> None:
        self.device, self.timeout = device, datetime.timedelta(seconds=timeout_s)
        self._in_flight: deque[tuple[dist.Work, list[Tensor]]] = deque()
        self._max = max_in_flight
        self.busy_since: float | None = None

    def send(self, dst: int, tensors: list[Tensor]) -> None:
        """isend each tensor (kept alive until sent); waits for the oldest sends beyond the bound."""
        while len(self._in_flight) >= self._max:
            work, _ = self._in_flight.popleft()
            self._wait(work, f"send to stage {dst}")
        for t in tensors:
            t = t.contiguous()
            self._in_flight.append((_work(dist.isend(t, dst)), [t]))

    def send_header(self, dst: int, header: Header, tensors: Sequence[Tensor] = ()) -> None:
        self.send(dst, [header.pack(self.device), *tensors])

    def recv(self, src: int, layout: list[tuple[tuple[int, ...], torch.dtype]]) -> list[Tensor]:
        out = [torch.empty(shape, dtype=dtype, device=self.device) for shape, dtype in layout]
        for t in out:
            self._wait(_work(dist.irecv(t, src)), f"receive from stage {src}")
        return out

    def recv_header(self, src: int) -> Header:
        (t,) = self.recv(src, [((HEADER_LEN,), torch.int64)])
        return Header.unpack(t)

    def flush(self) -> None:
        while self._in_flight:
            work, _ = self._in_flight.popleft()
            self._wait(work, "send")

    def _wait(self, work: dist.Work, what: str) -> None:
        self.busy_since = time.monotonic()
        try:
            if work.wait(self.timeout) is False:
                raise LinkTimeout(f"{what}: no answer in {self.timeout.total_seconds():g} s")
        except RuntimeError as e:
            if isinstance(e, LinkTimeout):
                raise
            raise LinkTimeout(f"{what} failed: {e}") from e
        finally:
            self.busy_since = None


def _work(work: dist.Work | None) -> dist.Work:
    """isend/irecv return a Work in a process group (None only outside one, a caller's bug)."""
    if work is None:
        raise RuntimeError("send/recv outside a process group")
    return work
