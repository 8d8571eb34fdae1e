"""Config files that are not config files: nested 3000 deep, 5000-digit integers, binary, UTF-16, a folder, a
FIFO, unreadable, huge, a 100,000-character name. The loader answers each with a ConfigError naming the
file, and `streamer run` / `streamer doctor` exit non-zero with that one line, never a traceback."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer import config
from streamer.cli import main
from streamer.config import MAX_CONFIG_BYTES, ConfigError


def _deep_array(p: Path) -> None:
    p.write_text("[model]\ntimesteps = " + "[" * 3000 + "]" * 3000 + "\n")


def _deep_table(p: Path) -> None:
    p.write_text("[moderation]\npresets = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")


def _huge_int(p: Path) -> None:
    p.write_text("[model]\nseed = " + "7" * 5000 + "\n")


def _binary(p: Path) -> None:
    p.write_bytes(random.Random(3).randbytes(4096))


def _utf16(p: Path) -> None:
    p.write_text("[video]\nfps = 25.0\n", encoding="utf-16")


def _folder(p: Path) -> None:
    p.mkdir()


def _fifo(p: Path) -> None:
    os.mkfifo(p)  # reading it would block forever: the loader must not try


def _huge(p: Path) -> None:
    p.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))


def _nul_in_text(p: Path) -> None:
    p.write_bytes(b"[video]\nfps = 25.0\x00\n")


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "nested 3000 deep (array)": (_deep_array, "not valid TOML: values nested too deeply"),
    "nested 3000 deep (inline table)": (_deep_table, "not valid TOML: values nested too deeply"),
    "a 5000-digit integer": (_huge_int, "not valid TOML: Exceeds the limit (4300 digits)"),
    "binary": (_binary, "not UTF-8 text"),
    "UTF-16": (_utf16, "not UTF-8 text"),
    "a folder": (_folder, "not a regular file, so not a config file"),
    "a FIFO": (_fifo, "not a regular file, so not a config file"),
    "over a megabyte": (_huge, "larger than any config file"),
    "a NUL byte": (_nul_in_text, "not valid TOML"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_loader_answers_with_one_config_error_naming_the_file(tmp_path: Path, case: str) -> None:
    make, words = CASES[case]
    p = tmp_path / "bad.toml"
    make(p)
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(e.value).startswith(f"{p}: ") and words in str(e.value), str(e.value)
    assert e.value.args[0].isprintable()


@pytest.mark.parametrize("command", ["run", "doctor"])
@pytest.mark.parametrize("case", list(CASES))
def test_run_and_doctor_exit_2_with_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, case: str
) -> None:
    make, words = CASES[case]
    p = tmp_path / "bad.toml"
    make(p)
    assert main([command, "--config", str(p)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"config error: {p}: ") and words in err


def test_an_unreadable_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root, whom chmod 000 does not stop from reading; the folder and FIFO cases "
                    "cover unreadable files here, and test_a_read_refused_by_the_system_is_named the branch")
    p = tmp_path / "secret.toml"
    p.write_text("[video]\nfps = 25.0\n")
    p.chmod(0)
    assert main(["doctor", "--config", str(p)]) == 2
    assert capsys.readouterr().err == f"config error: {p}: cannot read it: Permission denied\n"


def test_a_read_refused_by_the_system_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The chmod case above as root: the same refusal, raised where the loader reads the file."""
    p = tmp_path / "secret.toml"
    p.write_text("[video]\nfps = 25.0\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert main(["run", "--config", str(p)]) == 2
    assert capsys.readouterr().err == f"config error: {p}: cannot read it: Permission denied\n"


def test_a_path_through_a_file_and_a_missing_file_say_not_found(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    for p in (tmp_path / "plain" / "x.toml", tmp_path / "nope.toml"):
        with pytest.raises(ConfigError, match="config file not found"):
            config.load(p)


def test_a_100000_character_path_is_named_by_its_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = str(tmp_path / ("d" * 100_000)) + ".toml"
    assert main(["doctor", "--config", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400 and "Traceback" not in err, err[:500]
    assert err.startswith(f"config error: {name[:80]}...") and "ddd.toml: cannot read it: File name too long" in err


def test_a_nul_in_the_path_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", "conf\0ig.toml"]) == 2
    assert capsys.readouterr().err == "config error: conf\\x00ig.toml: cannot read it: embedded null byte\n"
