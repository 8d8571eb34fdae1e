"""Bad input on the command line gets a one-line answer and a non-zero exit, never a traceback (issue 15).

The review's cases: `init` into an unwritable place, `model inspect` of /dev/null or a FIFO (which
must not hang), non-finite or out-of-range numbers (`bench ... --seconds nan`, `run --frames -1`),
`prune` of a missing file, and doctor checks given a 100,000-character path. Each command runs
in-process through `streamer.cli.main`, so an uncaught exception fails the test with its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamer import cli
from streamer import config as config_mod
from streamer.doctor import Check, clip, run_checks

LONG = "/tmp/" + "a" * 100_000  # past every filesystem's name limit: OSError ENAMETOOLONG


def answer(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """(exit code, everything printed) for `streamer ARGV`; argparse's refusals exit 2."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text, text
    return code, text


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert len(lines[0]) < 600, lines[0][:700]
    return lines[0]


def test_init_into_an_unwritable_place_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, text = answer(capsys, "init", str(a_file / "streamer.toml"))
    assert code == 1 and "is a file, not a folder" in one_line(text)
    assert a_file.read_text() == "x"
    code, text = answer(capsys, "init", LONG + ".toml")
    assert code == 1 and "too long" in one_line(text).lower()
    code, text = answer(capsys, "init", str(tmp_path))  # a folder: name the file
    assert code == 1 and "already exists" in one_line(text)
    if Path("/proc/self").is_dir():  # Linux: /proc takes no new files, even from root
        code, text = answer(capsys, "init", "/proc/streamer.toml")
        assert code == 1 and one_line(text).startswith("cannot write /proc/streamer.toml")


@pytest.mark.timeout(30)
def test_model_inspect_refuses_devices_and_fifos_without_opening_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came: the check must only stat()
    for path in ("/dev/null", "/dev/zero", str(fifo)):
        code, text = answer(capsys, "model", "inspect", path)
        assert code == 1 and "not a regular file or a folder" in one_line(text), path
    code, text = answer(capsys, "model", "inspect", LONG)
    assert code == 1 and "File name too long" in one_line(text)
    tiny = Path(cli.__file__).parent / "model" / "embedded" / "tiny"
    code, text = answer(capsys, "model", "inspect", str(tiny), "--lora", str(fifo))
    assert code == 1 and "--lora" in one_line(text)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (("bench", "pipeline", "--seconds", "nan"), "--seconds"),
        (("bench", "pipeline", "--seconds", "inf"), "--seconds"),
        (("bench", "pipeline", "--seconds", "-1"), "--seconds"),
        (("bench", "pipeline", "--fps", "0"), "--fps"),
        (("bench", "pipeline", "--width", "1e3"), "--width"),
        (("bench", "model", "--iters", "nan"), "--iters"),
        (("bench", "model", "--iters", "0"), "--iters"),
        (("bench", "model", "--steps", "-2"), "--steps"),
        (("run", "--frames", "-1"), "--frames"),
        (("run", "--frames", "9" * 5000), "--frames"),
        (("train", "--config", "x.toml", "--max-minutes", "nan"), "--max-minutes"),
        (("prune", "ckpt", "--out", "o", "--heads", "-1"), "--heads"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(
    argv: tuple[str, ...], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = answer(capsys, *argv)
    last = text.strip().splitlines()[-1]  # argparse: the usage, then one error line
    assert code == 2 and f"argument {option}:" in last and len(last) < 200, text


def test_number_types_still_take_good_values() -> None:
    args = cli.build_parser().parse_args(["bench", "pipeline", "--seconds", "0.5", "--fps", "24", "--width", "640"])
    assert (args.seconds, args.fps, args.width) == (0.5, 24.0, 640)
    assert cli.build_parser().parse_args(["run", "--frames", "0"]).frames == 0  # 0 = until stopped
    assert cli.build_parser().parse_args(["prune", "c", "--out", "o", "--heads", "0"]).heads == 0  # 0 = default


def test_prune_of_a_missing_or_unusable_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pruned"
    code, text = answer(capsys, "prune", str(tmp_path / "missing.safetensors"), "--out", str(out))
    assert code == 1 and one_line(text) == f"error: {tmp_path / 'missing.safetensors'}: no such file or directory"
    code, text = answer(capsys, "prune", "/dev/null", "--out", str(out))
    assert code == 1 and "not a regular file" in one_line(text)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, text = answer(capsys, "prune", str(tmp_path / "missing.pt"), "--out", str(a_file))
    assert code == 1 and "is not a folder" in one_line(text)
    assert not out.exists()


def test_doctor_checks_answer_a_100k_character_path_with_a_fail_line() -> None:
    baseline = run_checks(config_mod.from_dict({}, "t"), ["streamer.model.doctor:checks"])
    for key in ("vae", "cache_dir", "text_encoder", "checkpoint", "lora"):
        settings = config_mod.from_dict({"model": {key: LONG}}, "t")
        checks = run_checks(settings, ["streamer.model.doctor:checks"])
        assert [c.name for c in checks] == [c.name for c in baseline], key  # no check lost to a crash
        fails = [c for c in checks if c.status == "FAIL"]
        assert fails and all("crashed" not in c.detail for c in fails), (key, fails)
        assert all(len(line) < 1000 for c in checks for line in c.line().splitlines()), key


def provider_with_a_long_path(settings: object) -> list[Check]:
    Path(LONG).exists()  # raises OSError ENAMETOOLONG
    return []


def test_an_os_error_in_any_provider_is_a_short_fail_line() -> None:
    checks = run_checks(config_mod.from_dict({}, "t"), [f"{__name__}:provider_with_a_long_path"])
    assert [c.status for c in checks] == ["FAIL"]
    assert "File name too long" in checks[0].detail and len(checks[0].line()) < 600
    assert clip("x" * 300, 10) == "xxxxxxxxxx… (300 characters)"


def test_doctor_command_with_a_long_path_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "long.toml"
    cfg.write_text(f'[model]\nvae = "{LONG}"\ncache_dir = "{LONG}"\n')
    code, text = answer(capsys, "doctor", "--config", str(cfg))
    assert code == 1
    assert "[FAIL] model autoencoder: file: File name too long" in text
    assert "[FAIL] prompt cache: File name too long" in text
    assert max(len(line) for line in text.splitlines()) < 1000
