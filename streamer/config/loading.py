"""Reading a config file: TOML text -> checked Python values -> the frozen settings dataclasses.

The conversion walks the dataclasses' type hints (settings.py), so it knows every section without a
table of its own. Errors name the file, the dotted key and what was expected; unknown keys are errors
(a typo must never be silently ignored). `read_toml` and `check_keys` are also the training config's
reader (streamer/train/config.py), so both files answer a typo the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import stat
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from streamer.config.checks import _check
from streamer.config.errors import ConfigError, _clip, _show
from streamer.config.settings import Settings
from streamer.config_bounds import out_of_bounds


def load(path: str | Path | None = None) -> Settings:
    """Settings from a TOML file, or the embedded defaults when path is None."""
    if path is None:
        return Settings()
    p = Path(path).expanduser()
    return from_dict(read_toml(p, f"config file not found (create one with `streamer init {_short(str(p))}`)"), str(p))


MAX_CONFIG_BYTES = 1 << 20  # the example is ~20 KB; a larger "config" is some other file given by mistake


def read_toml(path: Path, not_found: str) -> dict[str, Any]:
    """The top-level table of a TOML file; ConfigError names the file when it is missing (`not_found`
    says what to do), not a regular file, unreadable, too large, not UTF-8 or not TOML (nested too deeply,
    an integer too long to convert). The one reader of config files (streamer/train/config.py too)."""
    name = _short(str(path))
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO (reading it would block), a device
            raise ConfigError(f"{name}: not a regular file, so not a config file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{name}: {info.st_size} bytes, larger than any config file ({MAX_CONFIG_BYTES} at most)")
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"{name}: {not_found}") from None
    except (OSError, ValueError) as e:  # permissions, a name too long, a NUL in the path
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{name}: cannot read it: {why}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nesting level of arrays and inline tables
        raise ConfigError(f"{name}: not valid TOML: values nested too deeply") from None
    except ValueError as e:  # e.g. an integer of over 4300 digits (Python's int-to-str conversion limit)
        raise ConfigError(f"{name}: not valid TOML: {_clip(str(e), 120)}") from None


def _short(name: str, limit: int = 160) -> str:
    """A file name for a message: a 100,000-character path is named by its start and its end."""
    return name if len(name) <= limit else f"{name[: limit // 2]}...{name[-(limit // 2) :]}"


def from_dict(raw: dict[str, Any], source_file: str = "<dict>") -> Settings:
    """Settings from a parsed TOML table; ConfigError names `source_file` and the key on any problem."""
    name = _short(source_file)
    settings = _build(Settings, raw, name, "", skip={"source_file"})
    settings = dataclasses.replace(settings, source_file=source_file)
    for key, must, value in out_of_bounds(settings):  # NaN, inf, negative, absurd: before any arithmetic on them
        raise ConfigError(f"{name}: '{key}' {must}; got {_show(value)}")
    _check(settings, name)
    return settings


def check_keys(table: Any, known: list[str], file: str, prefix: str) -> None:
    """`table` is a TOML table whose every key is in `known`: else a ConfigError naming the file, the
    dotted key and the closest known key, so a typo is never silently ignored."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{_short(where, 80)}] must be a table, got {type(table).__name__}")
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key[:100], known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            shown = _short(f"{prefix}{key}", 80)
            raise ConfigError(f"{file}: unknown key '{shown}'{hint}; known keys in [{where}]: {', '.join(known)}")


def _build(cls: type, raw: Any, file: str, prefix: str, skip: frozenset[str] | set[str] = frozenset()) -> Any:
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    check_keys(raw, fields, file, prefix)
    values = {name: _convert(hints[name], raw[name], file, prefix + name) for name in fields if name in raw}
    return cls(**values)


def _convert(tp: Any, value: Any, file: str, key: str) -> Any:
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, file, key + ".")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{file}: '{key}' must be one of {', '.join(map(repr, choices))}; got {_show(value)}")
        return value
    if origin is dict:
        key_tp, value_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: '{key}' must be a table; got {type(value).__name__} {_show(value)}")
        return {_convert(key_tp, k, file, f"{key}.{k}"): _convert(value_tp, v, file, f"{key}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        (item_tp, *_rest) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{file}: '{key}' must be a list; got {type(value).__name__} {_show(value)}")
        return tuple(_convert(item_tp, v, file, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _convert(option, value, file, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{file}: '{key}' must be {_expected(tp)}; got {type(value).__name__} {_show(value)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: '{key}' must be true or false; got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{file}: '{key}' must be an integer; got {type(value).__name__} {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{file}: '{key}' must be a number; got {type(value).__name__} {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{file}: '{key}' must be a string; got {type(value).__name__} {_show(value)}")
        if "\0" in value:  # no path, URL, name or prompt holds one; in a path it crashes the first open()
            raise ConfigError(f"{file}: '{key}' must not contain a NUL character (\\0); got {_show(value)}")
        return value
    raise ConfigError(f"{file}: '{key}': unsupported setting type {tp!r}")  # a bug in this module


def _expected(tp: Any) -> str:
    """What a union setting accepts, in words: `int | Literal["all"]` -> "an integer or 'all'"."""
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none"}
    return " or ".join(
        " or ".join(map(repr, get_args(o))) if get_origin(o) is Literal else words.get(o, getattr(o, "__name__", str(o)))
        for o in get_args(tp)
    )
