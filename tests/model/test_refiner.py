"""The pixel refiner (streamer/model/refiner.py): a fresh one is the identity; the loader attaches one from
refiner.safetensors (float32 whatever the DiT's dtype) and names a wrong or broken file; the engine refines
each chunk with that chunk's own input frames and the current prompt's vector; stream-batch and the
pipelined engine refuse it; checkpoints and widening treat it as its own file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from streamer.cli import main as cli_main
from streamer.config import ModelSettings
from streamer.frames import Frame
from streamer.model.dit import DiT
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts, load_parts
from streamer.model.refiner import REFINER_FILE, PixelRefiner, check_refiner_state_dict, refiner_of
from streamer.model.step import skips_refiner
from streamer.model.weights.checkpoints import CheckpointError, load_dit
from streamer.prompts import PromptState
from streamer.train.checkpoint import save_dit
from streamer.train.widen import widen_checkpoint
from tests.model.test_input_conditioned import SMALL, _frames, _run, _settings


def _live(refiner: PixelRefiner, seed: int = 3) -> PixelRefiner:
    """The refiner with random (non-zero) head and prompt weights: it changes its input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (refiner.head, refiner.film):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.1)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)
    return refiner


def _with_refiner(parts: LoadedParts, refiner: PixelRefiner) -> LoadedParts:
    dit = DiT(parts.dit.cfg)
    dit.load_state_dict(parts.dit.state_dict())
    dit.refiner = refiner
    return dataclasses.replace(parts, dit=dit.eval().requires_grad_(False))


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> LoadedParts:
    return load_parts(_settings(cache_dir=str(tmp_path_factory.mktemp("cache"))), torch.device("cpu"))


def test_a_fresh_refiner_returns_the_decoded_frames_exactly() -> None:
    refiner = PixelRefiner(32, filters=4, hidden=8, kernel=5)
    decoded, frames = torch.rand(2, 3, 12, 20), torch.rand(2, 3, 12, 20)
    look = refiner.prompt_vector(torch.randn(1, 6, 32))
    assert torch.equal(refiner(decoded, frames, look), decoded)
    live = _live(refiner)
    assert not torch.allclose(live(decoded, frames, live.prompt_vector(torch.randn(1, 6, 32))), decoded)


def test_its_filters_start_as_gaussian_blurs() -> None:
    refiner = PixelRefiner(8, filters=3, hidden=4, kernel=9)
    flat = torch.full((1, 1, 16, 16), 0.25)  # a blur of a flat picture is the same flat picture (reflect padding)
    blurred = refiner.cols(refiner.rows(flat))
    torch.testing.assert_close(blurred, flat.expand(1, 3, 16, 16))
    widths = [float((refiner.rows.weight[i, 0, 0].detach() * (torch.arange(9) - 4) ** 2).sum()) for i in range(3)]
    assert widths == sorted(widths) and widths[0] < widths[-1]  # from fine to coarse


def test_the_shape_checks_name_what_is_wrong() -> None:
    sd = PixelRefiner(32, 4, 8, 5).state_dict()
    assert check_refiner_state_dict(sd, 32) == []
    assert check_refiner_state_dict(sd, 384) == ["its prompt layer takes text_dim 32, the DiT's text encoder gives 384"]
    assert check_refiner_state_dict({k: v for k, v in sd.items() if k != "film.weight"}, 32) == [
        "missing keys film.weight"
    ]
    bad = {**sd, "mid.weight": torch.zeros(8, 9)}
    assert check_refiner_state_dict(bad, 32) == ["1 mis-shaped keys (file vs model): mid.weight [8, 9] vs [8, 8]"]
    assert check_refiner_state_dict({**sd, "extra": torch.zeros(1)}, 32) == ["1 unexpected keys: extra"]


