"""The training TOML goes through the daemon's config reader and key check (streamer/config/loading.py):
a typo gets the same error, naming the file, the dotted key and the closest known key."""

from pathlib import Path

import pytest

from streamer.config import ConfigError
from streamer.train import config as tconfig


def _error(tmp_path: Path, body: str) -> str:
    f = tmp_path / "train.toml"
    f.write_text(body)
    with pytest.raises(ConfigError) as e:
        tconfig.load(f)
    message = str(e.value)
    assert message.startswith(f"{f}: "), message  # names the file
    return message


def test_a_misspelt_training_key_gets_did_you_mean(tmp_path: Path) -> None:
    message = _error(tmp_path, "[train]\nsteps = 10\nwarmpu = 5\n")
    assert "unknown key 'train.warmpu' (did you mean 'warmup'?); known keys in [train]: stage, preset" in message
    # a bare file of training keys (no [train] header) is checked the same way
    assert "unknown key 'train.stepz' (did you mean 'steps'?)" in _error(tmp_path, "stepz = 3\n")


def test_a_misspelt_or_stray_table_is_an_error_not_ignored(tmp_path: Path) -> None:
    assert "unknown key 'trian' (did you mean 'train'?)" in _error(tmp_path, "[trian]\nsteps = 10\n")
    assert "unknown key 'modle'; known keys in [the top level]: train" in _error(
        tmp_path, "[train]\nsteps = 10\n[modle]\nwidth = 64\n"
    )
    assert "[train] must be a table, got int" in _error(tmp_path, "train = 3\n")


def test_unreadable_files_get_the_daemons_messages(tmp_path: Path) -> None:
    assert "not valid TOML" in _error(tmp_path, "[train\n")
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: training config not found \(see docs/training\.md"):
        tconfig.load(missing)
    (tmp_path / "latin1.toml").write_bytes(b'[train]\nout_dir = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        tconfig.load(tmp_path / "latin1.toml")
