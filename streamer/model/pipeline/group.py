"""The driver's side of the stage processes: how many, start, wait, watch, restart with backoff.

The daemon's own process is not in the process group: it talks to the first stage through a queue
(chunks in) and hears from every stage through another (ready, results, errors). So the daemon never
waits on a collective: every wait here is a queue read with a timeout, with the processes' liveness
checked between reads. A stage that dies, runs out of memory or stops answering makes `StageFailure`:
the group kills what is left at once (a stuck NCCL peer must not keep the GPUs) and a background thread
starts a new set after a backoff (1 s, 2 s, 4 s ... up to `backoff_max_s`), while the engine raises
`StageFailure` and the daemon runs passthrough and says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import socket
import threading
import time
from typing import Any

import torch
import torch.multiprocessing as mp

from streamer.config import ModelSettings
from streamer.model.config import preset
from streamer.model.loading import ModelLoadError, resolve_device
from streamer.model.pipeline.worker import StageArgs, stage_main

log = logging.getLogger(__name__)


class StageFailure(RuntimeError):
    """A pipeline stage died, ran out of memory or stopped answering (the model failed: passthrough)."""


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    timeout_s: float = 60.0  # every send/recv between stages, and the wait for a chunk's output
    start_timeout_s: float = 900.0  # start: each stage loads the checkpoint (minutes for wan-14b) and joins
    backoff_initial_s: float = 1.0  # first restart after a failure; doubling up to backoff_max_s
    backoff_max_s: float = 60.0
    layers: tuple[tuple[int, int], ...] | None = None  # fixed stage ranges (tests); None = measured at start
    cpu_threads: int = 0  # CPU stages: intra-op threads each; 0 = the cores shared out


def stage_devices(m: ModelSettings) -> list[str]:
    """The device of each stage for `model.gpus`: consecutive CUDA GPUs from model.device's, or CPU
    processes (gloo; for tests and development). One stage = the one-process engine. Errors name the key."""
    if m.gpus == 1:
        return [str(resolve_device(m.device))]
    device = resolve_device(m.device)
    if device.type == "cuda":
        first = device.index or 0
        visible = torch.cuda.device_count() - first
        n = visible if m.gpus == "all" else m.gpus
        if n > visible:
            raise ModelLoadError(
                f"model.gpus = {m.gpus} but only {visible} CUDA GPU(s) are visible from {device} "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); lower model.gpus"
            )
        devices = [f"cuda:{first + i}" for i in range(n)]
    elif device.type == "cpu":
        if m.gpus == "all":
            raise ModelLoadError(
                "model.gpus = 'all' counts CUDA GPUs, but the model runs on the CPU; name a number of CPU "
                "processes instead (gloo: for tests and development)"
            )
        devices = ["cpu"] * m.gpus
    else:
        raise ModelLoadError(f"model.gpus > 1 needs CUDA GPUs (NCCL) or the CPU (gloo); model.device is {device}")
    layers = preset(m.preset).num_layers
    if len(devices) > layers:
        raise ModelLoadError(f"model.gpus = {m.gpus}: {m.preset} has {layers} layers, at most one stage each")
    return devices


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StageGroup:
    """N stage processes: started, watched, and restarted after a failure (see the module docstring)."""

    def __init__(
        self, m: ModelSettings, devices: list[str], frame_hw: tuple[int, int], options: PipelineOptions
    ) -> None:
        self.m, self.devices, self.frame_hw, self.options = m, devices, frame_hw, options
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._procs: list[Any] = []
        self._inbox: Any = None
        self._outbox: Any = None
        self.ready = False
        self.generation = 0  # counts successful starts: the engine resends its prompt to a new set
        self.failures = 0  # consecutive failed starts/runs, for the backoff
        self.last_failure = ""
        self.restart_at: float | None = None
        self.layers: list[tuple[int, int]] = []
        self.sources: dict[str, str] = {}
        self.costs: Any = None
        self.frames_per_latent = 1
        self.stats: list[tuple[Any, ...]] = []
        self.held: list[tuple[Any, ...]] = []  # results read while waiting for statistics: the engine takes them
        self._restarter: threading.Thread | None = None

    @property
    def size(self) -> int:
        return len(self.devices)

    # ---- start ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn the stages and wait until each has loaded and placed its layers (StageFailure if not)."""
        n, cpu = self.size, self.devices[0] == "cpu"
        threads = (self.options.cpu_threads or max(1, (os.cpu_count() or 1) // n)) if cpu else 1
        port = _free_port()
        inbox, outbox = self._ctx.Queue(), self._ctx.Queue()
        procs = []
        for rank, device in enumerate(self.devices):
            args = StageArgs(rank, n, self.m, device, port, self.options.timeout_s, self.options.start_timeout_s,
                             self.frame_hw, threads, self.options.layers)  # fmt: skip
            p = self._ctx.Process(
                target=stage_main,
                args=(args, inbox if rank == 0 else None, outbox, os.getpid()),
                name=f"streamer-stage-{rank}",
                daemon=True,
            )
            p.start()
            procs.append(p)
        with self._lock:
            self._procs, self._inbox, self._outbox = procs, inbox, outbox
        ready: dict[int, tuple[Any, ...]] = {}
        deadline = time.monotonic() + self.options.start_timeout_s
        while len(ready) < n:
            if time.monotonic() > deadline:
                raise self.fail(f"the stages did not start within {self.options.start_timeout_s:g} s")
            for msg in self._read(0.2):
                if msg[0] == "ready":
                    ready[msg[1]] = msg
        self.layers = [ready[r][2] for r in range(n)]
        self.sources = {"DiT": ready[0][3], "autoencoder": ready[0][4]}
        self.costs, self.frames_per_latent = ready[0][5], ready[0][6]
        with self._lock:
            self.ready, self.generation = True, self.generation + 1
        log.info("pipeline: %d stages ready (%s), layers %s", n, ", ".join(self.devices), self.describe_layers())

    # ---- run ------------------------------------------------------------------------------------------
    def check(self) -> None:
        """StageFailure unless the stages are up (while a restart is pending, say when it comes)."""
        if self.ready:
            return
        when = (
            "" if self.restart_at is None else f"; next start in {max(0.0, self.restart_at - time.monotonic()):.0f} s"
        )
        raise StageFailure(f"pipeline stages down after: {self.last_failure}{when}")

    def submit(self, msg: tuple[Any, ...]) -> None:
        self.check()
        self._inbox.put(msg)

    def results(self, timeout: float) -> list[tuple[Any, ...]]:
        """The stages' result messages within `timeout` (0: those already there); StageFailure on an error."""
        self.check()
        msgs = self._read(timeout)
        self.stats += [msg[1:] for msg in msgs if msg[0] == "stats"]
        return [msg for msg in msgs if msg[0] == "result"]

    def stage_stats(self, timeout: float) -> list[tuple[int, float, float, float]]:
        """(rank, busy s, wall s, peak GB) of every stage since the last call: asked through the pipeline,
        so it comes after the chunks already handed in (results that come meanwhile are kept, in order)."""
        self.stats = []
        self.submit(("stats",))
        deadline = time.monotonic() + timeout
        while len(self.stats) < self.size:
            if time.monotonic() > deadline:
                raise self.fail(f"no stage statistics within {timeout:g} s")
            self.held += self.results(0.1)
        return sorted(self.stats)

    def _read(self, timeout: float) -> list[tuple[Any, ...]]:
        """Messages from the stages (waiting up to `timeout` for the first); an error message or a dead
        process becomes StageFailure."""
        out: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + timeout
        while True:
            wait = deadline - time.monotonic()
            try:
                msg = self._outbox.get(timeout=min(0.1, wait)) if wait > 0 else self._outbox.get_nowait()
            except queue.Empty:
                msg = None
            if msg is not None and msg[0] == "error":
                _, rank, text, trace = msg
                log.debug("stage %d traceback:\n%s", rank, trace)
                raise self.fail(self._root_cause(f"stage {rank} ({self.devices[rank]}) {text}"))
            if msg is not None:
                out.append(msg)
                deadline = 0.0  # then only what is already there
                continue
            if any(p.exitcode is not None for p in self._procs):
                raise self.fail(self._root_cause(self._drained_error()))
            if out or time.monotonic() >= deadline:
                return out

    def _drained_error(self) -> str | None:
        """A stage that failed says why before it exits: its words, if they come within a moment."""
        try:
            while True:
                msg = self._outbox.get(timeout=0.3)
                if msg[0] == "error":
                    return f"stage {msg[1]} ({self.devices[msg[1]]}) {msg[2]}"
        except queue.Empty:
            return None

    def _root_cause(self, reported: str | None) -> str:
        """Name the process that died first: a stage killed from outside (OOM killer, a signal) makes its
        peers fail with a broken connection, and that is not the news."""
        deadline = time.monotonic() + 0.5  # the dead one's exit may lag its peer's report
        while time.monotonic() < deadline and not any(p.exitcode for p in self._procs):
            time.sleep(0.05)
        dead = [(r, p.exitcode) for r, p in enumerate(self._procs) if p.exitcode]
        killed = [(r, c) for r, c in dead if c < 0]
        if not (killed or (dead and reported is None)):
            return reported or "a stage exited"
        rank, code = (killed or dead)[0]
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        cause = f"stage {rank} ({self.devices[rank]}, pid {self._procs[rank].pid}) {how}"
        return cause if reported is None else f"{cause}; then {reported}"

    # ---- failure and restart ----------------------------------------------------------------------------
    def fail(self, reason: str) -> StageFailure:
        """Stop every stage now, schedule a restart with backoff; the failure to raise."""
        with self._lock:
            procs, self._procs, self.ready = self._procs, [], False
            self.last_failure, self.failures = reason, self.failures + 1
            delay = min(self.options.backoff_initial_s * 2 ** (self.failures - 1), self.options.backoff_max_s)
            # only a set that once ran is restarted: a first start that fails is a load failure
            retry = self.generation > 0 and not self._closed.is_set()
            self.restart_at = time.monotonic() + delay if retry else None
        _stop(procs)
        log.error("pipeline: %s%s", reason, f"; restarting the stages in {delay:.0f} s" if self.restart_at else "")
        if self.restart_at is not None and (self._restarter is None or not self._restarter.is_alive()):
            self._restarter = threading.Thread(target=self._restart, name="streamer-stage-restart", daemon=True)
            self._restarter.start()
        return StageFailure(reason)

    def _restart(self) -> None:
        while self.restart_at is not None and not self._closed.wait(max(0.0, self.restart_at - time.monotonic())):
            try:
                self.start()
            except StageFailure:
                continue  # _kill scheduled the next try, further off
            self.restart_at = None
            return

    def healthy(self) -> None:
        """A chunk came out: the backoff starts from the beginning at the next failure."""
        self.failures = 0

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            procs, self._procs, self.ready, self.restart_at = self._procs, [], False, None
            inbox = self._inbox
        if inbox is not None and procs:
            inbox.put(("stop",))
        _stop(procs, grace_s=5.0)

    def describe_layers(self) -> str:
        return " | ".join(f"{a}-{b - 1}" for a, b in self.layers)


def _stop(procs: list[Any], grace_s: float = 0.0) -> None:
    """Let the processes exit within grace_s, then terminate, then kill: none is left behind."""
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=2.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=2.0)
