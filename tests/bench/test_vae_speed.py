"""streamer/bench/vae_speed.py: the plumbing at a tiny size on the CPU (the timings mean nothing there)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from streamer.bench import vae_speed
from streamer.model.fast.vae import FUSIONS, ChunkCodec


def test_bench_checks_every_fusion_against_the_old_codec_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "vae.json"
    rc = vae_speed.main(["W1", "--device", "cpu", "--tiny", "--json", str(out), "--chunk", "W1"])
    report = json.loads(out.read_text())
    assert rc == 0
    wl = report["codec"]["W1"]
    assert (wl["height"], wl["width"]) == (24, 48)
    rows = {(r["layout"], r["fusion"]): r for r in wl["rows"]}
    switched = {("NHWC", f"torch {how}") for sw in vae_speed.SWITCHES for how in (f"-{sw}", "again")}
    assert set(rows) == {(layout, f) for layout in ("NCHW", "NHWC") for f in FUSIONS} | switched
    assert all(getattr(vae_speed.FusedStream, sw) for sw in vae_speed.SWITCHES)  # each switched back on
    for (_layout, fusion), r in rows.items():
        if fusion == "cudnn":
            assert "CUDA" in r["skipped"]
            continue
        assert r["equal"] and r["max_scaled_error"] < 1e-5 and r["eager_ms"] > 0  # fp32 here
    assert "skipped" in report["chunk"]["W1"]
    text = vae_speed.format_report(report)
    assert "NCHW torch" in text and "fastest that passed: NCHW " in text


def test_a_wrong_codec_is_reported_not_equal() -> None:
    """The equality check can fail: a codec over other weights differs from the fp32 reference."""
    from streamer.model.vae import TAEHV

    torch.manual_seed(0)
    a, b = (TAEHV(True, encoder_width=8, decoder_widths=(16, 8, 8, 8)).eval() for _ in range(2))
    chunks = [torch.rand(4, 3, 16, 16) for _ in range(2)]
    assert vae_speed.error_against(ChunkCodec(a, fusion="none"), ChunkCodec(a, fusion="torch"), chunks) < 1e-5
    err = vae_speed.error_against(ChunkCodec(a, fusion="none"), ChunkCodec(b, fusion="torch"), chunks)
    assert not vae_speed.within_rounding(err, old_error=0.0)
