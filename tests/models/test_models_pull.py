"""`streamer models pull` against the local fake Hub, through the real huggingface_hub client."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from fake_hub import WAN_EXTRAS, FakeHub, closed_port, fake_content

from streamer.cli import main
from streamer.config import load
from streamer.models.catalogue import all_files, find
from streamer.models.hub import human_bytes

SF_REPO, SF_PATH = "gdhe17/Self-Forcing", "checkpoints/self_forcing_dmd.pt"
USER_CONFIG = """# my stream
[video]
width = 640   # keep it small

[model]
preset = "tiny"          # was tiny before the GPU arrived
checkpoint = ""          # DiT weights
lora = "old-lora.pt"     # a LongLive LoRA from an earlier try
# my own note about the VAE
vae = ""
"""


def pull(tmp_path: Path, *extra: str, name: str = "self-forcing") -> int:
    return main(["models", "pull", name, "--dir", str(tmp_path / "weights"), *extra])


def test_pull_fetches_only_the_needed_files_and_updates_the_config(hub: FakeHub, tmp_path: Path) -> None:
    cfg = tmp_path / "streamer.toml"
    cfg.write_text(USER_CONFIG)
    assert pull(tmp_path, "--config", str(cfg)) == 0

    weights = tmp_path / "weights"
    checkpoint = weights / "Self-Forcing" / SF_PATH
    wan = weights / "Wan2.1-T2V-1.3B"
    assert checkpoint.read_bytes() == fake_content(SF_REPO, SF_PATH)
    assert (wan / "models_t5_umt5-xxl-enc-bf16.pth").is_file()
    assert (wan / "google/umt5-xxl/tokenizer.json").read_bytes() == fake_content(
        "Wan-AI/Wan2.1-T2V-1.3B", "google/umt5-xxl/tokenizer.json"
    )
    assert (weights / "taehv" / "taew2_1.pth").is_file()
    # repo paths asked for: /{repo}/resolve/{commit}/{path}
    asked = {r.path.split("/resolve/")[1].split("/", 1)[1] for r in hub.requests if "/resolve/" in r.path}
    assert asked == {f.path for f in all_files(find("self-forcing"))}
    for extra in WAN_EXTRAS:  # never the Wan DiT (5.7 GB), its VAE or its config
        assert extra not in asked
        assert not (wan / extra).exists()

    text = cfg.read_text()
    for comment in ("# my stream", "# keep it small", "# was tiny before the GPU arrived", "# DiT weights",
                    "# my own note about the VAE"):  # fmt: skip
        assert comment in text
    m = load(cfg).model
    assert m.preset == "wan-1.3b"
    assert Path(m.checkpoint) == checkpoint
    assert Path(m.vae) == weights / "taehv" / "taew2_1.pth"
    assert Path(m.text_encoder) == wan
    assert m.lora == ""  # the old LongLive LoRA must not merge into Self-Forcing
    assert load(cfg).video.width == 640


def test_pull_into_the_cache_then_again_downloads_nothing(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "new" / "streamer.toml"  # missing: created from the example config
    assert main(["models", "pull", "longlive", "--config", str(cfg)]) == 0
    m = load(cfg).model
    cache = tmp_path / "hf-cache"
    assert Path(m.checkpoint).is_relative_to(cache) and m.checkpoint.endswith("models/longlive_base.pt")
    assert m.lora.endswith("models/lora.pt") and Path(m.lora).is_file()
    assert "[prompt]" in cfg.read_text()  # the example's other sections are there
    first = len(hub.downloads())
    assert first == 8

    capsys.readouterr()
    assert main(["models", "pull", "longlive", "--config", str(cfg)]) == 0
    assert len(hub.downloads()) == first
    assert "all already here" in capsys.readouterr().out


def test_a_dropped_connection_resumes_with_a_range_request(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # The library writes what it has read in chunks of this size (10 MB); smaller, so the half file the
    # fake sends before dropping the connection is on disk and the retry has something to resume.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256)
    hub.drop_once.add(f"{SF_REPO}/{SF_PATH}")
    assert pull(tmp_path, "--no-config") == 0
    content = fake_content(SF_REPO, SF_PATH)
    assert (tmp_path / "weights/Self-Forcing" / SF_PATH).read_bytes() == content
    ranged = [r for r in hub.downloads() if "range" in {k.lower() for k in r.headers}]
    assert len(ranged) == 1
    assert ranged[0].server == "cdn"
    range_header = next(v for k, v in ranged[0].headers.items() if k.lower() == "range")
    start = int(range_header.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= len(content) // 2 and start % 256 == 0


def test_a_corrupted_download_is_found_and_fetched_again(
    hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub.corrupt_once.add("madebyollin/taehv/taew2_1.pth")
    with caplog.at_level(logging.WARNING, logger="streamer.models.hub"):
        assert pull(tmp_path, "--no-config", name="taehv") == 0
    assert (tmp_path / "weights/taehv/taew2_1.pth").read_bytes() == fake_content("madebyollin/taehv", "taew2_1.pth")
    assert len(hub.downloads()) == 2
    assert "sha256" in caplog.text and "downloading it again" in caplog.text


def test_a_damaged_file_on_disk_is_found_and_fetched_again(hub: FakeHub, tmp_path: Path) -> None:
    assert pull(tmp_path, "--no-config", name="wan-t5") == 0
    tokenizer = tmp_path / "weights/Wan2.1-T2V-1.3B/google/umt5-xxl/tokenizer_config.json"  # kept in git
    good = tokenizer.read_bytes()
    tokenizer.write_bytes(b"X" * len(good))  # same size: only the git object id can tell
    before = len(hub.downloads())
    assert pull(tmp_path, "--no-config", name="wan-t5") == 0
    assert tokenizer.read_bytes() == good
    assert len(hub.downloads()) == before + 1


def test_no_network_is_one_clear_line(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    assert pull(tmp_path, "--no-config") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cannot reach {dead}" in err and "HF_ENDPOINT" in err and "HF_HUB_OFFLINE" in err


def test_a_full_disk_is_refused_before_any_download(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    assert pull(tmp_path, "--no-config") == 1
    err = capsys.readouterr().err
    needed = sum(len(fake_content(f.repo, f.path)) for f in all_files(find("self-forcing")))
    assert f"not enough disk space for the download into {tmp_path / 'weights'}" in err
    assert f"it needs {human_bytes(needed)}, 1.0 kB is free" in err and "--dir" in err
    assert [r for r in hub.requests if "/resolve/" in r.path or r.server == "cdn"] == []
    assert not (tmp_path / "weights").exists()


def test_a_refused_token_names_hf_token_and_never_shows_it(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.token = "hf_fakeSecretToken123"
    assert pull(tmp_path, "--no-config", name="taehv") == 1
    err = capsys.readouterr().err
    assert "HF_TOKEN" in err and "401" in err
    monkeypatch.setenv("HF_TOKEN", "hf_wrongSecret456")
    assert pull(tmp_path, "--no-config", name="taehv") == 1
    out = capsys.readouterr()
    assert "HF_TOKEN" in out.err and "hf_wrongSecret456" not in out.err + out.out
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert pull(tmp_path, "--no-config", name="taehv") == 0
    assert hub.token not in "".join(capsys.readouterr())


def test_an_unknown_name_lists_the_names_with_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "self-forcin", "--no-config"]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'self-forcing'?" in err
    assert "self-forcing, streamdiffusionv2, causvid, longlive, wan-t5, taehv" in err


def test_offline_pull_points_the_config_at_files_already_here(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert pull(tmp_path, "--no-config", name="taehv") == 1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert pull(tmp_path, "--no-config", name="taehv") == 0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    cfg = tmp_path / "offline.toml"
    assert pull(tmp_path, "--config", str(cfg), name="taehv") == 0
    assert "not compared with the Hub" in capsys.readouterr().out
    assert Path(load(cfg).model.vae) == tmp_path / "weights/taehv/taew2_1.pth"


def test_errors_wrapped_by_hf_hub_download_are_named_by_their_cause() -> None:
    """hf_hub_download reports a failed metadata request as LocalEntryNotFoundError from the real error."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from streamer.models.hub import endpoint, explain

    def wrapped(cause: Exception) -> LocalEntryNotFoundError:
        e = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
        e.__cause__ = cause
        return e

    response = httpx2.Response(503, request=httpx2.Request("HEAD", f"{endpoint()}/o/r/resolve/main/f"))
    assert explain(wrapped(HfHubHTTPError("503", response=response)), "o/r") == (
        f"{endpoint()} answered HTTP 503 for o/r; try again later"
    )
    refused = explain(wrapped(httpx2.ConnectError("[Errno 111] Connection refused")), "o/r")
    assert refused is not None and refused.startswith(f"cannot reach {endpoint()} ([Errno 111] Connection refused)")
