"""`streamer models list` and the catalogue's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_hub import FakeHub, closed_port, fake_content

from streamer.cli import main
from streamer.config import from_dict
from streamer.models.catalogue import ENTRIES, NAMES, WAN_REPO, all_files, find
from streamer.models.hub import human_bytes
from streamer.models.pull import config_values


def _row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{name} "))


def test_list_works_offline_with_the_stored_sizes(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert main(["models", "list", "--dir", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    for e in ENTRIES:
        row = _row(out, e.name)
        assert f"~{human_bytes(sum(f.approx_bytes for f in all_files(e)))}" in row
        assert e.good_for in row and " - " in row
    assert "~17.1 GB" in _row(out, "self-forcing")  # 5.68 GB DiT + 11.36 GB T5 + tokenizer + TAEHV


def test_list_shows_what_is_on_disk_and_the_hubs_sizes(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = str(tmp_path / "weights")
    assert main(["models", "pull", "self-forcing", "--dir", weights, "--no-config"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--dir", weights, "--hub"]) == 0
    out = capsys.readouterr().out
    for name in ("self-forcing", "wan-t5", "taehv"):
        assert "  yes " in _row(out, name)
    assert "6 of 7 files" in _row(out, "causvid")  # its own checkpoint is the one missing
    assert "6 of 8 files" in _row(out, "longlive")  # base + LoRA missing
    exact = sum(len(fake_content(f.repo, f.path)) for f in all_files(find("longlive")))
    assert f" {human_bytes(exact)} " in _row(out, "longlive")
    assert f"from {hub.endpoint}" in out


def test_every_entry_writes_only_keys_the_config_reads() -> None:
    for e in ENTRIES:
        values = config_values(e, {f: Path("/w") / f.repo / f.path for f in all_files(e)})
        m = from_dict({"model": values}).model  # unknown keys or wrong values raise ConfigError
        if e.preset:
            assert m.preset == e.preset and m.checkpoint.endswith(".pt")
            assert m.vae.endswith("taew2_1.pth") and m.text_encoder == f"/w/{WAN_REPO}"
            assert (m.lora != "") == (e.name == "longlive")
    assert set(config_values(find("taehv"), {f: Path("/t.pth") for f in find("taehv").files})) == {"vae"}


def test_no_entry_fetches_the_wan_dit_or_its_full_vae() -> None:
    paths = {f.path for e in ENTRIES for f in all_files(e)}
    assert not {p for p in paths if "diffusion_pytorch_model" in p or p == "Wan2.1_VAE.pth"}
    assert set(NAMES) == {"self-forcing", "streamdiffusionv2", "causvid", "longlive", "wan-t5", "taehv"}
