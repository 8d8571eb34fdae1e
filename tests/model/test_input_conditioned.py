"""Input-conditioned DiTs (in_dim = 2 x out_dim): every pass gets the chunk's clean input latent.

The engine runs one end to end on the CPU and hands each pass exactly what the autoencoder encoded (in a
stream batch, each slot its own chunk's); the pipelined engine's stream batch refuses one; the loader reads in_dim from config.json (and names a wrong one); the
daemon's preset check accepts the conditioned variant of tiny; `model inspect` says what it is.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.cli import main as cli_main
from streamer.config import ModelSettings, from_dict
from streamer.frames import Frame
from streamer.model.config import DiTConfig, preset
from streamer.model.dit import DiT, conditions_on_input
from streamer.model.engine import ModelTransform
from streamer.model.loading import LoadedParts, load_parts, preset_mismatch
from streamer.model.step import refuse_stream_batch
from streamer.model.weights.checkpoints import CheckpointError, load_dit
from streamer.prompts import PromptState
from streamer.train.checkpoint import save_dit_weights
from streamer.train.widen import widen_input, widen_luma

H, W = 40, 72
PROMPT = PromptState(text="a watercolour painting")
SMALL = DiTConfig(dim=64, num_layers=2, num_heads=2, ffn_dim=96, text_dim=32, text_len=8)


def _settings(**over: object) -> ModelSettings:
    base = {"width": 64, "height": 64, "steps": 2, "window": 4, "sinks": 1, "dtype": "float32",
            "checkpoint": "random", "vae": "random"}  # fmt: skip
    return from_dict({"model": {**base, **over}}).model


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> LoadedParts:
    return load_parts(_settings(cache_dir=str(tmp_path_factory.mktemp("cache"))), torch.device("cpu"))


def _conditioned(parts: LoadedParts, *, live: bool) -> LoadedParts:
    """The parts with the DiT widened; live=True gives the condition channels random (non-zero) weights."""
    wide = widen_input(parts.dit)
    if live:
        with torch.no_grad():
            torch.manual_seed(5)
            w = wide.patch_embedding.weight
            w[:, parts.dit.cfg.out_dim :].normal_(0, 0.05)
    return dataclasses.replace(parts, dit=wide.eval().requires_grad_(False))


def _frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return [Frame(np.roll(base, 4 * i, axis=1).copy(), capture_time=100.0 + i, index=i, pts=i / 30) for i in range(n)]


def _run(engine: ModelTransform, frames: list[Frame]) -> list[np.ndarray]:
    return [o.pixels for f in frames for o in engine.step(f, PROMPT)]


def _spy_conditions(
    engine: ModelTransform, monkeypatch: pytest.MonkeyPatch, op: str = "encode"
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Record what the engine's `op` returns (the autoencoder's latent; "to_model": the frames at model size)
    and the condition each DiT forward gets (which must be there, on the noisy latent's batch and grid), in
    call order: (returned, conds), filled as the engine runs."""
    returned: list[torch.Tensor] = []
    conds: list[torch.Tensor] = []
    original, patchify = getattr(engine.ops, op), DiT.patchify

    def spy_op(x: torch.Tensor) -> torch.Tensor:
        returned.append(original(x))
        return returned[-1]

    def spy_patchify(self: DiT, x: torch.Tensor, cond: torch.Tensor | None = None) -> object:
        assert cond is not None and (cond.shape[0], *cond.shape[2:]) == (x.shape[0], *x.shape[2:])
        conds.append(cond.clone())
        return patchify(self, x, cond)

    monkeypatch.setattr(engine.ops, op, spy_op)
    monkeypatch.setattr(DiT, "patchify", spy_patchify)
    return returned, conds


