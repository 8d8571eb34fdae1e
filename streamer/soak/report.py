"""The soak's results as JSON (everything, the timeline included) and as a markdown report that pastes
into docs/reliability.md: one row per fault type (worst gap, recovery time, losses, recording), the
RSS and thread curve, and the verdict on the bounds the CI soak asserts.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

GAP_LIMIT_PERIODS = 2.0  # no output gap longer than this many frame periods, except where an outage is the fault
RSS_GROWTH_LIMIT_MB = 64.0  # the daemon's RSS may not grow more than this over one incarnation after warm-up
THREAD_GROWTH_LIMIT = 8  # nor its thread count by more than this
CURVE_POINTS = 11
RESTART_WARMUP_S = 60.0  # a daemon restarted by the SIGKILL fault is judged from this long after its start


def _periods(gap_ms: float, fps: float) -> float:
    return round(gap_ms * fps / 1000, 2)


def per_fault(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary per fault type, in the order they were first injected."""
    fps = result["options"]["fps"]
    rows: dict[str, dict[str, Any]] = {}
    for rec in result["faults"]:
        row = rows.setdefault(
            rec["fault"],
            {
                "fault": rec["fault"],
                "injected": 0,
                "recovered": 0,
                "recovery_s": [],
                "worst_gap_ms": 0.0,
                "items_before": 0,
                "lost": 0,
                "playable": 0,
                "recordings": 0,
                "errors": [],
            },
        )
        row["injected"] += 1
        if rec["recovery_s"] is not None:
            row["recovered"] += 1
            row["recovery_s"].append(rec["recovery_s"])
        if rec["worst_gap_ms"] >= row["worst_gap_ms"]:
            row["worst_gap_ms"], row["worst_gap_after_s"] = rec["worst_gap_ms"], rec.get("worst_gap_after_s")
        row["items_before"] += rec["items_before"]
        row["lost"] += len(rec["lost_before"]) + len(rec["lost_during"])
        if rec["playable_to_fault"] is not None:
            row["recordings"] += 1
            row["playable"] += int(rec["playable_to_fault"])
        if rec["error"] or "error" in rec["details"]:
            row["errors"].append(rec["error"] or rec["details"]["error"])
    for row in rows.values():
        times = row.pop("recovery_s")
        row["recovery_median_s"] = round(statistics.median(times), 2) if times else None
        row["recovery_max_s"] = max(times) if times else None
        row["worst_gap_periods"] = _periods(row["worst_gap_ms"], fps)
    return list(rows.values())


