"""Prompt transitions: the text conditioning moves from the old prompt to the new one over N chunks.

A hard switch of the cross-attention conditioning makes the picture jump; blending the encoder's
token states (then rebuilding only the cross-attention K/V from the blend) lets the new prompt fade
in over `model.transition_chunks` chunks. A prompt that arrives mid-transition starts from the blend
currently on screen, so rapid chat changes never snap back.
"""

from __future__ import annotations

from torch import Tensor


def smoothstep(a: float) -> float:
    """Ease in and out: the change starts and ends gently (a in [0, 1])."""
    a = min(max(a, 0.0), 1.0)
    return a * a * (3 - 2 * a)


class PromptTransition:
    """Holds the conditioning on screen and, while a change is under way, where it is heading."""

    def __init__(self, context: Tensor, chunks: int) -> None:
        if chunks < 1:
            raise ValueError(f"transition_chunks must be >= 1, got {chunks}")
        self.chunks = chunks
        self.current = context
        self._start = context
        self._target = context
        self._done = chunks  # chunks of the transition already shown

    @property
    def active(self) -> bool:
        return self._done < self.chunks

    @property
    def target(self) -> Tensor:
        return self._target

    def begin(self, target: Tensor) -> None:
        """Head for a new prompt's states (same shape), starting from what is on screen now."""
        if target.shape != self.current.shape:
            raise ValueError(f"text states {tuple(target.shape)} differ from the current {tuple(self.current.shape)}")
        self._start, self._target, self._done = self.current, target, 0

    def jump(self, target: Tensor) -> None:
        """Switch at once (a new stream: nothing on screen to blend from)."""
        self.current = self._start = self._target = target
        self._done = self.chunks

    def advance(self) -> Tensor | None:
        """The conditioning for the next chunk when it changed (rebuild the cross K/V), else None."""
        if not self.active:
            return None
        self._done += 1
        a = smoothstep(self._done / self.chunks)
        self.current = self._target if self._done == self.chunks else self._start.lerp(self._target, a)
        return self.current
