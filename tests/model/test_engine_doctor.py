"""Model doctor checks: file recognition, the text encoder, and the memory estimate's arithmetic."""

from __future__ import annotations

from importlib.machinery import ModuleSpec
from pathlib import Path

import torch

from streamer.config import from_dict
from streamer.doctor import PROVIDERS
from streamer.model.doctor import GIB, checks, estimate_memory
from streamer.model.vae import TAEHV


def _by_name(settings) -> dict:
    return {c.name: c for c in checks(settings)}


def test_provider_is_registered() -> None:
    assert "streamer.model.doctor:checks" in PROVIDERS


def test_defaults_warn_about_random_weights_and_fit_in_memory(tmp_path, monkeypatch) -> None:
    from streamer.model import loading

    monkeypatch.setattr(loading, "EMBEDDED_DIR", tmp_path / "no-embedded-weights")  # as before the weights shipped
    found = _by_name(from_dict({"model": {"cache_dir": str(tmp_path)}}))
    assert found["model checkpoint"].status == "WARN" and "random" in found["model checkpoint"].detail
    assert found["model autoencoder"].status == "WARN"
    assert found["text encoder"].status == "OK" and "MiniLM" in found["text encoder"].detail
    assert found["prompt cache"].status == "OK"
    mem = found["model memory"]
    assert mem.status == "OK" and "needs ≈" in mem.detail and "tiny 256x256" in mem.detail


def test_autoencoder_files_are_recognised_or_failed(tmp_path) -> None:
    torch.save(TAEHV(True, encoder_width=8, decoder_widths=(16, 8, 8, 8)).state_dict(), tmp_path / "t.pth")
    torch.save(TAEHV(False, encoder_width=8, decoder_widths=(16, 8, 8, 8)).state_dict(), tmp_path / "p.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    ok = _by_name(from_dict({"model": {"vae": str(tmp_path / "t.pth"), "preset": "wan-1.3b"}}))["model autoencoder"]
    assert ok.status == "OK" and "temporal" in ok.detail
    wrong = _by_name(from_dict({"model": {"vae": str(tmp_path / "p.pth"), "preset": "wan-1.3b"}}))
    assert wrong["model autoencoder"].status == "FAIL"
    junk = _by_name(from_dict({"model": {"vae": str(tmp_path / "junk.pth")}}))["model autoencoder"]
    assert junk.status == "FAIL" and "cannot read" in junk.detail


def test_wan_without_text_encoder_and_missing_folder(tmp_path) -> None:
    rand = _by_name(from_dict({"model": {"preset": "wan-1.3b"}}))["text encoder"]
    assert rand.status == "WARN" and "umT5" in rand.detail
    missing = _by_name(from_dict({"model": {"preset": "wan-1.3b", "text_encoder": str(tmp_path / "no")}}))
    assert missing["text encoder"].status == "FAIL" and "does not exist" in missing["text encoder"].detail


def test_memory_estimate_matches_the_documented_kv_size() -> None:
    # model.md §2: bf16 KV for 1.3B is ≈ 274 MiB per cached latent frame at 480x832.
    m = from_dict({"model": {"preset": "wan-1.3b", "width": 832, "height": 480, "dtype": "bfloat16", "window": 2, "sinks": 0}})
    per_frame = estimate_memory(m.model, on_gpu=True).kv_cache / 2
    assert abs(per_frame / 2**20 - 274) < 1
    est = estimate_memory(m.model, on_gpu=True)
    assert abs(est.weights - (1_418_996_800 * 2 + 0.2e9)) < 0.3e9  # bf16 matmuls, some fp32 parts
    assert est.text_encoder == 0 and est.total < 8 * GIB


def test_doctor_shows_where_the_fused_kernels_come_from() -> None:
    from streamer.model.doctor import fused_kernels_check

    ok = fused_kernels_check()
    kernels_folder = Path(__file__).resolve().parents[2] / "kernels"
    assert ok.status == "OK" and ok.detail == f"streamer_kernels from {kernels_folder}"  # this checkout's kernels/

    def broken(name: str) -> ModuleSpec | None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    for find_spec in (lambda name: None, broken):  # not installed; a parent that fails to import
        failed = fused_kernels_check(find_spec)
        assert failed.status == "FAIL" and "streamer_kernels" in failed.detail and "reinstall" in failed.fix