def rss_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per daemon incarnation: RSS and threads from the end of its warm-up to its end, and the growth rate.
    The first start is settled when the faults begin; a restarted one RESTART_WARMUP_S after it came up
    (model load, first prompts encoded). A start too short to settle is listed, not judged."""
    by_run: dict[int, list[dict[str, Any]]] = {}
    for s in result["timeline"]:
        if s["rss_mb"] is not None:
            by_run.setdefault(s["incarnation"], []).append(s)
    runs = []
    for incarnation, samples in sorted(by_run.items()):
        since = result["begin_t"] if incarnation == 1 else samples[0]["t"] + RESTART_WARMUP_S
        settled = [s for s in samples if s["t"] >= since]
        if len(settled) < 2:
            runs.append(
                {
                    "incarnation": incarnation,
                    "seconds": round(samples[-1]["t"] - samples[0]["t"], 1),
                    "settled": False,
                    "rss_max_mb": max(s["rss_mb"] for s in samples),
                }
            )
            continue
        first, last = settled[0], settled[-1]
        hours = (last["t"] - first["t"]) / 3600
        runs.append(
            {
                "incarnation": incarnation,
                "seconds": round(last["t"] - first["t"], 1),
                "settled": True,
                "rss_start_mb": first["rss_mb"],
                "rss_end_mb": last["rss_mb"],
                "rss_max_mb": max(s["rss_mb"] for s in settled),
                "rss_growth_mb": round(max(s["rss_mb"] for s in settled) - first["rss_mb"], 1),
                "rss_slope_mb_per_h": round(_slope(settled, "rss_mb") * 3600, 1) if hours > 0 else None,
                "threads_start": first["threads"],
                "threads_max": max(s["threads"] for s in settled),
                "children_rss_max_mb": max(s["children_rss_mb"] for s in settled),
            }
        )
    return {"runs": runs, "curve": _curve(result["timeline"])}


def _slope(samples: list[dict[str, Any]], key: str) -> float:
    """Least-squares slope of samples[key] over t (per second); 0 for fewer than two samples."""
    if len(samples) < 2:
        return 0.0
    ts, ys = [s["t"] for s in samples], [s[key] for s in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / den if den else 0.0


def _curve(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    live = [s for s in timeline if s["rss_mb"] is not None]
    if not live:
        return []
    step = max(1, (len(live) - 1) // (CURVE_POINTS - 1))
    picked = live[::step]
    if picked[-1] is not live[-1]:
        picked.append(live[-1])
    return [
        {
            "t_min": round(s["t"] / 60, 1),
            "incarnation": s["incarnation"],
            "rss_mb": s["rss_mb"],
            "threads": s["threads"],
            "children_rss_mb": s["children_rss_mb"],
        }
        for s in picked
    ]


def verdict(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The bounds the CI soak asserts: name -> {ok, detail}."""
    fps = result["options"]["fps"]
    limit_ms = GAP_LIMIT_PERIODS * 1000 / fps
    gaps = [(r["fault"], r["worst_gap_ms"]) for r in result["faults"] if not r["outage"]]
    gaps.append(("baseline", result["baseline_worst_gap_ms"]))
    too_long = [f"{name} {ms:.0f} ms" for name, ms in gaps if ms > limit_ms]
    lost = sorted(
        {x for r in result["faults"] for x in r["lost_before"] + r["lost_during"]} | set(result["lost_at_end"])
    )
    unrecovered = [r["fault"] for r in result["faults"] if r["recovery_s"] is None]
    unplayable = [s["name"] for s in result["recording"] if not s["playable"]]
    cut_short = [r["fault"] for r in result["faults"] if r["playable_to_fault"] is False]
    runs = [r for r in rss_summary(result)["runs"] if r["settled"]]
    grew = [
        f"run {r['incarnation']}: +{r['rss_growth_mb']} MiB" for r in runs if r["rss_growth_mb"] > RSS_GROWTH_LIMIT_MB
    ]
    threads = [
        f"run {r['incarnation']}: {r['threads_start']} -> {r['threads_max']}"
        for r in runs
        if r["threads_max"] - r["threads_start"] > THREAD_GROWTH_LIMIT
    ]
    return {
        "output gaps": {
            "ok": not too_long,
            "detail": f"limit {limit_ms:.0f} ms ({GAP_LIMIT_PERIODS:g} frame periods)"
            + (f"; over: {', '.join(too_long)}" if too_long else ""),
        },
        "nothing lost": {"ok": not lost, "detail": ", ".join(lost[:20]) or "every item the daemon took is stored"},
        "every fault recovered": {"ok": not unrecovered, "detail": ", ".join(unrecovered) or "all"},
        "recording playable": {
            "ok": bool(result["recording"]) and not unplayable and not cut_short,
            "detail": f"{len(result['recording'])} segments"
            + (f"; unplayable: {', '.join(unplayable)}" if unplayable else "")
            + (f"; not up to the fault: {', '.join(cut_short)}" if cut_short else ""),
        },
        "RSS bounded": {
            "ok": not grew,
            "detail": f"limit +{RSS_GROWTH_LIMIT_MB:g} MiB per run after warm-up"
            + (f"; {', '.join(grew)}" if grew else ""),
        },
        "threads bounded": {
            "ok": not threads,
            "detail": f"limit +{THREAD_GROWTH_LIMIT} per run" + (f"; {', '.join(threads)}" if threads else ""),
        },
    }


def environment() -> dict[str, Any]:
    import os

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "commit": commit,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:g}{unit}"


