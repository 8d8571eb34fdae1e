"""Prompt transitions: the text conditioning moves from the old prompt to the new one over N chunks.

A hard switch of the cross-attention conditioning makes the picture jump; blending the encoder's
token states (then rebuilding only the cross-attention K/V from the blend) lets the new prompt fade
in over `model.transition_chunks` chunks. A prompt that arrives mid-transition starts from the blend
currently on screen, so rapid chat changes never snap back.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from streamer.prompts import PromptState


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


class PromptFeed:
    """The prompt side of an engine's host wrapper, shared by the one-process engine and the pipelined one
    (streamer/model/pipeline/): a live strength change, the (cached) text encoding of a new prompt, and
    its blend over `chunks` chunks. What it decides lands through the two callbacks: the engine writes
    the cross-attention conditioning and the strength where its step reads them."""

    def __init__(
        self,
        encode: Callable[[str], Tensor],
        chunks: int,
        s_configured: float,
        set_cross: Callable[[Tensor], object],
        set_strength: Callable[[float], object],
    ) -> None:
        self._encode, self.chunks, self.s_configured = encode, chunks, s_configured
        self._set_cross, self._set_strength = set_cross, set_strength
        self.transition: PromptTransition | None = None
        self.text: str | None = None
        self.s_init = s_configured

    def sync(self, prompt: PromptState) -> None:
        """Take the prompt state of this frame: a new strength at once, a new text as a transition."""
        s_init = prompt.strength if prompt.strength is not None else self.s_configured
        if s_init != self.s_init:
            self._set_strength(s_init)
            self.s_init = s_init
        if prompt.text == self.text:
            return
        states = self._encode(prompt.text)
        if self.transition is None:
            self.transition = PromptTransition(states, self.chunks)
            self._set_cross(states)
        else:
            self.transition.begin(states)
        self.text = prompt.text

    def advance(self) -> None:
        """Before each chunk: the next blend of a transition under way."""
        if self.transition is not None and (states := self.transition.advance()) is not None:
            self._set_cross(states)

    def restart(self) -> None:
        """A new stream: nothing on screen to blend from, so the target is taken now."""
        if self.transition is not None:
            self.transition.jump(self.transition.target)
            self._set_cross(self.transition.current)
