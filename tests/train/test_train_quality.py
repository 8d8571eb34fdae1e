"""The evaluator's quality mode: the edge-structure score on hand-made frames, the pass rule, the
contact sheet's layout, and a tiny CPU run through `streamer train evaluate --mode quality`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streamer.cli import main as cli_main
from streamer.train import evaluate as ev
from streamer.train import quality as q
from streamer.train.data import BuiltinRecipe
from streamer.train.heldout import heldout_segments, look_targets, nanmean


def shapes(dx: int = 0, h: int = 48, w: int = 64) -> torch.Tensor:
    """A grey frame [H, W, 3] uint8: a bright rectangle and a mid-grey disc on a dark ground, moved dx px."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.full((h, w), 40)
    img[(x >= 10 + dx) & (x < 30 + dx) & (y >= 8) & (y < 40)] = 200
    img[(x - 46 - dx) ** 2 + (y - 24) ** 2 < 100] = 120
    return img[..., None].expand(h, w, 3).to(torch.uint8).contiguous()


def test_pearson_by_hand() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert q.pearson(a, 2 * a + 5).item() == pytest.approx(1.0)
    assert q.pearson(a, -a).item() == pytest.approx(-1.0)
    # x = 1 2 3 4, y = 1 3 2 4: deviations (-1.5 -0.5 0.5 1.5) and (-1.5 0.5 -0.5 1.5): 4 / 5 = 0.8
    assert q.pearson(a, torch.tensor([[1.0, 3.0], [2.0, 4.0]])).item() == pytest.approx(0.8)
    assert math.isnan(q.pearson(a, torch.ones(2, 2)).item())  # a flat map has no correlation


