"""A bounded, seeded fuzz of the config loader (issue 15, item 3).

From config.example.toml, each input applies 1-3 seeded mutations: a value replaced by a wrong type, NaN,
an infinity, a huge or out-of-range number, a NUL or bidi string, deep nesting; an unknown key or section;
a deleted bracket, quote or `=`; a duplicated line; random bytes; a truncation; UTF-16. Every input must
load, or raise a ConfigError that is one printable line starting with the file's name: never any other
exception. A sample also goes through `streamer doctor --config` in-process: exit 2 with that one line
for a refused file, a finished report for a valid one. Prints the counts (docs/reliability.md quotes them).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer import config
from streamer.cli import main
from streamer.config import ConfigError, Settings

SEED = 15  # the number; change it to explore, keep it fixed in CI
INPUTS = 300
CLI_EVERY = 12  # every 12th input also goes through `streamer doctor`
CLI_VALID_MAX = 2  # a valid config runs every doctor check (~1 s): two are enough to show it finishes

EXAMPLE = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()

VALUES = [
    '"text"', '""', '"a\\u0000b"', '"/tmp/x\\u0000.mp4"', '"a\\u202eb\\n"', "'x'", "1", "0", "-1", "-0.0", "0.5",
    "1e308", "1e400", "-1e400", "inf", "-inf", "nan", "+nan", "-nan", "9" * 25, "9" * 5000, "-" + "9" * 19,
    "65536", "2147483648", "0x7fffffffffffffff", "1e-400", "true", "false", "[]", "[1, 2]", "['a', 3]",
    "[[[[1]]]]", "{}", "{ a = 1 }", "{ a = { b = 'c' } }", "1979-05-27", "07:32:00", "'" + "x" * 10_000 + "'",
    "[" * 3000 + "]" * 3000, "{a=" * 3000 + "1" + "}" * 3000, "[" * 200 + "1" + "]" * 200,
]
KEY_LINE = re.compile(r"^(\s*[A-Za-z_][\w-]*\s*=)")


def _lines(text: str) -> list[str]:
    return text.split("\n")


def set_value(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    keyed = [i for i, line in enumerate(lines) if KEY_LINE.match(line)]
    if not keyed:
        return text
    i = rng.choice(keyed)
    m = KEY_LINE.match(lines[i])
    assert m is not None
    lines[i] = f"{m.group(1)} {rng.choice(VALUES)}"
    return "\n".join(lines)


def unknown_key(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    word = rng.choice(["stepz", "widht", "colour", "x", "password", "a.b", '"quoted key"', "🙂"])
    lines.insert(rng.randrange(len(lines) + 1), f"{word} = 1")
    return "\n".join(lines)


def unknown_section(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    headers = [i for i, line in enumerate(lines) if line.startswith("[")]
    if not headers:  # an earlier truncation left none
        return text + "\n[vidoe]\n"
    i = rng.choice(headers)
    lines[i] = rng.choice(["[vidoe]", "[model.extra]", "[[video]]", "[twitch.commands.ai]", "[ ]", "[a." * 500 + "b]"])
    return "\n".join(lines)


def delete_char(text: str, rng: random.Random) -> str:
    spots = [i for i, ch in enumerate(text) if ch in "[]{}=\"'"]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1 :]


def duplicate_line(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    keyed = [i for i, line in enumerate(lines) if KEY_LINE.match(line) or line.startswith("[")]
    if not keyed:
        return text
    i = rng.choice(keyed)
    lines.insert(i, lines[i])
    return "\n".join(lines)


def truncate(text: str, rng: random.Random) -> str:
    return text[: rng.randrange(len(text) + 1)]


MUTATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "set_value": set_value, "unknown_key": unknown_key, "unknown_section": unknown_section,
    "delete_char": delete_char, "duplicate_line": duplicate_line, "truncate": truncate,
}
BYTE_MUTATIONS = ("random_bytes", "utf16", "none")


def make_input(rng: random.Random) -> tuple[bytes, list[str]]:
    """One mutated config and the names of what was done to it."""
    text, done = EXAMPLE, []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(list(MUTATIONS) + ["set_value"] * 4)  # values are where most of the ranges live
        text = MUTATIONS[name](text, rng)
        done.append(name)
    data = text.encode("utf-8", "surrogatepass")
    how = rng.choices(BYTE_MUTATIONS, weights=(1, 1, 10))[0]
    if how == "random_bytes":
        at = rng.randrange(len(data) + 1)
        data = data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
    elif how == "utf16":
        data = text.encode("utf-16", "surrogatepass")
    if how != "none":
        done.append(how)
    return data, done


def _category(message: str) -> str:
    for words, name in (("not valid TOML", "invalid TOML"), ("not UTF-8", "not UTF-8"), ("unknown key", "unknown key"),
                        ("must be between", "out of range"), ("NUL", "NUL character"), ("must be a", "wrong type"),
                        ("must be one of", "wrong choice")):
        if words in message:
            return name
    return "other check"


def test_mutated_configs_load_or_are_refused_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    cli_runs: Counter[str] = Counter()
    crashes: list[str] = []
    t0 = time.perf_counter()
    for i in range(INPUTS):
        data, done = make_input(rng)
        path = tmp_path / f"fuzz-{i:03d}.toml"
        path.write_bytes(data)
        try:
            settings = config.load(path)
        except ConfigError as e:
            message = e.args[0]
            assert message.startswith(f"{path}: ") and message.isprintable(), (i, done, message[:300])
            outcomes[_category(message)] += 1
            valid = False
        except Exception as e:  # the bug this test exists to find
            crashes.append(f"input {i} ({', '.join(done)}): {type(e).__name__}: {str(e)[:200]}")
            continue
        else:
            assert isinstance(settings, Settings) and settings.source_file == str(path)
            outcomes["valid"] += 1
            valid = True
        if i % CLI_EVERY == 0 and (not valid or cli_runs["valid"] < CLI_VALID_MAX):
            capsys.readouterr()
            code = main(["doctor", "--config", str(path)])
            out, err = capsys.readouterr()
            assert "Traceback" not in out + err, (i, done)
            if valid:
                assert code in (0, 1) and " checks: " in out, (i, done, out[-300:])
            else:
                assert code == 2 and err.count("\n") == 1 and err.startswith(f"config error: {path}: "), (i, done, err)
            cli_runs["valid" if valid else "refused"] += 1
    elapsed = time.perf_counter() - t0
    assert not crashes, "\n".join(crashes)
    with capsys.disabled():
        print(f"\nconfig fuzz (seed {SEED}): {INPUTS} inputs in {elapsed:.1f} s; outcomes "
              f"{dict(sorted(outcomes.items()))}; `streamer doctor` on {sum(cli_runs.values())} of them "
              f"{dict(cli_runs)}")
    assert sum(outcomes.values()) == INPUTS
    # the mutator reaches every layer: parsing, decoding, keys, types, ranges, and leaves some inputs valid
    for layer in ("valid", "invalid TOML", "not UTF-8", "unknown key", "out of range", "wrong type"):
        assert outcomes[layer] >= 3, (layer, outcomes)
    assert cli_runs["refused"] >= 10 and cli_runs["valid"] >= 1, cli_runs
