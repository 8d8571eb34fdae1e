"""`streamer models pull` and `list`: fetch a catalogue entry, verify it, point the config at it.

Order of a pull: the Hub's metadata for every file (nothing downloaded yet), the free-space check
against what is still missing, the downloads (each verified, a bad one fetched again), and last the
[model] keys of the config file, edited with tomlkit so the user's comments and layout stay.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from streamer.config import ConfigError, example_path, from_dict
from streamer.models.catalogue import ENTRIES, Entry, HubFile, all_files, find
from streamer.models.hub import (
    ModelsError,
    RemoteFile,
    Storage,
    fetch,
    human_bytes,
    offline,
    remote_files,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pulled:
    entry: Entry
    paths: dict[HubFile, Path]
    downloaded_bytes: int  # what was missing before the pull (0 when everything was already here)
    settings: dict[str, str]  # [model] key -> value written to (or suggested for) the config
    verified: bool  # False offline: the files were found on disk but not compared with the Hub


def pull(name: str, folder: str | Path | None = None) -> Pulled:
    """Download entry `name` (and what it needs) into `folder` (None: the Hugging Face cache), verified."""
    entry = find(name)
    files = all_files(entry)
    storage = Storage.at(folder)
    if offline():  # HF_HUB_OFFLINE: a pull can still point the config at files downloaded before
        paths = {f: _offline_path(f, storage) for f in files}
        return Pulled(entry, paths, 0, config_values(entry, paths), verified=False)
    remote = remote_files(files)
    missing = sum(r.size for r in remote if not _complete(r, storage))
    check_disk(missing, storage.root())
    paths = {r.file: fetch(r, storage) for r in remote}
    return Pulled(entry, paths, missing, config_values(entry, paths), verified=True)


def _offline_path(f: HubFile, storage: Storage) -> Path:
    p = storage.existing(f)
    if p is None:
        raise ModelsError(
            f"HF_HUB_OFFLINE is set and {f.repo}/{f.path} is not in {storage.root()}; unset HF_HUB_OFFLINE "
            "to download it"
        )
    return p


def _complete(r: RemoteFile, storage: Storage) -> bool:
    p = storage.existing(r.file, r.commit)
    return p is not None and p.stat().st_size == r.size


def check_disk(needed: int, target: Path) -> None:
    """Refuse, before any byte is fetched, when the disk holding `target` has less than `needed` free.

    Partial `.incomplete` files are counted as still missing: a resumed pull may ask for more than it
    will write, never less."""
    probe = target
    while not probe.exists() and probe != probe.parent:  # the folder may not exist yet; its disk does
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise ModelsError(
            f"not enough disk space for the download into {target}: it needs {human_bytes(needed)}, "
            f"{human_bytes(free)} is free. Free some space, or pass --dir on a disk with more room"
        )


def config_values(entry: Entry, paths: dict[HubFile, Path]) -> dict[str, str]:
    """The [model] keys the daemon reads for these files (ModelSettings' names in streamer/config/settings.py)."""
    values: dict[str, str] = {}
    if entry.preset:
        values["preset"] = entry.preset
        values["lora"] = ""  # a LongLive LoRA left from an earlier pull must not merge into another DiT
    for f, p in paths.items():
        if f.role == "tokenizer":
            continue  # the text encoder finds it beside the .pth (google/umt5-xxl/)
        # The text encoder is given as the Wan folder (the .pth + google/umt5-xxl/ in it, the layout
        # every upstream README leaves); the others as their file.
        values[f.role] = (p.parent if f.role == "text_encoder" else p).absolute().as_posix()
    return values


def update_config(path: Path, values: Mapping[str, str | int]) -> bool:
    """Set [model] `values` in the TOML file at `path`, keeping its comments; create it from the example
    config when it does not exist. Returns True when the file was created."""
    created = not path.exists()
    try:
        from_dict({"model": dict(values)}, str(path))  # the keys and values must be ones the loader takes
    except ConfigError as e:
        raise ModelsError(f"internal: streamer writes a [model] setting the config rejects: {e}") from e
    text = example_path().read_text(encoding="utf-8") if created else path.read_text(encoding="utf-8")
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as e:
        raise ModelsError(f"{path}: not valid TOML ({e}); fix it or pass --config with another file") from e
    model = doc.get("model")
    if model is None:
        model = tomlkit.table()
        doc["model"] = model
    elif not isinstance(model, dict):
        raise ModelsError(f"{path}: 'model' is not a table; cannot set model.{next(iter(values))}")
    for key, value in values.items():
        model[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)  # a crash mid-write must not leave half a config
    return created


@dataclass(frozen=True)
class Row:
    entry: Entry
    size: int
    exact: bool  # size from the Hub (True) or the catalogue's rounded numbers (False)
    on_disk: int  # files already here
    total: int


def rows(folder: str | Path | None = None, hub: bool = False) -> list[Row]:
    """One row per entry: what a pull downloads in all (with what it needs) and how much is here.

    With `hub`, sizes are the Hub's (one metadata call per repo); otherwise the catalogue's, so the list
    works offline."""
    storage = Storage.at(folder)
    exact: dict[HubFile, int] = {}
    if hub:
        exact = {r.file: r.size for r in remote_files({f for e in ENTRIES for f in e.files})}
    out = []
    for e in ENTRIES:
        files = all_files(e)
        size = sum(exact.get(f, f.approx_bytes) for f in files)
        here = sum(storage.existing(f) is not None for f in files)
        out.append(Row(e, size, hub, here, len(files)))
    return out
