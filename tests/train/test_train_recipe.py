"""The embedded model's recipe: its generated stage configs are valid training configs, and `--from`
runs the stages that made v4 from v3 (widen, conditioned fine-tune, quality, export) for real at toy size
on the CPU (~1 min). The whole recipe runs end to end with `python -m streamer.train.recipe --smoke`
(a few minutes on 2 cores: not in CI)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.model.refiner import REFINER_FILE
from streamer.train import config as tconfig
from streamer.train import recipe, recipe_continue
from streamer.train.checkpoint import save_dit_weights
from streamer.train.recipe import REAL, SMOKE, V41_LOOKS, VARIANTS, Recipe
from streamer.train.recipe import main as recipe_main
from streamer.train.recipe_stages import condition_values, conditions_on_input

EMBEDDED = Path(recipe.__file__).parents[1] / "model" / "embedded" / "tiny"


def test_stage_configs_load_and_variants_differ_only_in_their_ablation(tmp_path: Path) -> None:
    rc = Recipe(tmp_path, REAL, 540, None)
    base = {"vae": "x.safetensors", "frames": 4, "lr": 6e-4, "window": 3, "sinks": 1}
    loaded = {n: tconfig.load(rc.config(f"dit-{n}", **base, **over)) for n, over in VARIANTS.items()}
    full = loaded["full"]
    assert (full.width, full.batch, full.workers, full.window, full.sinks) == (256, 32, 4, 3, 1)
    assert full.p_history > 0 and full.p_shortcut > 0
    assert loaded["no-history"].p_history == 0 and loaded["no-history"].p_shortcut == full.p_shortcut
    assert loaded["no-shortcut"].p_shortcut == 0 and loaded["no-shortcut"].p_history == full.p_history
    assert Path(full.out_dir) == tmp_path / "dit-full"
    vae = tconfig.load(Recipe(tmp_path / "s", SMOKE, 60, None).config("vae", stage="vae", looks=("noir", "sepia")))
    assert vae.stage == "vae" and vae.looks == ("noir", "sepia") and vae.device == "cpu"


def test_the_conditioned_stage_on_the_gpu_has_v4s_settings(tmp_path: Path) -> None:
    rc = Recipe(tmp_path, REAL, 540, None)
    rc.vae = tmp_path / "vae.safetensors"
    c = tconfig.load(rc.config("condition", **condition_values(rc, tmp_path / "widened")))
    assert (c.width, c.height, c.frames, c.window, c.sinks) == (256, 256, 4, 3, 1)
    assert (c.batch, c.workers, c.dtype, c.lr, c.warmup) == (64, 8, "bfloat16", 3e-4, 20)
    assert (c.p_paired, c.paired_max_sigma, Path(c.init)) == (0.75, 0.8, tmp_path / "widened")
    assert REAL.steps[3] >= 2063  # v4's conditioned steps, in one cosine schedule


def test_cond_looks_weight_the_conditioned_stage_and_unknown_names_are_refused(tmp_path: Path, capsys) -> None:
    rc = Recipe(tmp_path, REAL, 540, None)
    rc.vae = tmp_path / "vae.safetensors"
    assert tconfig.load(rc.config("plain", **condition_values(rc, tmp_path / "w"))).looks == tconfig.TrainConfig().looks
    rc.cond_looks = tuple(V41_LOOKS.split(","))
    c = tconfig.load(rc.config("weighted", **condition_values(rc, tmp_path / "w")))
    assert c.looks.count("comic") == 3 and c.looks.count("neon") == 2 and c.looks.count("noir") == 1
    with pytest.raises(SystemExit):
        recipe_main(["--out", str(tmp_path / "x"), "--cond-looks", "noir,vaporwave"])
    assert "unknown look(s) vaporwave" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was made


@pytest.mark.slow
def test_from_a_plain_model_runs_only_widen_condition_refine_quality_and_export(tmp_path: Path) -> None:
    src = tmp_path / "plain"  # a small plain DiT with the shipped autoencoder beside it, as v3's folder was
    cfg = dataclasses.replace(preset("tiny"), dim=128, num_layers=2, num_heads=2, ffn_dim=256)
    torch.manual_seed(0)
    save_dit_weights(src, cfg, DiT(cfg).state_dict(), None)
    shutil.copyfile(EMBEDDED / "vae.safetensors", src / "vae.safetensors")
    assert not conditions_on_input(src) and conditions_on_input(EMBEDDED)
    out, export = tmp_path / "run", tmp_path / "export"

    rc = recipe.main(["--out", str(out), "--export", str(export), "--smoke", "--from", str(src), "--budget-s", "150"])

    results = json.loads((export / "recipe-results.json").read_text())
    assert rc == 0, results.get("error")
    shipped = json.loads((export / "embedded" / "config.json").read_text())
    assert (shipped["in_dim"], shipped["out_dim"], shipped["dim"]) == (32, 16, 128)
    assert conditions_on_input(export / "embedded")  # a second --from on it continues without widening
    assert (export / "embedded" / "vae.safetensors").read_bytes() == (src / "vae.safetensors").read_bytes()
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"configs", "logs", "widened", "condition", "refined"}
    assert (export / "embedded" / REFINER_FILE).is_file() and "fitted a pixel refiner" in results["refined"]["summary"]
    assert list(results["stages"]) == ["condition"] and results["stages"]["condition"]["steps"] == SMOKE.steps[3]
    assert results["conditioned_from"] == {"checkpoint": str(src), "widened": True}
    trained = tconfig.load(out / "configs" / "condition.toml")
    assert (trained.p_paired, trained.paired_max_sigma, Path(trained.init)) == (0.75, 0.8, out / "widened")
    quality = results["quality"]
    assert quality["mode"] == "quality" and set(quality["quality"]["per_look"]) == {"noir", "sketch"}
    assert (export / "contact-sheet.png").stat().st_size > 0


def test_continue_variants_share_everything_but_their_own_settings(tmp_path: Path) -> None:
    rc = Recipe(tmp_path, REAL, 560, None)
    rc.vae = tmp_path / "vae.safetensors"
    loaded = {n: tconfig.load(c) for n, c in recipe_continue.variant_configs(rc, EMBEDDED).items()}
    focus = loaded["focus"]
    assert (focus.batch, focus.workers, focus.dtype, focus.width, focus.frames) == (64, 8, "bfloat16", 256, 4)
    assert (focus.p_paired, focus.paired_max_sigma, focus.lr, Path(focus.init)) == (0.9, 0.5, 1.5e-4, EMBEDDED)
    assert focus.looks.count("comic") == 4 and focus.p_history > 0 and focus.p_shortcut > 0 and focus.pixel_loss == 0
    ablations = {"focus-no-history": {"p_history"}, "focus-no-shortcut": {"p_shortcut"},
                 "focus-pixel": {"pixel_loss"}, "focus-ink": {"pixel_loss", "pixel_dark_weight"}}  # fmt: skip
    for name, keys in ablations.items():
        diff = {k for k, v in dataclasses.asdict(loaded[name]).items() if v != dataclasses.asdict(focus)[k]}
        assert diff == {*keys, "out_dir"}, name
    assert loaded["focus-ink"].pixel_loss == loaded["focus-pixel"].pixel_loss  # they differ in the weight only


def test_collect_keeps_the_finished_tables_and_names_the_failed_and_the_late(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    rc = Recipe(tmp_path, SMOKE, 60, None)
    (tmp_path / "eval-ok.json").write_text('{"mode": "steps"}')
    run = lambda code: subprocess.Popen([sys.executable, "-c", code])  # noqa: E731
    procs = {"ok": run("pass"), "broken": run("raise SystemExit(3)"), "late": run("import time; time.sleep(60)")}
    t0 = time.monotonic()
    recipe_continue.collect(rc, procs, deadline=t0 + 5)
    assert time.monotonic() - t0 < 30 and procs["late"].poll() is not None  # stopped, not waited for
    assert rc.results["ok"] == {"mode": "steps"}
    assert rc.results["failed_evaluations"] == {"broken": "exit 3; see logs/eval-broken.log",
                                                "late": "stopped at the end of the budget"}  # fmt: skip


def test_a_relative_out_folder_puts_every_stage_under_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the first GPU call of --continue wrote to configs/runs/... with a relative --out
    rc = Recipe(Path("runs/v"), SMOKE, 60, Path("export"))
    assert tconfig.load(rc.config("focus")).out_dir == str(tmp_path / "runs" / "v" / "focus")
    assert rc.export == tmp_path / "export"


def test_continue_refuses_a_model_that_does_not_take_the_input(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    save_dit_weights(src, dataclasses.replace(preset("tiny"), dim=64, num_layers=1, num_heads=1, ffn_dim=64),
                     DiT(dataclasses.replace(preset("tiny"), dim=64, num_layers=1, num_heads=1, ffn_dim=64)).state_dict(),
                     None)  # fmt: skip
    export = tmp_path / "export"
    assert recipe_main(["--out", str(tmp_path / "run"), "--export", str(export), "--smoke", "--continue", str(src)]) == 1
    error = json.loads((export / "recipe-results.json").read_text())["error"]
    assert "input-conditioned" in error and "--from" in error


@pytest.mark.slow
def test_continue_trains_the_variants_side_by_side_then_compares_and_exports_them(tmp_path: Path) -> None:
    src = tmp_path / "cond"  # a small input-conditioned DiT with the shipped autoencoder, as the shipped folder is
    cfg = dataclasses.replace(preset("tiny"), dim=64, num_layers=2, num_heads=1, ffn_dim=128, in_dim=32)
    torch.manual_seed(0)
    save_dit_weights(src, cfg, DiT(cfg).state_dict(), None)
    shutil.copyfile(EMBEDDED / "vae.safetensors", src / "vae.safetensors")
    out, export = tmp_path / "run", tmp_path / "export"

    rc = recipe_main(["--out", str(out), "--export", str(export), "--smoke", "--continue", str(src), "--budget-s", "400"])

    results = json.loads((export / "recipe-results.json").read_text())
    assert rc == 0, results.get("error")
    assert "failed_evaluations" not in results, results["failed_evaluations"]
    assert set(results["stages"]) == set(recipe_continue.VARIANTS)
    assert all(s["steps"] == SMOKE.continue_steps for s in results["stages"].values())
    for name in ("quality-init", *(f"quality-{c}" for c in recipe_continue.CANDIDATES)):
        assert set(results[name]["quality"]["per_look"]) == {"noir", "sketch"}, name
    assert results["drift-focus-watercolour"]["mode"] == "drift"
    assert results["drift-focus-no-history-watercolour"]["mode"] == "drift"
    assert results["steps-focus"]["mode"] == results["steps-focus-no-shortcut"]["mode"] == "steps"
    assert len(list(export.iterdir())) <= 8  # what a lent GPU machine sends back
    for name in recipe_continue.CANDIDATES:
        with tarfile.open(export / f"{name}.tar") as tar:
            assert set(tar.getnames()) == {f"{name}/config.json", f"{name}/model.safetensors", f"{name}/shortcut.safetensors"}
            packed = tar.extractfile(f"{name}/model.safetensors").read()  # type: ignore[union-attr]
        newest = out / name / "checkpoints" / f"step_{SMOKE.continue_steps:07d}"
        assert packed == (newest / "model.safetensors").read_bytes()
    with tarfile.open(export / "contact-sheets.tar") as tar:
        assert len(tar.getnames()) == 1 + len(recipe_continue.CANDIDATES)
    pixel = tconfig.load(out / "configs" / "focus-pixel.toml")
    assert pixel.pixel_loss == 0.2 and Path(pixel.init) == src
