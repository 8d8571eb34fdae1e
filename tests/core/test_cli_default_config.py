"""Without --config, commands read ./streamer.toml when it exists (what `streamer models pull` writes), so the
GPU quick start is `streamer models pull NAME` then `streamer run`; without the file, the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.cli import main


def test_commands_read_streamer_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check-prompt", "a red fox"]) == 0  # no file: the embedded defaults
    (tmp_path / "streamer.toml").write_text('[video]\nwidth = "wide"\n')
    assert main(["check-prompt", "a red fox"]) == 2  # the file in the working directory is read...
    assert "streamer.toml" in capsys.readouterr().err  # ...and named in the error
    (tmp_path / "other.toml").write_text("[video]\nwidth = 640\n")
    assert main(["check-prompt", "--config", "other.toml", "a red fox"]) == 0  # an explicit --config wins