def markdown(result: dict[str, Any]) -> str:
    o, env = result["options"], result.get("environment", {})
    loads = [s["load1"] for s in result["timeline"]]
    load = (
        f" The machine's 1-minute load average was {statistics.median(loads):.1f} (median), {max(loads):.1f} at most"
        f" on {env.get('cpus', '?')} CPUs."
        if loads
        else ""
    )
    lines = [
        f"Soak of {result['ran_s'] / 60:.1f} min, a fault every {o['fault_every_s']:g} s in rotation "
        f"({len(result['faults'])} injected); {o['source']} source {o['width']}x{o['height']} at {o['fps']:g} fps "
        f"-> {result.get('model', '').split(' — ')[0] or 'the model'} -> network + record sinks, dashboard, "
        f"Twitch (local fake), "
        f"{'OBS headless' if 'obs' not in result['skipped'] else 'no OBS'}. "
        f"{env.get('date', '')}, {env.get('cpus', '?')} CPUs ({env.get('cpu', '?')}), commit {env.get('commit', '?')}. "
        f"Gaps are measured in the daemon between frames handed to the sinks (frame period {1000 / o['fps']:.0f} ms)."
        + load,
        "",
        "| fault | injected | recovered | recovery median / max (s) | worst gap (ms / frame periods, when after the fault) | items taken before | lost | recording playable to the fault |",
        "|---|---|---|---|---|---|---|---|",
        f"| none (baseline, {o['fault_every_s']:g} s) | — | — | — | {result['baseline_worst_gap_ms']:.0f} / "
        f"{_periods(result['baseline_worst_gap_ms'], o['fps'])} | — | — | — |",
    ]
    for row in per_fault(result):
        gap = f"{row['worst_gap_ms']:.0f} / {row['worst_gap_periods']}"
        if row.get("worst_gap_after_s") is not None:
            gap += f" at +{row['worst_gap_after_s']:.1f} s"
        if row["fault"] == "sigkill" and result["restart_gap_s"]:
            gap += f" (restart: output back after {max(result['restart_gap_s']):.1f} s)"
        lines.append(
            f"| {row['fault']} | {row['injected']} | {row['recovered']} | "
            f"{_fmt(row['recovery_median_s'])} / {_fmt(row['recovery_max_s'])} | {gap} | "
            f"{row['items_before']} | {row['lost']} | {row['playable']}/{row['recordings']} |"
        )
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | skipped: {why} | | | | | | |")
    rss = rss_summary(result)
    lines += [
        "",
        "RSS and threads of the daemon process, per start (the SIGKILL fault starts a new one), from "
        f"the first fault on (a restarted daemon from {RESTART_WARMUP_S:g} s after its start):",
        "",
        "| run | minutes | RSS start / end / max (MiB) | growth (MiB) | slope (MiB/h) | threads start / max | encoder processes' RSS max (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rss["runs"]:
        if not r["settled"]:
            lines.append(
                f"| {r['incarnation']} | {r['seconds'] / 60:.1f} | too short to settle (max {r['rss_max_mb']}) "
                "| — | — | — | — |"
            )
            continue
        lines.append(
            f"| {r['incarnation']} | {r['seconds'] / 60:.1f} | {r['rss_start_mb']} / {r['rss_end_mb']} / "
            f"{r['rss_max_mb']} | {r['rss_growth_mb']} | {_fmt(r['rss_slope_mb_per_h'])} | "
            f"{r['threads_start']} / {r['threads_max']} | {r['children_rss_max_mb']} |"
        )
    lines += [
        "",
        "RSS curve (minute: MiB, threads): "
        + ", ".join(f"{p['t_min']:g}: {p['rss_mb']:g}, {p['threads']}" for p in rss["curve"]),
        "",
    ]
    led = result["ledger"]
    lines.append(
        "Taken by the daemon and checked in its store: "
        + ", ".join(f"{k} {v}" for k, v in led["taken"].items())
        + "; not taken (daemon or Twitch down): "
        + (", ".join(f"{k} {v}" for k, v in led["unsent"].items()) or "none")
        + "; refused: "
        + (", ".join(f"{k} x{v}" for k, v in led["refused"].items()) or "none")
        + f"; proposals kept as moderation's refusal (in the audit log, not the approvals): {led.get('moderated', 0)}."
    )
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    for name, v in verdict(result).items():
        lines.append(f"| {name} | {'pass' if v['ok'] else 'FAIL'} | {v['detail']} |")
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    result.setdefault("environment", environment())
    result["per_fault"] = per_fault(result)
    result["rss"] = rss_summary(result)
    result["verdict"] = verdict(result)
    js, md = out / "soak.json", out / "soak.md"
    js.write_text(json.dumps(result, indent=1, default=str))
    md.write_text(markdown(result))
    return js, md
