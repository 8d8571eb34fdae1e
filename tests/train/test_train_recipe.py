"""The embedded model's recipe: its generated stage configs are valid training configs (the full
recipe runs end to end with `python -m streamer.train.recipe --smoke`, ~3 min on 2 cores: not in CI)."""

from __future__ import annotations

from pathlib import Path

from streamer.train import config as tconfig
from streamer.train.recipe import REAL, SMOKE, VARIANTS, Recipe


def test_stage_configs_load_and_variants_differ_only_in_their_ablation(tmp_path: Path) -> None:
    recipe = Recipe(tmp_path, REAL, 540, None)
    base = {"vae": "x.safetensors", "frames": 4, "lr": 6e-4, "window": 3, "sinks": 1}
    loaded = {n: tconfig.load(recipe.config(f"dit-{n}", **base, **over)) for n, over in VARIANTS.items()}
    full = loaded["full"]
    assert (full.width, full.batch, full.workers, full.window, full.sinks) == (256, 32, 4, 3, 1)
    assert full.p_history > 0 and full.p_shortcut > 0
    assert loaded["no-history"].p_history == 0 and loaded["no-history"].p_shortcut == full.p_shortcut
    assert loaded["no-shortcut"].p_shortcut == 0 and loaded["no-shortcut"].p_history == full.p_history
    assert Path(full.out_dir) == tmp_path / "dit-full"
    vae = tconfig.load(Recipe(tmp_path / "s", SMOKE, 60, None).config("vae", stage="vae", looks=("noir", "sepia")))
    assert vae.stage == "vae" and vae.looks == ("noir", "sepia") and vae.device == "cpu"
