"""`EncoderProcess`: runs a `VideoEncoder` in a child process so encoding and swscale never hold the
output thread's GIL (under CPU load, in-process encoding made the stream drop frames).

Frames travel through a few shared-memory slots; only (slot, pts) goes through a pipe. Timestamps are
taken in the parent at hand-off, so a child that lags a little does not shift the recording's timing.
When every slot is still waiting to be encoded the frame is dropped and counted: the output thread is
never blocked. The child reports each slot it has finished, and the first error it meets (disk full,
receiver gone); the parent raises that error from its next `encode()` so the pipeline's sink error
handling removes the sink as before. The child is a daemon (it dies with a parent that exits normally)
and also polls its parent's pid, so a SIGKILLed parent does not leave it behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from multiprocessing import shared_memory
from multiprocessing import util as mp_util
from typing import Any

import numpy as np

from streamer.sinks import FrameClock

SLOTS = 8  # ~0.27 s of slack at 30 fps before a frame is dropped (22 MB at 1280x720)
OPEN_TIMEOUT_S = 30.0  # spawn + import av + open the output (tcp connect); generous for a loaded 2-core box
CLOSE_TIMEOUT_S = 15.0  # flush + trailer; then the child is killed
_PARENT_POLL_S = 0.5


class EncoderOpenError(RuntimeError):
    """The child could not open the output (bad codec option, receiver not listening, unwritable path)."""


class EncoderFailed(RuntimeError):
    """The child's encoder failed while running (disk full, network closed) or the child died."""


def _child_main(target: str, kwargs: dict[str, Any], shm_name: str, shape: tuple[int, int, int], slots: int,
                work: Any, status: Any, parent_pid: int) -> None:
    # Ctrl-C in a terminal sends SIGINT to the whole foreground process group, this child too. Ending here
    # would leave the file without its trailer; the parent is the one that stops the stream, and it
    # closes us (or its pipe end closes) once the pipeline has stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Imported here so the parent need not import av just to start a child.
    from streamer.sinks.encoder import VideoEncoder

    shm = shared_memory.SharedMemory(name=shm_name)
    frames = np.ndarray((slots, *shape), np.uint8, buffer=shm.buf)
    try:
        try:
            encoder = VideoEncoder(target, **kwargs)
        except Exception as e:
            status.send(("open_failed", f"{type(e).__name__}: {e}"))
            return
        status.send(("opened", None))
        try:
            while True:
                if not work.poll(_PARENT_POLL_S):
                    if os.getppid() != parent_pid:  # reparented: the parent died without closing us
                        return
                    continue
                try:
                    item = work.recv()
                except EOFError:  # the parent died (its end closed): finish the file for whoever reads it
                    encoder.close()
                    return
                if item is None:
                    break
                slot, pts = item
                encoder.encode(frames[slot], pts)
                status.send(("free", slot))
            encoder.close()
            status.send(("closed", encoder.frames))
        except Exception as e:
            with contextlib.suppress(OSError):  # a parent that is gone hears nothing
                status.send(("failed", f"{type(e).__name__}: {e}"))
            with contextlib.suppress(Exception):
                encoder.close()
    finally:
        del frames
        shm.close()


def _kill_process(proc: Any) -> None:
    if proc.is_alive():
        proc.kill()
        proc.join(5.0)


def can_spawn() -> bool:
    """multiprocessing refuses children to a daemonic process (the bench's far-end sender is one)."""
    return not mp.current_process().daemon