def test_edge_score_on_hand_made_frames() -> None:
    a = shapes()
    assert q.edge_corr(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert q.edge_corr(a, 255 - a).item() == pytest.approx(1.0, abs=1e-5)  # a negative keeps every outline
    soft = torch.from_numpy(np.array(Image.fromarray(a.numpy()).reduce(4).resize((64, 48))))  # a quarter the detail
    blurred, one, six = (q.edge_corr(a, b).item() for b in (soft, shapes(1), shapes(6)))
    assert 0.95 > blurred > 0.6 and 0.95 > one > 0.6 and six < 0.3  # blurred or moved outlines score lower
    flat = torch.full_like(a, 90)
    assert math.isnan(q.edge_corr(a, flat).item()) and math.isnan(q.edge_corr(flat, flat).item())
    # outlines exactly where the other frame is flat, and none where it has its one edge: negative
    x = torch.arange(64).expand(48, 64)
    step = torch.where(x < 32, 30, 220)
    stripes = torch.where((x // 2) % 2 == 0, 60, 190)
    stripes[:, 24:40] = 120
    grey = [t[..., None].expand(48, 64, 3).to(torch.uint8) for t in (step, stripes)]
    assert q.edge_corr(grey[0], grey[1]).item() < -0.3
    batch = q.edge_corr(torch.stack([a, a, a]), torch.stack([a, shapes(6), flat]))  # [N, H, W, 3] -> [N]
    assert batch.shape == (3,) and batch[0].item() == pytest.approx(1.0, abs=1e-6) and math.isnan(batch[2].item())
    assert nanmean(batch) == pytest.approx((1.0 + six) / 2, abs=1e-6)  # undefined frames are left out of the mean
    assert math.isnan(nanmean(torch.tensor([float("nan")])))


def test_pass_rule() -> None:
    assert q.passes(3.0, 0.6) and q.passes(7.5, 0.95)
    assert not q.passes(2.99, 0.9) and not q.passes(4.0, 0.59)
    assert not q.passes(float("nan"), 0.9) and not q.passes(4.0, float("nan"))


def test_sheet_picks_spread_over_the_stream() -> None:
    assert q.sheet_picks(600, 3) == [100, 300, 500]
    assert q.sheet_picks(6, 2) == [1, 4] and q.sheet_picks(2, 5) == [0, 1]


def test_contact_sheet_layout_scaling_and_missing_frames(tmp_path: Path) -> None:
    f = torch.zeros(32, 48, 3, dtype=torch.uint8)
    rows = [q.SheetRow("noir", ["a"], [(f, f + 100, f + 200), None]), q.SheetRow("neon", [], [(f, f, f)])]
    path = q.contact_sheet(rows, tmp_path / "sub" / "sheet.png", tile=24)  # 48 px wide frames -> 24 x 16
    img = np.asarray(Image.open(path))
    assert img.shape == (q.HEADER_H + 2 * (16 + q.GAP), q.LABEL_W + 2 * (3 * 24 + q.GAP), 3)
    y, x = q.HEADER_H + 4, q.LABEL_W + 24 + 4  # row 0, frame 0, the target tile
    assert (img[y, x] == 100).all() and (img[y, x + 24] == 200).all()
    assert tuple(img[y, q.LABEL_W + 3 * 24 + q.GAP + 4]) == q.BG  # no output for that frame: left blank
    with pytest.raises(ValueError, match="no output frames"):
        q.contact_sheet([q.SheetRow("noir", [], [None])], tmp_path / "x.png")


def test_quality_mode_through_the_cli_writes_sheet_json_and_table(
    tmp_path: Path, media_paths: list[Path], random_text: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet, out = tmp_path / "images" / "sheet.png", tmp_path / "quality.json"
    argv = ["train", "evaluate", "--mode", "quality", "--checkpoint", "random", "--vae", "random",
            "--width", "32", "--height", "32", "--device", "cpu", "--frames", "6", "--looks", "noir,neon",
            "--sheet", str(sheet), "--sheet-frames", "2", "--media", *map(str, media_paths), "--json", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    result = json.loads(out.read_text())
    found = result["quality"]
    assert result["mode"] == "quality" and found["sheet"] == str(sheet) and found["sheet_frames"] == [1, 4]
    assert set(found["per_look"]) == {"noir", "neon"} and found["steps"] == 1 and found["strength"] == 0.45
    for v in found["per_look"].values():
        assert all(math.isfinite(v[k]) for k in ("psnr", "input_psnr", "edge_corr", "target_edge_corr"))
        assert v["gain_db"] == pytest.approx(v["psnr"] - v["input_psnr"]) and v["missing_frames"] == 0
        assert v["pass"] == q.passes(v["gain_db"], v["edge_corr"])
    assert found["passed"] == sum(v["pass"] for v in found["per_look"].values())
    table = capsys.readouterr().out
    assert "| random | noir |" in table and "| random | mean |" in table and "edge corr (≥ 0.6)" in table
    # the sheet: row per look, input | target | output per picked frame, the input being the held-out stream's
    img = np.asarray(Image.open(sheet))
    assert img.shape == (q.HEADER_H + 2 * (32 + q.GAP), q.LABEL_W + 2 * (3 * 32 + q.GAP), 3)
    recipe = BuiltinRecipe(("noir",), (32, 32), paths=media_paths, part="heldout")
    stream = torch.cat([s.inputs for s in heldout_segments(recipe, 6, seed=1)])
    for i, look in enumerate(("noir", "neon")):
        y = q.HEADER_H + i * (32 + q.GAP)
        for j, frame in enumerate((1, 4)):
            x = q.LABEL_W + j * (3 * 32 + q.GAP)
            assert np.array_equal(img[y : y + 32, x : x + 32], stream[frame].numpy())
            target = look_targets(stream[frame : frame + 1], look)[0].numpy()
            assert np.array_equal(img[y : y + 32, x + 32 : x + 64], target)
            assert not np.array_equal(img[y : y + 32, x + 64 : x + 96], stream[frame].numpy())
    assert ev.main(["--report", str(out)]) == 0  # the report tabulates quality runs too
    assert "| random | neon |" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the fast path's graph capture)")
def test_quality_on_cuda_fast_path_matches_eager(media_paths: list[Path], random_text: None) -> None:
    import dataclasses

    from streamer.config import ModelSettings
    from streamer.model.loading import load_parts
    from streamer.train.heldout import Progress

    a = torch.stack([shapes(), shapes(1), shapes(6)])
    assert torch.allclose(q.edge_corr(a.cuda(), shapes().cuda()).cpu(), q.edge_corr(a, shapes()), atol=1e-5)
    m = ModelSettings(checkpoint="random", vae="random", width=32, height=32, device="cuda", fast_path=False)
    parts = load_parts(m, torch.device("cuda"))
    recipe = BuiltinRecipe(("noir",), (32, 32), paths=media_paths, part="heldout")
    got = {}
    for fast in (False, True):
        settings = dataclasses.replace(m, fast_path=fast)
        found, rows = q.evaluate_quality(
            parts, settings, recipe, ["noir", "neon"], 40, 1, Progress(80, parts.device), 2
        )
        assert all(f is not None for r in rows for f in r.frames)
        got[fast] = found["per_look"]
    for look in ("noir", "neon"):
        assert got[True][look]["psnr"] == pytest.approx(got[False][look]["psnr"], abs=0.05)
        assert got[True][look]["edge_corr"] == pytest.approx(got[False][look]["edge_corr"], abs=0.02)
        assert got[True][look]["target_edge_corr"] == pytest.approx(got[False][look]["target_edge_corr"], abs=1e-6)
