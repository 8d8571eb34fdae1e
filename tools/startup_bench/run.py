"""Run a `streamer run` command, stamp every output line with the seconds since the process was started,
stop it (SIGTERM, the daemon's clean shutdown) GRACE s after its first transformed frame, and print the
start-up stages: weight loading (DiT, TAEHV, umT5), first prompt, warm-up, capture, first transformed frame.

    python tools/startup_bench/run.py --log FILE [--grace 3] [--limit 120] -- python -m streamer run --config X --frames N
    python tools/startup_bench/run.py --from-log FILE     # the stage table of a log this tool wrote, again

Issue 17 item 6 (start-up to the first transformed frame); tools/startup_bench/device_call.sh runs it three
times. Why not `--frames` alone: it counts every output frame, passthrough included, and the stream is on air
(passthrough at the video rate) while the model loads, so the count at the first transformed frame depends
on the load time being measured. It is passed as a cap only. The daemon's log stamps are whole seconds;
the stamps here are the parent's clock when each line arrived (the daemon's stderr is unbuffered).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

FIRST = "first transformed frame"
# (key, pattern): the first line matching each is kept, with its arrival time and its numbers. The patterns
# are the daemon's own log messages (streamer.model.loading, umt5_layouts, fast.path, builder, pipeline).
MARKS = [
    ("daemon_up", r"streamer starting"),
    ("load_start", r"model load +0% \(([\d.]+) s\)"),
    ("dit", r"model load +50% \(([\d.]+) s\): DiT: (.*)"),
    ("vae", r"model load +70% \(([\d.]+) s\): autoencoder: (.*)"),
    ("umt5_open", r"umT5 text encoder: (.*)"),
    ("umt5_read", r"umT5 load 100% \(([\d.]+) s\): (.*)"),
    ("load_done", r"model load 100% \(([\d.]+) s\): (.*)"),
    ("eager_warmup", r"model warm-up: 100% \(([\d.]+) s\)"),  # only without the fast path (CPU)
    ("fast_ready", r"fast path ready: warm-up ([\d.]+) s, graph capture ([\d.]+) s"),
    ("umt5_wait", r"text encoder weights ready: waited ([\d.]+) s"),  # umT5 read in the background (builder.py)
    ("built", r"streamer.model.builder: model ready in ([\d.]+) s"),
    ("ready", r"streamer.pipeline: model ready in ([\d.]+) s"),
    ("first", FIRST + r" ([\d.]+) s after start"),
]
PROBLEM = re.compile(r" [EW] |Traceback|Error")  # the daemon's ERROR / WARNING level letter, or a crash
STAMPED = re.compile(r" *(\d+\.\d{3}) (.*)")  # one line of the log this tool writes: "%8.3f <line>"

Line = tuple[float, str]  # (seconds since the process started, the line as the daemon printed it)


@dataclasses.dataclass(frozen=True)
class Stages:
    """The start-up stages of one run, in seconds; None where the log has no such line. `*_wall_s` are this
    tool's clock (from the process start, imports included); the others are the daemon's own numbers."""

    daemon_up_wall_s: float | None
    loader_start_wall_s: float | None
    dit_load_s: float | None
    vae_load_s: float | None
    umt5_stage_s: float | None  # find + plan + tokenizer + read
    umt5_read_s: float | None
    weights_total_s: float | None
    warmup_s: float | None
    capture_s: float | None
    umt5_wait_s: float | None  # waiting for umT5's background read after warm-up and capture
    model_ready_s: float | None  # the pipeline's clock: from the loader thread's start
    model_ready_wall_s: float | None
    first_frame_pipeline_s: float | None  # the pipeline's clock: from its start
    first_frame_wall_s: float | None
    engine_first_prompt_s: float | None  # engine + first prompt encoded (model ready minus loads and warm-up)
    first_chunk_after_ready_s: float | None
    umt5_placement: str | None
    dit_source: str | None
    problems: list[str]


def run(cmd: list[str], log_path: Path, grace: float, limit: float) -> tuple[list[Line], int]:
    """Run `cmd`, writing its stamped output to `log_path`; SIGTERM it `grace` s after its first transformed
    frame or at `limit` s. Returns the stamped lines (the last one says how it ended) and its exit status."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[Line] = []
    first_at: list[float] = []

    def reader() -> None:
        assert proc.stdout is not None
        with open(log_path, "w") as log:
            for line in proc.stdout:
                t = time.monotonic() - start
                lines.append((t, line.rstrip("\n")))
                log.write(f"{t:8.3f} {line}")
                log.flush()
                if FIRST in line and not first_at:
                    first_at.append(t)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    stop_reason = ""
    while proc.poll() is None:
        now = time.monotonic() - start
        if first_at and now >= first_at[0] + grace:
            stop_reason = f"SIGTERM {grace:g} s after the first transformed frame"
        elif now >= limit:
            stop_reason = f"SIGTERM at the {limit:g} s limit, no transformed frame"
        if stop_reason:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_reason += "; SIGKILL after 30 s more"
                proc.kill()
            break
        time.sleep(0.05)
    rc = proc.wait()
    thread.join(timeout=5)
    lines.append(
        (time.monotonic() - start, f"[startup_bench] exit {rc}" + (f" ({stop_reason})" if stop_reason else ""))
    )
    with open(log_path, "a") as log:
        log.write(f"{lines[-1][0]:8.3f} {lines[-1][1]}\n")
    return lines, rc


