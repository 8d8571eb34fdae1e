"""Shortcut-distilled checkpoints at inference: shortcut.safetensors beside the weights -> a ShortcutDiT
that the engine (eager, stream batch, fused fast path) tells the step size t / 1000; bad files are
CheckpointErrors naming the file; a zero or absent step embedding changes nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from streamer.cli import main as cli_main
from streamer.config import from_dict
from streamer.model import loading
from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.model.engine import ModelTransform
from streamer.model.fast.path import FastPath  # imports kernels/, which picks Triton's interpreter on a CPU
from streamer.model.loading import LoadedParts
from streamer.model.shortcut import SHORTCUT_FILE, ShortcutDiT, sampler_step_size
from streamer.model.text import RandomTextEncoder
from streamer.model.vae import tiny_taehv
from streamer.model.weights.checkpoints import CheckpointError, load_dit
from streamer.train.checkpoint import save_dit_weights

HAS_CUDA = torch.cuda.is_available()
SIZE = 32  # model and frame size: 4x4 latents, 4 tokens per frame


def _trained(step_std: float, layers: int = 1) -> ShortcutDiT:
    """The tiny preset (one layer by default: fast) with seeded weights; the step embedding's last layer
    ~ N(0, step_std) (0 = fresh)."""
    torch.manual_seed(3)
    model = ShortcutDiT(dataclasses.replace(preset("tiny"), num_layers=layers))
    if step_std:
        torch.nn.init.normal_(model.step_embedding.mlp[2].weight, std=step_std)
        torch.nn.init.normal_(model.step_embedding.mlp[2].bias, std=step_std)
    return model


def _folder(root: Path, name: str, model: ShortcutDiT, with_shortcut: bool = True) -> Path:
    """A checkpoint folder as the trainer writes it (model.safetensors + config.json [+ shortcut.safetensors])."""
    folder = root / name
    save_dit_weights(folder, model.cfg, model.wan_state_dict(), model.shortcut_state_dict() if with_shortcut else None)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shortcut-ckpts")
    trained = _trained(0.5)
    return {
        "shortcut": _folder(root, "shortcut", trained),
        "plain": _folder(root, "plain", trained, with_shortcut=False),
        "zero": _folder(root, "zero", _trained(0.0)),
    }


def test_folder_with_shortcut_file_loads_a_shortcut_dit(folders: dict[str, Path]) -> None:
    want = _trained(0.5).shortcut_state_dict()
    for path in (folders["shortcut"], folders["shortcut"] / "model.safetensors"):
        dit, report = load_dit(path, dtype=torch.bfloat16)
        assert isinstance(dit, ShortcutDiT) and report.endswith("+ shortcut step embedding"), report
        for k, v in dit.shortcut_state_dict().items():
            assert v.dtype == torch.float32, k  # kept fp32 like the time embedding it is added to
            torch.testing.assert_close(v, want[k], rtol=0, atol=0)
    plain, report = load_dit(folders["plain"])
    assert type(plain) is DiT and "shortcut" not in report


def test_the_daemons_loader_reports_the_step_embedding(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "tiny", _trained(0.5, layers=preset("tiny").num_layers))
    m = from_dict({"model": {"checkpoint": str(folder), "preset": "tiny"}}).model
    dit, src = loading.load_configured_dit(m, torch.device("cpu"), torch.float32)
    assert isinstance(dit, ShortcutDiT) and "+ shortcut step embedding" in src


def test_inspect_mentions_the_step_embedding(folders: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["model", "inspect", str(folders["shortcut"])]) == 0
    assert f"shortcut:   step-size embedding ({SHORTCUT_FILE}" in capsys.readouterr().out
    assert cli_main(["model", "inspect", str(folders["plain"])]) == 0
    assert "shortcut:" not in capsys.readouterr().out


def _damaged(tmp_path: Path, folders: dict[str, Path], shortcut: dict[str, torch.Tensor] | bytes) -> Path:
    folder = tmp_path / "damaged"
    folder.mkdir()
    for name in ("model.safetensors", "config.json"):
        (folder / name).write_bytes((folders["plain"] / name).read_bytes())
    if isinstance(shortcut, bytes):
        (folder / SHORTCUT_FILE).write_bytes(shortcut)
    else:
        save_file(shortcut, str(folder / SHORTCUT_FILE))
    return folder


@pytest.mark.parametrize("damage,message", [
    ("garbage", "not a readable safetensors file"),
    ("truncated", "not a readable safetensors file"),
    ("missing", "1 missing keys: step_embedding.mlp.2.bias"),
    ("extra", "1 unexpected keys: step_embedding.mlp.9.weight"),
    ("shape", r"mis-shaped keys \(file vs model\): step_embedding.mlp.0.weight \[8, 256\] vs \[256, 256\]"),
    ("int", r"non-float tensors: step_embedding.mlp.0.bias \(torch.int64\)"),
])  # fmt: skip
def test_bad_shortcut_files_are_checkpoint_errors_naming_the_file(
    tmp_path: Path, folders: dict[str, Path], damage: str, message: str
) -> None:
    good = _trained(0.5).shortcut_state_dict()
    shortcut: dict[str, torch.Tensor] | bytes
    if damage == "garbage":
        shortcut = b"\x00not safetensors at all" * 10
    elif damage == "truncated":
        shortcut = (folders["shortcut"] / SHORTCUT_FILE).read_bytes()[:-100]
    else:
        shortcut = {k: v.clone() for k, v in good.items()}
        if damage == "missing":
            del shortcut["step_embedding.mlp.2.bias"]
        elif damage == "extra":
            shortcut["step_embedding.mlp.9.weight"] = torch.zeros(2)
        elif damage == "shape":
            shortcut["step_embedding.mlp.0.weight"] = torch.zeros(8, 256)
        else:
            shortcut["step_embedding.mlp.0.bias"] = torch.zeros(256, dtype=torch.int64)
    folder = _damaged(tmp_path, folders, shortcut)
    with pytest.raises(CheckpointError, match=message) as err:
        load_dit(folder)
    assert str(folder / SHORTCUT_FILE) in str(err.value)
    assert cli_main(["model", "inspect", str(folder)]) == 1


# ---- the engine ----------------------------------------------------------------------------------------
def _engine(folder: Path, *, mode: str = "sequential", steps: int = 2, device: str = "cpu") -> ModelTransform:
    m = from_dict({"model": {"width": SIZE, "height": SIZE, "steps": steps, "window": 3, "sinks": 1,
                             "mode": mode, "device": device}}).model  # fmt: skip
    dit, report = load_dit(folder, device=device)
    torch.manual_seed(5)
    vae = tiny_taehv().to(device).eval().requires_grad_(False)
    text = RandomTextEncoder(dit.cfg.text_len, dit.cfg.text_dim)
    parts = LoadedParts(torch.device(device), torch.float32, dit, vae, text, {"DiT": report}, ["autoencoder"])
    engine = ModelTransform(m, parts)
    engine._set_cross(text.encode(["a charcoal sketch"]).to(engine.device))
    return engine


def _frames(n: int, device: str = "cpu") -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    return [torch.randint(0, 256, (1, SIZE, SIZE, 3), generator=gen, dtype=torch.uint8).to(device) for _ in range(n)]


def _run(engine: ModelTransform, frames: list[torch.Tensor], step=None) -> tuple[list[np.ndarray], list[torch.Tensor]]:  # noqa: ANN001
    """uint8 outputs, and the KV cache after each chunk: its K carry every layer's modulation, so they show
    the time embedding even where the random autoencoder saturates the pixels (and a graph's work too)."""
    step = step or engine.step_tensor
    outs, keys = [], []
    for f in frames:
        if (out := step(f)) is not None:
            outs.append(out.float().cpu().numpy())
        keys.append(engine.cache.k.float().cpu().clone())
    return outs, keys


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode,steps", [("sequential", 2), ("stream-batch", 2)])
def test_engine_passes_the_step_size_and_a_trained_embedding_changes_the_output(
    folders: dict[str, Path], mode: str, steps: int
) -> None:
    frames = _frames(3)
    engine = _engine(folders["shortcut"], mode=mode, steps=steps)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    engine.dit.register_forward_pre_hook(lambda _m, a, kw: seen.append((a[1], kw["step_size"])), with_kwargs=True)
    shortcut, shortcut_k = _run(engine, frames)
    # every pass told the step it takes: its own sigma, per batch row (the stream batch's slots differ)
    assert len(seen) == len(frames) * (1 if mode == "stream-batch" else steps)
    for t, d in seen:
        assert d.shape == t.shape and torch.equal(d, sampler_step_size(t)) and bool((d > 0).all())
    if mode == "stream-batch":
        assert len(set(seen[-1][1][:, 0].tolist())) == steps
    plain, plain_k = _run(_engine(folders["plain"], mode=mode, steps=steps), frames)
    zero, zero_k = _run(_engine(folders["zero"], mode=mode, steps=steps), frames)
    assert len(shortcut) == len(plain) == len(zero) > 0
    for b, c in zip(plain + plain_k, zero + zero_k, strict=True):
        assert np.array_equal(np.asarray(b), np.asarray(c))  # a zero step embedding = the plain model, bit for bit
    assert all(_rel(a, b) > 0.05 for a, b in zip(shortcut_k, plain_k, strict=True))  # a trained one is heard
    assert any(not np.array_equal(a, b) for a, b in zip(shortcut, plain, strict=True))


def test_fused_path_adds_the_step_embedding(folders: dict[str, Path]) -> None:
    """FastPath without the graph (Triton interpreter on CPU): the eager engine's result with the shortcut
    model, and clearly not the plain model's."""
    device = "cuda" if HAS_CUDA else "cpu"
    frames = _frames(2, device)
    engine = _engine(folders["shortcut"], device=device)
    want, want_k = _run(engine, frames)
    engine.reset()
    got, got_k = _run(engine, frames, FastPath(engine, use_graph=False).step)
    _, plain_k = _run(_engine(folders["plain"], device=device), frames)
    for a, b in zip(got, want, strict=True):
        assert np.abs(a - b).max() <= 1.0
    for a, b, c in zip(got_k, want_k, plain_k, strict=True):
        assert _rel(a, b) < 1e-3 and _rel(a, c) > 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (graph capture)")
def test_graph_replay_with_a_step_embedding_matches_eager(folders: dict[str, Path]) -> None:
    """The captured graph computes the step embedding on the device each replay (t changes with motion)."""
    frames = _frames(10, "cuda")
    engine = _engine(folders["shortcut"], device="cuda")
    assert engine.settings.motion_aware  # the strength, hence t and the step size, moves chunk to chunk
    want, want_k = _run(engine, frames)
    engine.reset()
    graph = FastPath(engine)
    got, got_k = _run(engine, frames, graph.step)
    assert graph._graph is not None and graph.replays >= 3, "the steady-state chunks must replay the graph"
    _, plain_k = _run(_engine(folders["plain"], device="cuda"), frames)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert np.abs(a - b).max() <= 2.0, f"chunk {i}: graph vs eager"
    for i, (a, b, c) in enumerate(zip(got_k, want_k, plain_k, strict=True)):
        assert _rel(a, b) < 1e-2, f"chunk {i}: graph vs eager KV cache"
        assert _rel(a, c) > 0.05, f"chunk {i}: the step embedding is missing from the graph"


def test_fused_path_runs_a_head_pruned_model(tmp_path: Path) -> None:
    """The shipped tiny model is head-pruned (attention width 2 x 64 < dim 256): the fused path splits
    q/k/v and reshapes the attention output by the attention width, not by dim."""
    torch.manual_seed(8)
    cfg = dataclasses.replace(preset("tiny"), num_layers=1, num_heads=2, head_width=64, ffn_dim=512)
    model = ShortcutDiT(cfg)
    torch.nn.init.normal_(model.step_embedding.mlp[2].weight, std=0.5)
    folder = _folder(tmp_path, "pruned", model)
    device = "cuda" if HAS_CUDA else "cpu"
    frames = _frames(2, device)
    engine = _engine(folder, device=device)
    assert engine.dit.cfg.attn_dim == 128 < engine.dit.cfg.dim
    want, want_k = _run(engine, frames)
    engine.reset()
    got, got_k = _run(engine, frames, FastPath(engine, use_graph=False).step)
    for a, b in zip(got, want, strict=True):
        assert np.abs(a - b).max() <= 1.0
    for a, b in zip(got_k, want_k, strict=True):
        assert _rel(a, b) < 1e-3