class EncoderProcess:
    """The same interface as `VideoEncoder` (`encode`, `close`, `frames`), encoding in a child process.

    `dropped` counts frames refused because the child was `slots` frames behind.
    """

    def __init__(self, target: str, *, width: int, height: int, fps: float, slots: int = SLOTS,
                 **kwargs: Any) -> None:
        self.target = target
        self.clock = FrameClock(fps)
        self.shape = (height, width, 3)
        self.frames = 0  # handed to the child
        self.encoded = 0  # reported encoded by the child at close
        self.dropped = 0
        self._error: str | None = None
        self._closed = False
        ctx = mp.get_context("spawn")  # never fork a process that may hold torch/CUDA state and threads
        self._shm = shared_memory.SharedMemory(create=True, size=slots * width * height * 3)
        self._slots = np.ndarray((slots, *self.shape), np.uint8, buffer=self._shm.buf)
        self._free = list(range(slots))
        # Plain pipes, not multiprocessing queues: a queue's feeder thread needs the GIL to send, which
        # is the wait this class exists to avoid. Sends never block: at most `slots` frames (and their
        # "free" replies) are ever in flight, a few bytes each, far below a pipe's buffer.
        work_recv, self._work = ctx.Pipe(duplex=False)
        self._status, status_send = ctx.Pipe(duplex=False)
        kwargs = dict(kwargs, width=width, height=height, fps=fps)
        # daemon: killed when this process exits without closing us (and the finalizer below, for exits
        # through multiprocessing's own exit path)
        self._proc = ctx.Process(
            target=_child_main, name=f"encoder {target}", daemon=True,
            args=(target, kwargs, self._shm.name, self.shape, slots, work_recv, status_send, os.getpid()))
        try:
            self._proc.start()
            work_recv.close()  # the child's ends: closed here so a dead child reads as EOF
            status_send.close()
            # also runs when this object is collected unclosed
            mp_util.Finalize(self, _kill_process, args=(self._proc,), exitpriority=10)
            self._wait_opened()
        except BaseException:
            self._kill()
            self._release()
            raise

    def _wait_opened(self) -> None:
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            if not self._status.poll(0.1):
                if not self._proc.is_alive():
                    raise EncoderOpenError(f"the encoder process for {self.target} died on start "
                                           f"(exit code {self._proc.exitcode})") from None
                if time.monotonic() > deadline:
                    raise EncoderOpenError(f"the encoder process for {self.target} did not open it "
                                           f"within {OPEN_TIMEOUT_S:.0f} s") from None
                continue
            try:
                kind, detail = self._status.recv()
            except EOFError:  # it died before saying anything
                self._proc.join(5.0)
                raise EncoderOpenError(f"the encoder process for {self.target} died on start "
                                       f"(exit code {self._proc.exitcode})") from None
            if kind == "opened":
                return
            raise EncoderOpenError(detail)

    def _drain(self) -> None:
        """Take the child's reports: finished slots back into the free list, the first error kept."""
        while True:
            try:
                if not self._status.poll(0):
                    return
                kind, detail = self._status.recv()
            except (EOFError, OSError):
                return  # the child is gone; is_alive() says so
            if kind == "free":
                self._free.append(detail)
            elif kind == "closed":
                self.encoded = detail
            elif self._error is None:
                self._error = str(detail)

    def _raise_if_failed(self) -> None:
        self._drain()
        if self._error is None and not self._proc.is_alive():
            self._drain()  # its last words may have arrived after the first look
            if self._error is None:
                self._error = f"the encoder process exited unexpectedly (exit code {self._proc.exitcode})"
        if self._error is not None:
            raise EncoderFailed(f"encoding to {self.target} failed: {self._error}")

    def encode(self, pixels: np.ndarray) -> None:
        """Hand one HxWx3 uint8 RGB frame to the child; never waits for it to be encoded."""
        if self._closed:
            raise EncoderFailed(f"encoder for {self.target} is closed")
        self._raise_if_failed()
        pts = self.clock.next_pts()  # taken now, so a late frame still lands at its wall-clock time
        if not self._free:
            self.dropped += 1
            return
        slot = self._free.pop()
        np.copyto(self._slots[slot], pixels)
        try:
            self._work.send((slot, pts))
        except OSError as e:  # it died after the look above
            raise EncoderFailed(f"encoding to {self.target} failed: the encoder process is gone ({e})") from e
        self.frames += 1

    def close(self) -> None:
        """Let the child encode what it has, flush and write the trailer; kill it if it takes too long.

        Raises EncoderFailed when the child reported an error (the output may be incomplete).
        """
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(Exception):
                self._work.send(None)
            self._proc.join(CLOSE_TIMEOUT_S)
            if self._proc.is_alive():
                self._kill()
                self._error = self._error or f"did not finish within {CLOSE_TIMEOUT_S:.0f} s and was killed"
            self._drain()
        finally:
            self._release()
        if self._error is not None:
            raise EncoderFailed(f"encoding to {self.target} failed: {self._error}")

    def _kill(self) -> None:
        _kill_process(self._proc)

    def _release(self) -> None:
        self._work.close()
        self._status.close()
        del self._slots
        self._shm.close()
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()

    @property
    def pid(self) -> int | None:
        return self._proc.pid