def read_log(text: str) -> list[Line]:
    """The stamped lines of a log `run` wrote (lines without a stamp are skipped). The stamps are kept to the
    millisecond, so a `*_wall_s` from a re-read log may round 0.01 s away from the one printed by the run."""
    return [(float(m[1]), m[2]) for ln in text.splitlines() if (m := STAMPED.fullmatch(ln))]


def summarize(lines: list[Line]) -> Stages:
    """The stages from the first line matching each of MARKS."""
    found: dict[str, tuple[float, tuple[str, ...]]] = {}
    for t, line in lines:
        for key, pattern in MARKS:
            if key not in found and (m := re.search(pattern, line)):
                found[key] = (t, m.groups())

    def num(key: str, i: int = 0) -> float | None:
        return float(found[key][1][i]) if key in found else None

    def text(key: str, i: int) -> str | None:
        return found[key][1][i] if key in found else None

    def wall(key: str) -> float | None:
        return round(found[key][0], 2) if key in found else None

    def diff(a: float | None, b: float | None) -> float | None:
        return round(a - b, 2) if a is not None and b is not None else None

    warmup = num("fast_ready", 0) if "fast_ready" in found else num("eager_warmup")
    capture = num("fast_ready", 1)
    built, done = num("built"), num("load_done")
    spent = (warmup or 0) + (capture or 0) + (num("umt5_wait") or 0)
    engine = round(built - done - spent, 2) if built is not None and done is not None else None
    return Stages(
        daemon_up_wall_s=wall("daemon_up"),
        loader_start_wall_s=wall("load_start"),
        dit_load_s=diff(num("dit"), num("load_start")),
        vae_load_s=diff(num("vae"), num("dit")),
        umt5_stage_s=diff(num("load_done"), num("vae")),
        umt5_read_s=num("umt5_read"),
        weights_total_s=num("load_done"),
        warmup_s=warmup,
        capture_s=capture,
        umt5_wait_s=num("umt5_wait"),
        model_ready_s=num("ready"),
        model_ready_wall_s=wall("ready"),
        first_frame_pipeline_s=num("first"),
        first_frame_wall_s=wall("first"),
        engine_first_prompt_s=engine,
        first_chunk_after_ready_s=diff(wall("first"), wall("ready")),
        umt5_placement=text("umt5_open", 0),
        dit_source=text("dit", 1),
        problems=[ln for _, ln in lines if PROBLEM.search(ln)][:10],
    )


def table(s: Stages) -> str:
    """The stages as the rows docs/benchmarks.md reports ("-" where the log had no such line)."""
    rows = [
        ("process start -> daemon up (imports, source, sinks)", s.daemon_up_wall_s),
        ("process start -> model loader starts", s.loader_start_wall_s),
        ("DiT from the pickle", s.dit_load_s),
        ("TAEHV", s.vae_load_s),
        (f"umT5 (reading its tensors: {s.umt5_read_s} s, in the background when waited for below)", s.umt5_stage_s),
        ("= weights loaded (loader clock)", s.weights_total_s),
        ("engine + first prompt encoded", s.engine_first_prompt_s),
        ("warm-up (fast path; eager without it)", s.warmup_s),
        ("graph capture", s.capture_s),
        ("waiting for umT5's weights (read in the background meanwhile)", s.umt5_wait_s),
        ("= model ready (loader clock)", s.model_ready_s),
        ("model ready -> first transformed frame (wall)", s.first_chunk_after_ready_s),
        ("FIRST TRANSFORMED FRAME after process start (wall)", s.first_frame_wall_s),
        ("  ... by the pipeline's own clock", s.first_frame_pipeline_s),
    ]
    out = [f"  {what:<56} {'-' if v is None else f'{v:.2f} s'}" for what, v in rows]
    out.append(f"  umT5: {s.umt5_placement}")
    out += [f"  ! {ln[:300]}" for ln in s.problems]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log", type=Path, help="where the stamped output is written")
    p.add_argument("--from-log", type=Path, help="summarize this log (written by --log) instead of running")
    p.add_argument("--grace", type=float, default=3.0, help="seconds to keep running after the first frame")
    p.add_argument("--limit", type=float, default=120.0, help="SIGTERM after this many seconds in any case")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if a.from_log is not None:
        lines = read_log(a.from_log.read_text())
    elif a.log is not None and cmd:
        lines, _ = run(cmd, a.log, a.grace, a.limit)
    else:
        p.error("give --log FILE -- COMMAND, or --from-log FILE")
    s = summarize(lines)
    print(json.dumps(dataclasses.asdict(s)))
    print(table(s))
    return 0 if s.first_frame_wall_s is not None else 1


if __name__ == "__main__":
    sys.exit(main())
