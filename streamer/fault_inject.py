"""Fault injection inside the daemon, for `streamer soak`: off unless STREAMER_FAULT_INJECT names a folder.

Some faults cannot be caused from outside the process: an exception inside the model step, or a CUDA
out-of-memory error. With `STREAMER_FAULT_INJECT=DIR` set, the model transform is wrapped in
`FaultyTransform`, whose step looks (at most every POLL_S, one `os.scandir`) for a trigger file in DIR
named `<point>.<kind>`, e.g. `model_step.exception` or `model_step.oom`; it deletes the file and raises
that fault once.

Why this is safe to ship:
- without the variable nothing is wrapped, and the step runs exactly the code it runs without this module;
- only the environment of the process turns it on, and only a file in the named folder fires it; no
  part of the daemon that the network reaches (dashboard, Twitch, OBS) sets variables or writes files,
  and whoever can set the daemon's environment could run any code as that user anyway;
- the folder must be a real folder owned by the daemon's user and not writable by group or others,
  so another local account cannot plant triggers; otherwise injection stays off and the log says why;
- a trigger's contents are never read: only its name selects one of the fixed faults below.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

from streamer.frames import Frame
from streamer.prompts import PromptState
from streamer.transform import Transform

log = logging.getLogger(__name__)

ENV = "STREAMER_FAULT_INJECT"
POLL_S = 0.2  # how often the step looks at the folder: a scandir per POLL_S, never per frame
MODEL_STEP = "model_step"
KINDS = ("exception", "oom")


class InjectedFault(RuntimeError):
    """The fault `streamer soak` asked for (an exception inside the model step)."""


def trigger_folder(environ: dict[str, str] | None = None) -> Path | None:
    """The checked folder named by STREAMER_FAULT_INJECT, or None (unset, or refused with a log line)."""
    raw = (os.environ if environ is None else environ).get(ENV, "")
    if not raw:
        return None
    folder = Path(raw)
    try:
        st = folder.lstat()
    except (OSError, ValueError) as e:
        log.error("%s=%r: fault injection off (%s)", ENV, raw[:200], getattr(e, "strerror", None) or e)
        return None
    if not stat.S_ISDIR(st.st_mode):
        why = "not a folder (a link to one is refused too)"
    elif hasattr(os, "getuid") and st.st_uid != os.getuid():
        why = "owned by another user"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        why = "writable by group or others"
    else:
        log.warning("fault injection ON (%s=%s): for `streamer soak` only, never on air", ENV, folder)
        return folder
    log.error("%s=%r: fault injection off: %s", ENV, raw[:200], why)
    return None


class FaultTrigger:
    """Polls the folder for `<point>.<kind>` files; `take(point)` consumes one and names its kind."""

    def __init__(self, folder: Path, *, poll_s: float = POLL_S) -> None:
        self.folder = folder
        self.poll_s = poll_s
        self._next_look = 0.0
        self._lock = threading.Lock()
        self.fired: list[str] = []

    def take(self, point: str) -> str | None:
        t = time.monotonic()
        if t < self._next_look:
            return None
        with self._lock:
            self._next_look = t + self.poll_s
            try:
                names = [e.name for e in os.scandir(self.folder)]
            except OSError:
                return None
            for kind in KINDS:
                name = f"{point}.{kind}"
                if name in names:
                    try:
                        (self.folder / name).unlink()
                    except OSError:  # taken by someone else, or not ours to delete: not fired
                        continue
                    self.fired.append(name)
                    return kind
        return None


def raise_fault(kind: str) -> None:
    if kind == "oom":
        import torch  # only a model (which has torch loaded already) is ever wrapped

        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by streamer soak)")
    raise InjectedFault(f"{kind} injected into the model step by streamer soak")


class FaultyTransform:
    """A model transform whose step raises the fault a trigger file asks for, once per file."""

    def __init__(self, inner: Transform, trigger: FaultTrigger) -> None:
        self.inner = inner
        self.trigger = trigger
        self.name = inner.name

    def step(self, frame: Frame, prompt: PromptState) -> list[Frame]:
        kind = self.trigger.take(MODEL_STEP)
        if kind is not None:
            raise_fault(kind)
        return self.inner.step(frame, prompt)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()

    def status(self) -> str:
        return self.inner.status()


def with_fault_injection(transform: Transform) -> Transform:
    """`transform` wrapped when STREAMER_FAULT_INJECT names a usable folder, else unchanged."""
    folder = trigger_folder()
    return transform if folder is None else FaultyTransform(transform, FaultTrigger(folder))
