"""PromptTransition: the blend from old to new text states over N chunks, mid-change restarts."""

from __future__ import annotations

import pytest
import torch

from streamer.model.transitions import PromptTransition, smoothstep


def test_blend_reaches_the_target_in_exactly_n_chunks() -> None:
    old, new = torch.zeros(1, 4, 2), torch.ones(1, 4, 2)
    tr = PromptTransition(old, chunks=4)
    assert not tr.active and tr.advance() is None
    tr.begin(new)
    values = [tr.advance() for _ in range(4)]
    assert [v[0, 0, 0].item() for v in values] == pytest.approx([smoothstep(k / 4) for k in (1, 2, 3, 4)])
    assert torch.equal(values[-1], new) and not tr.active and tr.advance() is None


def test_change_mid_transition_starts_from_the_screen() -> None:
    tr = PromptTransition(torch.zeros(2), chunks=2)
    tr.begin(torch.ones(2))
    shown = tr.advance()
    assert shown is not None and shown[0].item() == pytest.approx(0.5)
    tr.begin(torch.full((2,), -1.0))
    nxt = tr.advance()
    assert nxt is not None and nxt[0].item() == pytest.approx(0.5 + (-1.0 - 0.5) * 0.5)
    tr.jump(torch.full((2,), 3.0))
    assert not tr.active and tr.current[0].item() == 3.0
    with pytest.raises(ValueError, match="differ"):
        tr.begin(torch.zeros(3))
    with pytest.raises(ValueError):
        PromptTransition(torch.zeros(1), chunks=0)
