"""`streamer models pull NAME [--dir DIR] [--config FILE]` and `streamer models list [--dir DIR] [--hub]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamer.models.catalogue import UnknownEntryError
from streamer.models.hub import ModelsError, Storage, endpoint, human_bytes
from streamer.models.pull import pull, rows, update_config


def pull_command(args: argparse.Namespace) -> int:
    try:
        got = pull(args.entry, args.dir)
        config = None if args.no_config else Path(args.config).expanduser()
        created = update_config(config, got.settings) if config is not None else False
    except (ModelsError, UnknownEntryError) as e:
        print(f"streamer models pull: {e}", file=sys.stderr)
        return 1
    where = Storage.at(args.dir).root()
    fetched = f"{human_bytes(got.downloaded_bytes)} downloaded" if got.downloaded_bytes else "all already here"
    checked = "verified against the Hub" if got.verified else "offline: found on disk, not compared with the Hub"
    print(f"{got.entry.name}: {len(got.paths)} files in {where} ({fetched}; {checked})")
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in got.settings.items()]
    if config is None:
        print("add to the [model] table of your config:\n  " + "\n  ".join(lines))
        return 0
    print(f"{'created' if created else 'updated'} {config}, [model]:\n  " + "\n  ".join(lines))
    print(f"next: streamer doctor --config {config}, then streamer run --config {config}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    try:
        table = rows(args.dir, hub=args.hub)
    except ModelsError as e:
        print(f"streamer models list: {e}", file=sys.stderr)
        return 1
    print(f"{'NAME':<18} {'SIZE':>10}  {'ON DISK':<14} GOOD FOR")
    for r in table:
        here = "yes" if r.on_disk == r.total else f"{r.on_disk} of {r.total} files" if r.on_disk else "-"
        size = human_bytes(r.size) if r.exact else f"~{human_bytes(r.size)}"
        print(f"{r.entry.name:<18} {size:>10}  {here:<14} {r.entry.good_for}")
    for r in table:
        needs = f" + {', '.join(r.entry.needs)}" if r.entry.needs else ""
        # the four tokenizer files read as their folder
        names = dict.fromkeys(f"{f.repo}/{f.path.rsplit('/', 1)[0] + '/' if f.role == 'tokenizer' else f.path}"
                              for f in r.entry.files)  # fmt: skip
        files = ", ".join(names)
        print(f"  {r.entry.name}: {r.entry.summary}; {files}{needs}")
    source = f"from {endpoint()}" if args.hub else "~ = published, rounded; --hub asks the Hub"
    print(f"sizes: what `pull` downloads, with what it needs ({source})")
    print(f"on disk: {Storage.at(args.dir).root()}  (--dir DIR to look elsewhere)")
    print("licences differ (some are non-commercial): read each repo's card before streaming for money")
    return 0
