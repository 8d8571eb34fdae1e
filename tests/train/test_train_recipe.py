"""The embedded model's recipe: its generated stage configs are valid training configs, and `--from`
runs the stages that made v4 from v3 (widen, conditioned fine-tune, quality, export) for real at toy size
on the CPU (~1 min). The whole recipe runs end to end with `python -m streamer.train.recipe --smoke`
(a few minutes on 2 cores: not in CI)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.train import config as tconfig
from streamer.train import recipe
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
def test_from_a_plain_model_runs_only_widen_condition_quality_and_export(tmp_path: Path) -> None:
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
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"configs", "logs", "widened", "condition"}
    assert list(results["stages"]) == ["condition"] and results["stages"]["condition"]["steps"] == SMOKE.steps[3]
    assert results["conditioned_from"] == {"checkpoint": str(src), "widened": True}
    trained = tconfig.load(out / "configs" / "condition.toml")
    assert (trained.p_paired, trained.paired_max_sigma, Path(trained.init)) == (0.75, 0.8, out / "widened")
    quality = results["quality"]
    assert quality["mode"] == "quality" and set(quality["quality"]["per_look"]) == {"noir", "sketch"}
    assert (export / "contact-sheet.png").stat().st_size > 0
