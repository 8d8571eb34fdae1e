"""The held-out evaluator: its live stream, its PSNR, and drift / steps runs through the real engine
(random weights at 32x32 for a few frames: structure and plumbing, not quality)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamer.config import ModelSettings
from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.model.loading import load_parts
from streamer.model.vae import tiny_taehv
from streamer.train import evaluate as ev
from streamer.train import heldout
from streamer.train.checkpoint import save_dit_weights
from streamer.train.data import BuiltinRecipe
from streamer.train.media import load_media, split_media

SIZE = (32, 32)


@pytest.fixture(scope="module")
def recipe(media_paths: list[Path]) -> BuiltinRecipe:
    return BuiltinRecipe(("noir",), SIZE, paths=media_paths, part="heldout")


def _stream(recipe: BuiltinRecipe, frames: int, seed: int) -> torch.Tensor:
    return torch.cat([s.inputs for s in heldout.heldout_segments(recipe, frames, seed)])


def test_heldout_stream_is_deterministic_moving_and_heldout_only(
    recipe: BuiltinRecipe, media_paths: list[Path]
) -> None:
    segments = list(heldout.heldout_segments(recipe, 300, seed=3))
    stream = torch.cat([s.inputs for s in segments])
    assert stream.shape == (300, *SIZE, 3) and stream.dtype == torch.uint8
    assert torch.equal(stream, _stream(recipe, 300, 3))  # same seed, same pixels
    assert torch.equal(stream[:150], _stream(recipe, 150, 3))  # a shorter stream is the start of a longer one
    assert not torch.equal(stream, _stream(recipe, 300, 4))
    assert all(120 <= s.inputs.shape[0] <= 180 for s in segments[:-1])  # 4-6 s at 30 fps
    assert [s.start for s in segments] == [0, *torch.tensor([s.inputs.shape[0] for s in segments]).cumsum(0)[:-1]]
    for s in segments:  # every segment moves: consecutive frames differ (camera move and/or video frames)
        steps = (s.inputs[1:].float() - s.inputs[:-1].float()).abs().mean((1, 2, 3))
        assert (steps > 0).float().mean() > 0.9
    assert {s.source.is_still for s in segments} == {True, False}  # both kinds of held-out media appear
    full = load_media(media_paths, max_side=2 * max(SIZE))
    train = split_media(full, "train")
    train_stills = {m.path for m in train if m.is_still}
    video = next(m for m in full if not m.is_still)
    cut = video.pixels.shape[0] - next(m for m in recipe.media if not m.is_still).pixels.shape[0]
    for s in segments:
        assert any(s.source is m for m in recipe.media)
        if s.source.is_still:
            assert s.source.path not in train_stills
        else:  # only frames after the training part's end of the video
            assert torch.equal(s.source.pixels, video.pixels[cut:])
            assert cut == next(m for m in train if not m.is_still).pixels.shape[0]
            assert 0 <= int(s.indices.min()) and int(s.indices.max()) < s.source.pixels.shape[0]
    with pytest.raises(ValueError, match="held-out media only"):
        next(heldout.heldout_segments(BuiltinRecipe(("noir",), SIZE, paths=media_paths, part="train"), 10, 0))


def test_ping_pong_plays_forward_then_back() -> None:
    idx = heldout._ping_pong(5, 12, torch.Generator().manual_seed(0))
    assert idx.tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]  # window of 5 = the whole 5-frame video


def test_psnr_matches_a_hand_computation() -> None:
    a = torch.zeros(3, 4, 4, 3, dtype=torch.uint8)
    b = a.clone()
    b[0] += 10  # MSE 100 -> 10 log10(65025 / 100) = 28.1308 dB
    b[1, 0, 0, 0] = 255  # one of 48 values off by 255: MSE 65025 / 48 -> 10 log10(48) = 16.8124 dB
    got = heldout.psnr(a, b)
    assert got[0].item() == pytest.approx(28.1308, abs=1e-3)
    assert got[1].item() == pytest.approx(16.8124, abs=1e-3)
    assert got[2].item() == heldout.PSNR_CAP_DB  # identical frames: capped, not infinite
    assert heldout.psnr(a[0], b[0]).item() == pytest.approx(28.1308, abs=1e-3)  # one frame [H, W, 3] works too


def test_drift_and_steps_through_the_engine(recipe: BuiltinRecipe, random_text: None) -> None:
    m = ModelSettings(checkpoint="random", vae="random", width=32, height=32, device="cpu", fast_path=False)
    parts = load_parts(m, torch.device("cpu"))
    progress = ev.Progress(6 + 2 * 2 * 3, parts.device)
    drift = ev.evaluate_drift(parts, m, recipe, ["noir"], frames=6, seed=1, bucket=3, progress=progress)
    d = drift["noir"]
    assert len(d["psnr_per_bucket"]) == 2 and len(d["identity_per_bucket"]) == 2 and d["missing_frames"] == 0
    assert all(math.isfinite(x) for x in d["psnr_per_bucket"])
    assert d["last_minus_first_db"] == pytest.approx(d["psnr_per_bucket"][1] - d["psnr_per_bucket"][0])
    first = next(heldout.heldout_segments(recipe, 6, 1))  # the identity baseline is the input against its own look
    ident = heldout.psnr(first.inputs, heldout.look_targets(first.inputs, "noir"))
    assert d["identity_per_bucket"][0] == pytest.approx(ident[:3].double().mean().item(), abs=1e-4)
    assert d["psnr_per_bucket"] != pytest.approx(d["identity_per_bucket"])  # scored on the model's output
    steps = ev.evaluate_steps(parts, m, recipe, ["noir", "sepia"], [1, 2], frames=3, seed=1, progress=progress)
    assert set(steps["per_look"]) == {"1", "2"} and set(steps["per_look"]["1"]) == {"noir", "sepia"}
    assert set(steps["identity"]) == {"noir", "sepia"} and steps["segments"][0]["frames"] == 3
    assert steps["per_look"]["1"]["noir"] != steps["per_look"]["2"]["noir"]  # the step count reached the engine
    assert progress.done == 6 + 2 * 2 * 3
    table = ev.markdown([{"mode": "drift", "label": "m", "fps": 30, "bucket_frames": 3, "looks": drift},
                         {"mode": "steps", "label": "m", "steps": steps}])  # fmt: skip
    assert "| m | noir |" in table and "| 2 steps |" in table and "| m | mean |" in table


def test_slope_of_a_line() -> None:
    assert ev._slope([10.0, 9.5, 9.0, 8.5]) == pytest.approx(-0.5)
    assert ev._slope([12.0]) == 0.0


def test_command_line_writes_json_and_table(
    tmp_path: Path, media_paths: list[Path], random_text: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = dataclasses.replace(preset("tiny"), dim=128, num_layers=2, num_heads=2, ffn_dim=256)  # a pruned-size variant
    torch.manual_seed(0)
    save_dit_weights(tmp_path / "ckpt", cfg, DiT(cfg).state_dict(), None)
    save_file(tiny_taehv().state_dict(), str(tmp_path / "vae.safetensors"))
    out = tmp_path / "eval" / "steps.json"
    argv = ["--mode", "steps", "--checkpoint", str(tmp_path / "ckpt"), "--vae", str(tmp_path / "vae.safetensors"),
            "--width", "32", "--height", "32", "--device", "cpu", "--frames", "2", "--steps", "1",
            "--looks", "noir", "--media", *map(str, media_paths), "--json", str(out), "--set", "motion_aware=false"]  # fmt: skip
    assert ev.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["label"] == "ckpt" and result["frames"] == 2 and result["device"] == "cpu"
    assert result["settings"]["fast_path"] is False and result["settings"]["motion_aware"] is False
    assert result["random_parts"] == ["text encoder"] and result["shortcut"] == "none"
    assert set(result["steps"]["per_look"]["1"]) == {"noir"} and result["elapsed_s"] > 0
    assert "| ckpt | noir |" in capsys.readouterr().out
    assert ev.main(["--report", str(out), str(out)]) == 0  # several runs' files -> one table
    assert capsys.readouterr().out.count("| ckpt | noir |") == 2


def test_bad_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ev.main(["--checkpoint", str(tmp_path / "nope"), "--vae", "random"])
    assert exit_info.value.code == 2 and "not a checkpoint folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "vae.safetensors").write_bytes(b"x")
    assert ev.main(["--checkpoint", str(broken), "--vae", str(tmp_path / "vae.safetensors"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(broken) in err
    with pytest.raises(SystemExit):
        ev.main(["--checkpoint", "random", "--looks", "noir,disco"])
    assert "unknown disco" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["--checkpoint", "random", "--mode", "drift", "--minutes", "0"])
    assert "at least one step and one frame" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"step": 3}')
    assert ev.main(["--report", str(tmp_path / "other.json")]) == 1
    assert "not evaluator results" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the fast path's graph capture)")
def test_fast_path_scores_match_eager_on_cuda(recipe: BuiltinRecipe, random_text: None) -> None:
    m = ModelSettings(checkpoint="random", vae="random", width=32, height=32, device="cuda", fast_path=False)
    parts = load_parts(m, torch.device("cuda"))
    got = {}
    for fast in (False, True):
        progress = ev.Progress(40, parts.device)
        settings = dataclasses.replace(m, fast_path=fast)
        got[fast] = ev.evaluate_steps(parts, settings, recipe, ["noir"], [2], frames=40, seed=1, progress=progress)
    assert got[True]["per_look"]["2"]["noir"] == pytest.approx(got[False]["per_look"]["2"]["noir"], abs=0.05)
    assert ev.make_engine(dataclasses.replace(m, fast_path=True), parts).path.startswith("fast")


def test_shortcut_state_tells_a_trained_step_embedding_from_an_inert_one() -> None:
    from streamer.model.shortcut import ShortcutDiT

    cfg = dataclasses.replace(preset("tiny"), dim=64, num_layers=1, num_heads=1, ffn_dim=128)
    assert ev._shortcut_state(DiT(cfg)) == "none"
    model = ShortcutDiT(cfg)
    assert ev._shortcut_state(model) == "inert"  # zero-initialised output layer: d changes nothing
    torch.nn.init.normal_(model.step_embedding.mlp[2].weight)
    assert ev._shortcut_state(model) == "trained"
