"""`streamer soak --minutes 120 --fault-every 60 --out DIR`: run the soak, write DIR/soak.json and DIR/soak.md.

Exit status 0 when every bound of the verdict holds (report.verdict), 1 when one does not.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from streamer.soak import faults, report, runner

log = logging.getLogger("streamer.soak")


def options_from(args: argparse.Namespace) -> runner.Options:
    chosen = tuple(n.strip() for n in args.faults.split(",") if n.strip()) if args.faults else faults.NAMES
    unknown = sorted(set(chosen) - set(faults.NAMES))
    if unknown:
        raise SystemExit(f"unknown fault {', '.join(unknown)}; choose from {', '.join(faults.NAMES)}")
    return runner.Options(
        out=Path(args.out),
        minutes=args.minutes,
        fault_every_s=args.fault_every,
        width=args.width,
        height=args.height,
        fps=args.fps,
        source=args.source,
        faults=chosen,
        obs=not args.no_obs,
        poll_s=max(15, min(1800, int(args.poll_seconds))),
    )


def soak_command(args: argparse.Namespace) -> int:
    options = options_from(args)
    if options.width % 16 or options.height % 16:
        print("--width and --height must be multiples of 16 (the tiny model's resolution)", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(runner.run(options))
    except RuntimeError as e:
        print(f"soak failed to run: {e}", file=sys.stderr)
        return 1
    js, md = report.write(options.out, result)
    print(md.read_text())
    print(f"written: {md} and {js}")
    return 0 if all(v["ok"] for v in result["verdict"].values()) else 1