def test_the_loader_attaches_it_in_float32_and_inspect_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dit = DiT(SMALL)
    dit.refiner = _live(PixelRefiner(SMALL.text_dim, 4, 8, 5))
    save_dit(tmp_path, dit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", REFINER_FILE]
    loaded, report = load_dit(tmp_path, dtype=torch.bfloat16)
    refiner = refiner_of(loaded)
    assert refiner is not None and "+ pixel refiner" in report
    assert {p.dtype for p in refiner.parameters()} == {torch.float32}  # kept float32 beside a bf16 DiT
    assert loaded.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    for k, v in dit.refiner.state_dict().items():
        assert torch.equal(refiner.state_dict()[k], v)
    assert cli_main(["model", "inspect", str(tmp_path)]) == 0
    assert f"refiner:    pixel refiner ({REFINER_FILE}, " in capsys.readouterr().out


def test_a_wrong_or_truncated_refiner_file_is_named(tmp_path: Path) -> None:
    dit = DiT(SMALL)
    save_dit(tmp_path, dit)
    save_file(PixelRefiner(SMALL.text_dim + 1, 4, 8, 5).state_dict(), str(tmp_path / REFINER_FILE))
    with pytest.raises(CheckpointError, match=f"{REFINER_FILE}: its prompt layer takes text_dim 33"):
        load_dit(tmp_path)
    data = (tmp_path / REFINER_FILE).read_bytes()
    (tmp_path / REFINER_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=REFINER_FILE):
        load_dit(tmp_path)


def test_the_engine_refines_each_chunk_with_its_own_input(parts: LoadedParts, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _frames(3)
    refiner = _live(PixelRefiner(parts.dit.cfg.text_dim, 4, 8, 5))
    engine = ModelTransform(_settings(), _with_refiner(parts, refiner))
    inputs: list[torch.Tensor] = []  # each chunk's frames at model size, as the step made them
    to_model = engine.ops.to_model
    monkeypatch.setattr(engine.ops, "to_model", lambda f: inputs.append(to_model(f)) or inputs[-1])
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    original = PixelRefiner.forward

    def spy(self: PixelRefiner, decoded: torch.Tensor, x: torch.Tensor, look: torch.Tensor) -> torch.Tensor:
        seen.append((decoded, x, look.clone()))
        return original(self, decoded, x, look)

    monkeypatch.setattr(PixelRefiner, "forward", spy)
    out = _run(engine, frames)
    assert len(seen) == 3 and len(out) == 3 * parts.vae.frames_per_latent
    prompt = engine.text.encode([PromptState(text="a watercolour painting").text])
    want_look = refiner.prompt_vector(prompt)
    for i, (decoded, x, look) in enumerate(seen):
        assert torch.equal(x, inputs[i][-decoded.shape[0] :])
        torch.testing.assert_close(look, want_look)
    monkeypatch.undo()
    plain = _run(ModelTransform(_settings(), parts), frames)
    assert any(not np.array_equal(a, b) for a, b in zip(out, plain, strict=True))
    fresh = _run(
        ModelTransform(_settings(), _with_refiner(parts, PixelRefiner(parts.dit.cfg.text_dim, 4, 8, 5))), frames
    )
    for a, b in zip(fresh, plain, strict=True):
        np.testing.assert_array_equal(a, b)  # a fresh refiner changes nothing


def test_a_prompt_change_rewrites_the_prompt_vector_in_place(parts: LoadedParts) -> None:
    refiner = _live(PixelRefiner(parts.dit.cfg.text_dim, 4, 8, 5))
    m: ModelSettings = _settings(transition_chunks=1)
    engine = ModelTransform(m, _with_refiner(parts, refiner))
    buffer = engine.state.look
    assert buffer is not None
    vectors = []
    pixels = _frames(1)[0].pixels
    for i, text in enumerate(("noir film", "neon outlines")):
        for j in (2 * i, 2 * i + 1):  # a chunk into the change and one after it
            engine.step(Frame(pixels, capture_time=float(j), index=j, pts=j / 30), PromptState(text=text))
        assert engine.state.look is buffer  # the same storage a captured graph reads
        vectors.append(buffer.clone())
        torch.testing.assert_close(buffer, refiner.prompt_vector(engine.text.encode([text])))
    assert not torch.equal(vectors[0], vectors[1])


def test_stream_batch_and_the_pipelined_engine_run_without_the_refiner_and_say_so(
    parts: LoadedParts, caplog: pytest.LogCaptureFixture
) -> None:
    refined = _with_refiner(parts, _live(PixelRefiner(parts.dit.cfg.text_dim, 4, 8, 5)))
    frames = _frames(4)
    with caplog.at_level("WARNING"):
        batched = ModelTransform(_settings(mode="stream-batch"), refined)
    assert batched.state.look is None and "stream-batch mode runs this model without its pixel refiner" in caplog.text
    plain = _run(ModelTransform(_settings(mode="stream-batch"), dataclasses.replace(refined, dit=parts.dit)), frames)
    got = _run(batched, frames)
    assert len(got) == len(plain) > 0
    for a, b in zip(got, plain, strict=True):
        np.testing.assert_array_equal(a, b)  # the unrefined model's output, not a refusal
    assert "pipelined engine (model.gpus > 1) runs this model without" in skips_refiner(
        refined.dit, "sequential", pipelined=True
    )
    assert skips_refiner(refined.dit, "sequential") == "" and skips_refiner(parts.dit, "stream-batch") == ""


def test_widening_leaves_the_refiner_behind(tmp_path: Path) -> None:
    dit = DiT(SMALL)
    dit.refiner = PixelRefiner(SMALL.text_dim, 4, 8, 5)
    save_dit(tmp_path / "src", dit)
    wide = widen_checkpoint(tmp_path / "src", tmp_path / "out")
    assert refiner_of(wide) is None and not (tmp_path / "out" / REFINER_FILE).exists()
    assert not any(k.startswith("refiner.") for k in wide.state_dict())


HAS_CUDA = torch.cuda.is_available()


def _fast_engine(device: str, dtype: torch.dtype, size: int) -> ModelTransform:
    """Tiny on seeded random weights with a live refiner, for the fast path."""
    from streamer.model.dit import build
    from streamer.model.text import RandomTextEncoder
    from streamer.model.vae import tiny_taehv

    torch.manual_seed(0)
    dit = build("tiny", device=device, dtype=dtype)
    dit.refiner = _live(PixelRefiner(dit.cfg.text_dim, 4, 8, 5)).to(device)
    vae = tiny_taehv().to(device=device, dtype=dtype).eval()
    parts = LoadedParts(torch.device(device), dtype, dit.eval(), vae, RandomTextEncoder(64, 384), {}, ["DiT"])
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    return ModelTransform(_settings(width=size, height=size, dtype=name, device=device), parts)


def _stream(engine: ModelTransform, step: object, frames: list[torch.Tensor], prompt: str) -> list[torch.Tensor]:
    engine.reset()
    engine._set_cross(engine.text.encode([prompt]).to(engine.device))
    return [step(f).float() for f in frames]  # type: ignore[operator]


def _frame_tensors(n: int, size: int, device: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (1, size, size, 3), generator=gen, dtype=torch.uint8).to(device) for _ in range(n)]


def test_the_fused_step_refines_like_the_eager_engine() -> None:
    """On a CPU the fused kernels run in Triton's interpreter, without the graph."""
    from streamer.model.fast.path import FastPath

    device = "cuda" if HAS_CUDA else "cpu"
    engine = _fast_engine(device, torch.float32, 16)
    frames = _frame_tensors(3, 16, device)
    want = _stream(engine, engine.step_tensor, frames, "a prompt")
    got = _stream(engine, FastPath(engine, use_graph=False).step, frames, "a prompt")
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert float((a - b).abs().max()) <= 1.0, f"chunk {i}: uint8 outputs differ by more than rounding"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (graph capture)")
def test_the_captured_graph_refines_each_chunk_with_its_input_and_the_current_prompt() -> None:
    """The refiner runs inside the captured step: replays must use each chunk's frames and the prompt vector
    a prompt change rewrote in place (two prompts, one graph)."""
    from streamer.model.fast.path import FastPath

    engine = _fast_engine("cuda", torch.bfloat16, 64)
    frames = _frame_tensors(8, 64, "cuda")
    eager = FastPath(engine, use_graph=False)
    graph = FastPath(engine)
    for prompt in ("noir film", "neon outlines"):
        want = _stream(engine, eager.step, frames, prompt)
        got = _stream(engine, graph.step, frames, prompt)
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            diff = (a - b).abs()
            assert float(diff.mean()) < 0.5 and float((diff > 2).float().mean()) < 1e-3, f"{prompt} {i}: {diff.max()}"
    assert graph._graph is not None and graph.replays >= 6


def test_the_shipped_tiny_model_carries_its_refiner() -> None:
    """v5 (docs/training.md): the package's embedded folder holds refiner.safetensors, and it fits the DiT."""
    from streamer.model.loading import EMBEDDED_DIR

    assert (EMBEDDED_DIR / REFINER_FILE).is_file()
    dit, report = load_dit(EMBEDDED_DIR)
    refiner = refiner_of(dit)
    assert refiner is not None and "+ pixel refiner" in report
    assert refiner.text_dim == dit.cfg.text_dim and float(refiner.head.weight.abs().max()) > 0  # trained, not fresh
