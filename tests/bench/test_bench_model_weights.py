"""`streamer bench model`: the weights it measures (embedded / file / random) and the preset's KV window."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamer.bench.model import bench_model_command, build_engine, format_table, workload_settings
from streamer.bench.model_workloads import WORKLOADS
from streamer.cli import build_parser
from streamer.config import effective_window
from streamer.model import loading
from streamer.model.config import preset
from streamer.model.dit import DiT
from streamer.model.vae import TAEHV
from streamer.train.checkpoint import save_dit_weights

SMALL = dataclasses.replace(preset("tiny"), num_layers=2, num_heads=2, head_width=64, ffn_dim=256)


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "embedded" / "tiny"
    torch.manual_seed(0)
    save_dit_weights(folder, SMALL, DiT(SMALL).state_dict(), None)
    vae = TAEHV(temporal=False, encoder_width=4, decoder_widths=(16, 8, 4, 4))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / "vae.safetensors"))
    monkeypatch.setattr(loading, "EMBEDDED_DIR", folder)
    return folder


def _bench(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    args = build_parser().parse_args(
        ["bench", "model", "custom", "--preset", "tiny", "--width", "32", "--height", "32", "--iters", "2",
         "--variants", "eager", "--device", "cpu", "--json", *extra]
    )  # fmt: skip
    assert bench_model_command(args) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_measures_the_embedded_tiny_weights_by_default(embedded, capsys) -> None:
    report = _bench(capsys)
    w = report["weights"]
    assert w["DiT"].startswith("embedded tiny (model.safetensors: custom")
    assert w["autoencoder"] == "embedded tiny (vae.safetensors)"
    assert w["dit_shape"] == "dim 256, 2 layers, 2 heads x 64, ffn 256"
    assert (report["window"], report["sinks"]) == (3, 1)  # the tiny preset's defaults
    assert report["variants"][0]["ms_p50"] > 0
    table = format_table(report)
    assert "window 3 (1 sinks); DiT: embedded tiny" in table


def test_bench_checkpoint_and_vae_options_reach_the_loader(embedded, tmp_path: Path, monkeypatch, capsys) -> None:
    import streamer.bench.model as bench

    seen: dict = {}

    def fake_bench(wl, variants, iters, device, **kw):  # the CLI wiring only; the real run is tested above
        seen.update(kw)
        return {"variants": []}

    monkeypatch.setattr(bench, "bench_model", fake_bench)
    args = build_parser().parse_args(["bench", "model", "W4", "--checkpoint", "random", "--vae", "x.pth", "--json"])
    assert bench_model_command(args) == 0 and seen == {"checkpoint": "random", "vae": "x.pth", "mode": "sequential"}
    assert bench_model_command(build_parser().parse_args(["bench", "model", "W4", "--json"])) == 0
    assert seen == {"checkpoint": "", "vae": "", "mode": "sequential"}  # default: whatever the loader picks
    capsys.readouterr()

    wl = dataclasses.replace(WORKLOADS["W4"], width=32, height=32)
    forced = build_engine(wl, "cpu", checkpoint="random", vae="random")
    assert forced.parts.sources["DiT"] == "random (seed 0)" and forced.dit.cfg == preset("tiny")
    assert forced.parts.random_parts == ["DiT", "autoencoder", "text encoder"]
    vae = TAEHV(temporal=False, encoder_width=4, decoder_widths=(8, 8, 4, 4))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "mine.safetensors"))
    mine = build_engine(wl, "cpu", checkpoint=str(embedded), vae=str(tmp_path / "mine.safetensors"))
    assert mine.parts.sources["DiT"].startswith("model.safetensors: custom")  # a file, not "embedded"
    assert mine.parts.sources["autoencoder"] == "mine.safetensors" and mine.parts.random_parts == ["text encoder"]
    assert (mine.cache.window, mine.cache.sinks) == (3, 1)


def test_workload_windows_follow_the_preset() -> None:
    got = {name: effective_window(workload_settings(wl, "cpu")) for name, wl in WORKLOADS.items()}
    assert got == {"W1": (6, 3), "W2": (6, 3), "W3": (3, 1), "W4": (3, 1)}
    explicit = dataclasses.replace(WORKLOADS["W4"], window=5, sinks=2)
    assert effective_window(workload_settings(explicit, "cpu")) == (5, 2)
    assert workload_settings(WORKLOADS["W1"], "cuda", checkpoint="random").checkpoint == "random"