def test_the_engine_hands_every_pass_the_chunks_clean_latent(
    parts: LoadedParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    wide = _conditioned(parts, live=True)
    assert conditions_on_input(wide.dit) and not conditions_on_input(parts.dit)
    engine = ModelTransform(_settings(), wide)
    encoded, conds = _spy_conditions(engine, monkeypatch)
    frames = _frames(4)
    out = _run(engine, frames)
    assert len(out) == 4 and all(o.shape == (H, W, 3) and o.dtype == np.uint8 and o.std() > 0 for o in out)
    assert len(encoded) == 4 and len(conds) == 8  # 2 steps: both passes of a chunk get its clean latent
    for i, z in enumerate(encoded):
        assert torch.equal(conds[2 * i], z) and torch.equal(conds[2 * i + 1], z)
    monkeypatch.undo()
    plain = _run(ModelTransform(_settings(), parts), frames)
    assert any(not np.array_equal(a, b) for a, b in zip(out, plain, strict=True))  # the condition is read


def test_a_freshly_widened_dit_streams_exactly_what_the_original_did(parts: LoadedParts) -> None:
    frames = _frames(4)
    plain = _run(ModelTransform(_settings(), parts), frames)
    widened = _run(ModelTransform(_settings(), _conditioned(parts, live=False)), frames)
    for a, b in zip(plain, widened, strict=True):
        np.testing.assert_array_equal(a, b)


def test_in_a_stream_batch_each_slot_gets_its_own_chunks_clean_latent(
    parts: LoadedParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slot 0 holds the chunk just pushed, slot 1 the one pushed before it (2 steps): one forward of batch 2
    conditions each on its own chunk's latent, and a freshly widened DiT streams what the plain one did."""
    engine = ModelTransform(_settings(mode="stream-batch"), _conditioned(parts, live=True))
    encoded, conds = _spy_conditions(engine, monkeypatch)
    frames = _frames(5)
    out = _run(engine, frames)
    assert len(out) == 4 and all(o.std() > 0 for o in out)  # the first chunk fills the batch
    assert len(conds) == len(encoded) == 5  # one forward per chunk, batch 2
    assert torch.equal(conds[0][1], encoded[0][0])  # primed: the first chunk in every slot
    for i in range(5):
        assert torch.equal(conds[i][0], encoded[i][0])  # the new chunk in slot 0
        if i:
            assert torch.equal(conds[i][1], encoded[i - 1][0])  # its predecessor, a step further, in slot 1
    monkeypatch.undo()
    plain = _run(ModelTransform(_settings(mode="stream-batch"), parts), frames)
    widened = _run(ModelTransform(_settings(mode="stream-batch"), _conditioned(parts, live=False)), frames)
    for a, b in zip(plain, widened, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_pipelined_engine_refuses_stream_batch_for_an_input_conditioned_dit(parts: LoadedParts) -> None:
    refuse_stream_batch(parts.dit, "stream-batch", pipelined=True)  # a plain DiT: fine
    refuse_stream_batch(_conditioned(parts, live=True).dit, "sequential", pipelined=True)
    refuse_stream_batch(_conditioned(parts, live=True).dit, "stream-batch")  # the one-process engine carries it
    with pytest.raises(ValueError, match="input-conditioned .* sequential mode only; set model.mode = 'sequential'"):
        refuse_stream_batch(_conditioned(parts, live=True).dit, "stream-batch", pipelined=True)


def test_the_dit_asks_for_the_condition_exactly_when_it_takes_one() -> None:
    plain, wide = DiT(SMALL), widen_input(DiT(SMALL))
    x, t, text = torch.randn(1, 16, 2, 4, 4), torch.full((1, 2), 500.0), torch.randn(1, 3, 32)
    with pytest.raises(ValueError, match="needs the clean input latent"):
        wide(x, t, text)
    with pytest.raises(ValueError, match="cond given to a DiT that does not take it"):
        plain(x, t, text, cond=x)
    with pytest.raises(ValueError, match=r"cond \(1, 16, 1, 4, 4\) must be \(1, 16, 2, 4, 4\)"):
        wide(x, t, text, cond=x[:, :, :1])
    assert wide(x, t, text, cond=torch.randn_like(x)).shape == x.shape  # v has out_dim channels


def test_a_conditioned_checkpoint_loads_and_a_wrong_in_dim_is_named(tmp_path: Path) -> None:
    wide = widen_input(DiT(SMALL))
    save_dit_weights(tmp_path, wide.cfg, wide.state_dict(), None)
    assert json.loads((tmp_path / "config.json").read_text())["in_dim"] == 32
    loaded, _ = load_dit(tmp_path)
    assert loaded.cfg.in_dim == 32 and conditions_on_input(loaded)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "in_dim": 16}))
    with pytest.raises(CheckpointError, match=r"in_dim 16 vs 32 \(patch_embedding.weight\)"):
        load_dit(tmp_path)


def test_the_tiny_presets_conditioned_variant_fits_and_other_widths_do_not() -> None:
    tiny = preset("tiny")
    assert preset_mismatch(dataclasses.replace(tiny, in_dim=32), "tiny") is None
    problem = preset_mismatch(dataclasses.replace(tiny, in_dim=24), "tiny")
    assert problem is not None and "in_dim 24 (the preset has 16 or 32)" in problem


def test_model_inspect_says_the_dit_is_input_conditioned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wide = widen_input(DiT(SMALL))
    save_dit_weights(tmp_path, wide.cfg, wide.state_dict(), None)
    assert cli_main(["model", "inspect", str(tmp_path)]) == 0
    assert "latents:    in 32 / out 16 channels: input-conditioned" in capsys.readouterr().out


