"""`BackgroundLoad`: one slow load (a text encoder's weights) run on its own thread while the caller goes on.

Why a plain daemon thread and not a ThreadPoolExecutor: the executor's threads are joined at interpreter exit,
so a daemon shutting down while 11 GB of umT5 weights are still being read would hang until the read ends.
Why a thread and not a process: the weights must end up in this process (on its GPU), and the read is I/O
and tensor copies, which release the GIL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class BackgroundLoad(Generic[T]):
    """Runs `load()` on a daemon thread at once; `result()` waits for it and returns its value, or raises
    its exception (every time it is asked, so a failed load is never mistaken for a finished one)."""

    def __init__(self, load: Callable[[], T], name: str) -> None:
        self._future: Future[T] = Future()
        self.waited_s = 0.0  # how long result() callers were blocked in total (start-up reports it)
        self._thread = threading.Thread(target=self._run, args=(load,), name=name, daemon=True)
        self._thread.start()

    def _run(self, load: Callable[[], T]) -> None:
        if not self._future.set_running_or_notify_cancel():
            return
        try:
            self._future.set_result(load())
        except BaseException as e:  # handed to whoever asks for the result, as if they had called load()
            self._future.set_exception(e)

    @property
    def done(self) -> bool:
        return self._future.done()

    def result(self) -> T:
        if self._future.done():
            return self._future.result()
        t0 = time.monotonic()
        try:
            return self._future.result()
        finally:
            self.waited_s += time.monotonic() - t0