def test_the_pipelined_engine_conditions_each_pass_like_one_process(tmp_path: Path) -> None:
    from streamer.model.builder import build_model_transform
    from streamer.model.pipeline.engine import build_pipelined
    from streamer.model.pipeline.group import PipelineOptions

    torch.manual_seed(0)
    tiny = DiT(dataclasses.replace(preset("tiny"), num_layers=2))
    wide = widen_input(tiny)
    with torch.no_grad():
        wide.patch_embedding.weight[:, 16:].normal_(0, 0.05)
    save_dit_weights(tmp_path, wide.cfg, wide.state_dict(), None)
    model = {"width": 64, "height": 64, "steps": 2, "window": 4, "sinks": 1, "dtype": "float32",
             "checkpoint": str(tmp_path), "vae": "random", "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    video = {"width": W, "height": H}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each stage: bit-for-bit comparisons (tests/model/test_pipeline_parallel.py)
    try:
        reference = build_model_transform(from_dict({"model": model, "video": video}), warmup=False)
        frames = _frames(4)
        want = [o.pixels for f in frames for o in reference.step(f, PROMPT)]
        options = PipelineOptions(timeout_s=20.0, start_timeout_s=60.0, cpu_threads=1)
        pipelined = build_pipelined(from_dict({"model": {**model, "gpus": 2}, "video": video}), ["cpu"] * 2, options)
        try:
            got = [o.pixels for f in frames for o in pipelined.step(f, PROMPT)]
            got += [o.pixels for o in pipelined.drain()]
        finally:
            pipelined.close()
    finally:
        torch.set_num_threads(threads)
    assert len(got) == len(want) == 4
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


HAS_CUDA = torch.cuda.is_available()


def _fast_engine(device: str, dtype: torch.dtype, size: int, luma: bool = False) -> ModelTransform:
    """A conditioned tiny engine on seeded random weights (live condition channels) for the fast path;
    luma=True: one that takes the input's luma planes too (streamer/model/condition.py)."""
    from streamer.model.dit import build
    from streamer.model.text import RandomTextEncoder
    from streamer.model.vae import tiny_taehv

    torch.manual_seed(0)
    wide = widen_input(build("tiny", device=device, dtype=dtype))
    wide = widen_luma(wide) if luma else wide
    with torch.no_grad():
        wide.patch_embedding.weight[:, 16:].normal_(0, 0.05)
    vae = tiny_taehv().to(device=device, dtype=dtype).eval()
    parts = LoadedParts(torch.device(device), dtype, wide.eval(), vae, RandomTextEncoder(64, 384), {}, ["DiT"])
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    m = _settings(width=size, height=size, dtype=name, device=device)
    return ModelTransform(m, parts)


def _stream(engine: ModelTransform, step: object, frames: list[torch.Tensor]) -> list[torch.Tensor]:
    engine.reset()
    engine._set_cross(engine.text.encode(["a prompt"]).to(engine.device))
    return [step(f).float() for f in frames]  # type: ignore[operator]


def _frame_tensors(n: int, size: int, device: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (1, size, size, 3), generator=gen, dtype=torch.uint8).to(device) for _ in range(n)]


@pytest.mark.parametrize("luma", [False, True])
def test_the_fused_step_conditions_like_the_eager_engine(luma: bool) -> None:
    """On a CPU the fused kernels run in Triton's interpreter, without the graph."""
    from streamer.model.fast.path import FastPath

    device = "cuda" if HAS_CUDA else "cpu"
    engine = _fast_engine(device, torch.float32, 16, luma)
    frames = _frame_tensors(4, 16, device)
    want = _stream(engine, engine.step_tensor, frames)
    got = _stream(engine, FastPath(engine, use_graph=False).step, frames)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert float((a - b).abs().max()) <= 1.0, f"chunk {i}: uint8 outputs differ by more than rounding"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (graph capture)")
@pytest.mark.parametrize("luma", [False, True])
def test_the_captured_graph_reads_each_chunks_own_clean_latent(luma: bool) -> None:
    """The clean latent (and the luma planes) are made inside the captured step (the graph's own buffers),
    so every replay must condition on ITS chunk: replays match the uncaptured fused step chunk by chunk on
    changing frames."""
    from streamer.model.fast.path import FastPath

    engine = _fast_engine("cuda", torch.bfloat16, 64, luma)
    frames = _frame_tensors(10, 64, "cuda")
    want = _stream(engine, FastPath(engine, use_graph=False).step, frames)
    graph = FastPath(engine)
    got = _stream(engine, graph.step, frames)
    assert graph._graph is not None and graph.replays >= 3
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        diff = (a - b).abs()
        assert float(diff.mean()) < 0.5 and float((diff > 2).float().mean()) < 1e-3, f"chunk {i}: {diff.max()}"
