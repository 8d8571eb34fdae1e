"""The soak itself: start the fake Twitch, a headless OBS (when installed), the sender and the daemon;
inject the faults in rotation every `fault_every_s`; measure each one's window; stop; check the recording.

A fault's window runs from its injection to the next one. The next injection waits for the slot and
for the previous fault's recovery (at most RECOVERY_LIMIT_S), so a slow recovery shifts the schedule
instead of piling faults on each other; the realised times are in the results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamer.soak import faults as faults_mod
from streamer.soak.client import DashboardClient, wait_until
from streamer.soak.daemon import (
    BOT,
    OWNER,
    ChildProcess,
    Layout,
    daemon_config,
    daemon_process,
    seed_twitch_tokens,
    sender_process,
    write_config,
)
from streamer.soak.ledger import Ledger
from streamer.soak.probes import Sampler, proc_status
from streamer.soak.recording import check_recordings, playable_at
from streamer.soak.traffic import Traffic

log = logging.getLogger("streamer.soak")

START_TIMEOUT_S = 180.0  # a cold daemon start on a busy 2-core machine: imports, model load, first frame
RECOVERY_LIMIT_S = 60.0
OBS_CANVAS = (320, 180, 10)  # OBS's own video mix: at its default 1080p30 it took a fifth of a core in software GL
SETTLE_S = 2.0  # chat and dashboard items taken this recently may still be on their way into the store


@dataclass
class Options:
    out: Path
    minutes: float = 2.0
    fault_every_s: float = 12.0
    width: int = 128
    height: int = 128
    fps: float = 10.0
    source: str = "network"
    faults: tuple[str, ...] = faults_mod.NAMES
    obs: bool = True
    traffic_every_s: float = 1.0
    poll_s: int = 30
    warmup_s: float = 20.0  # model loaded, first prompts encoded, poll running before the first fault


@dataclass
class FaultRecord:
    fault: str
    outage: bool  # the output stops by design (the SIGKILL): not held to the gap bound
    index: int
    t: float  # seconds since the soak's first fault slot
    wall: float
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    recovery_s: float | None = None
    window_s: float = 0.0
    worst_gap_ms: float = 0.0
    worst_gap_after_s: float | None = None  # when (after the injection) the worst gap ended, to the second
    load_max: float | None = None  # the machine's highest 1-minute load average in the window
    items_before: int = 0
    lost_before: list[str] = field(default_factory=list)  # taken before the fault, not in the store after it
    items_during: int = 0
    lost_during: list[str] = field(default_factory=list)  # taken during its window, not in the store at its end
    rss_mb: tuple[float | None, float | None] = (None, None)  # at injection, at the window's end
    threads: tuple[int | None, int | None] = (None, None)
    segment: str | None = None
    playable_to_fault: bool | None = None


@dataclass
class Soak:
    """The running parts, as the faults see them."""

    options: Options
    layout: Layout
    fake: Any
    daemon: ChildProcess
    sender: ChildProcess | None
    obs: Any
    obs_skipped: str | None
    client: DashboardClient
    sampler: Sampler
    ledger: Ledger
    traffic: Traffic
    restart_gap_s: list[float] = field(default_factory=list)


async def start_fake_twitch() -> Any:
    from streamer.testing.fake_twitch import FakeTwitch

    fake = FakeTwitch()
    await fake.start()
    fake.add_user(OWNER, "streamer", "affiliate")
    fake.add_user(BOT, "aibot")
    return fake


def start_obs(options: Options, layout: Layout) -> tuple[Any, str | None]:
    """A headless OBS, or None and why not."""
    from streamer.testing.obs_headless import INSTALL_HINT, ObsInstance, missing_tools

    if not options.obs:
        return None, "OBS switched off (--no-obs)"
    missing = missing_tools()
    if missing:
        return None, f"OBS is not installed here ({', '.join(missing)} missing): {INSTALL_HINT}"
    obs = ObsInstance(layout.out / "obs-home", canvas=OBS_CANVAS)
    obs.start()
    return obs, None


async def run(options: Options) -> dict[str, Any]:
    layout = Layout.create(options.out)
    fake = await start_fake_twitch()
    obs, obs_skipped = await asyncio.to_thread(start_obs, options, layout)
    if obs_skipped:
        log.warning("soak: OBS fault skipped: %s", obs_skipped)
    sender: ChildProcess | None = None
    daemon: ChildProcess | None = None
    try:
        settings = daemon_config(
            layout,
            width=options.width,
            height=options.height,
            fps=options.fps,
            source=options.source,
            client_id=fake.client_id,
            obs_port=obs.port if obs is not None else None,
        )
        write_config(layout, settings)
        seed_twitch_tokens(layout, fake)
        daemon, token = daemon_process(layout, fake.daemon_env(), obs.password if obs is not None else None)
        if options.source == "network":
            sender = sender_process(layout, options.width, options.height, options.fps)
            sender.start()
        daemon.start()
        async with DashboardClient(layout.dashboard, token) as client:
            ledger = Ledger(layout.store)
            t0 = time.monotonic()
            sampler = Sampler(client, daemon, layout.recordings, t0)
            soak = Soak(
                options,
                layout,
                fake,
                daemon,
                sender,
                obs,
                obs_skipped,
                client,
                sampler,
                ledger,
                Traffic(client, fake, ledger, poll_s=options.poll_s),
            )
            return await _run_started(soak)
    finally:
        if daemon is not None and daemon.pid is not None:  # interrupted: never leave the daemon running
            await asyncio.to_thread(daemon.stop, 30.0)
        if sender is not None:
            sender.stop(10)
        if obs is not None:
            await asyncio.to_thread(obs.stop)
        await fake.stop()


async def _run_started(soak: Soak) -> dict[str, Any]:
    o = soak.options
    started = await wait_until(_frames_flowing(soak), START_TIMEOUT_S, every=0.5)
    if started is None:
        raise RuntimeError(f"the daemon sent no frame within {START_TIMEOUT_S:.0f} s:\n{soak.daemon.log_tail()}")
    log.info("soak: daemon up in %.1f s; warming up %.0f s", started, o.warmup_s)
    records: list[FaultRecord] = []
    async with asyncio.TaskGroup() as tg:
        sampling = tg.create_task(soak.sampler.run())
        traffic = tg.create_task(soak.traffic.run(o.traffic_every_s))
        model_ready = await wait_until(_model_running(soak), START_TIMEOUT_S, every=0.5)
        model = str(((await soak.client.state()) or {}).get("transform", ""))
        await asyncio.sleep(o.warmup_s)
        begin = time.monotonic()
        wall_begin = time.time()
        rotation = [cls() for cls in faults_mod.ROTATION if cls.name in o.faults]
        skipped = {f.name: why for f in rotation if (why := f.skip_reason(soak))}
        for name, why in skipped.items():
            log.warning("soak: fault %s skipped: %s", name, why)
        rotation = [f for f in rotation if f.name not in skipped]
        count = max(1, int(o.minutes * 60 // o.fault_every_s))
        next_slot = begin + o.fault_every_s  # the first window before any fault is the baseline
        for i in range(count):
            await asyncio.sleep(max(0.0, next_slot - time.monotonic()))
            fault = rotation[i % len(rotation)]
            rec, next_slot = await _one_fault(soak, fault, i, begin, next_slot + o.fault_every_s)
            records.append(rec)
            log.info(
                "soak: %-16s recovery %s s, worst gap %.0f ms, lost %d",
                rec.fault,
                "-" if rec.recovery_s is None else f"{rec.recovery_s:.1f}",
                rec.worst_gap_ms,
                len(rec.lost_before) + len(rec.lost_during),
            )
        end = time.monotonic()
        soak.traffic.paused.set()
        await asyncio.sleep(SETTLE_S + 1.0)
        lost_at_end = [f"{i.kind}:{i.key}" for i in soak.ledger.missing(before=time.monotonic() - SETTLE_S)]
        await soak.sampler.sample()
        sampling.cancel()
        traffic.cancel()
    baseline_gap, _ = soak.sampler.worst_gap(wall_begin, records[0].wall if records else time.time())
    exit_code = await asyncio.to_thread(soak.daemon.stop, 60.0)
    segments = check_recordings(soak.layout.recordings)
    for rec in records:
        if rec.segment is not None:
            seen = soak.sampler.segments.get(rec.segment or "", rec.wall)
            rec.playable_to_fault = playable_at(segments, rec.segment, rec.wall - seen)
    return {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
        "started_s": round(started, 1),
        "model_ready_s": model_ready,
        "model": model,  # the daemon's own line: preset, size, steps, device, dtype, path, weights
        "begin_t": round(begin - soak.sampler.t0, 2),  # the first fault slot, on the timeline's clock
        "ran_s": round(end - begin, 1),
        "baseline_worst_gap_ms": baseline_gap,
        "fault_types": {f.name: f.what for f in faults_mod.ROTATION},
        "faults": [asdict(r) for r in records],
        "skipped": skipped,
        "restart_gap_s": soak.restart_gap_s,
        "lost_at_end": lost_at_end,
        # everything the daemon took: [seconds on the timeline's clock, kind, key, expected stored value]
        "sent": [[round(i.sent - soak.sampler.t0, 2), i.kind, i.key, i.expect] for i in soak.ledger.items],
        "ledger": {
            "taken": soak.ledger.counts(),
            "unsent": dict(soak.ledger.unsent),
            "refused": dict(soak.ledger.refused),
            "moderated": soak.ledger.moderated(),
        },
        "daemon_exit_code": exit_code,
        "daemon_starts": soak.daemon.starts,
        "recording": [asdict(s) | {"playable": s.playable} for s in segments],
        "timeline": soak.sampler.timeline(),
        "gaps": [[end, ms] for end, ms in sorted(soak.sampler.gaps.values())],  # each second's longest
    }


def _frames_flowing(soak: Soak) -> Any:
    async def check() -> bool:
        return bool(await soak.client.counter("frames_out"))

    return check


def _model_running(soak: Soak) -> Any:
    async def check() -> bool:
        state = await soak.client.state()
        return state is not None and not str(state.get("transform", "passthrough")).startswith("passthrough")

    return check


async def _one_fault(
    soak: Soak, fault: faults_mod.Fault, index: int, begin: float, nominal_next: float
) -> tuple[FaultRecord, float]:
    """Inject one fault, wait for its recovery and its window's end; the record and the next slot."""
    rec = FaultRecord(fault.name, fault.outage, index, round(time.monotonic() - begin, 1), time.time())
    t_inject = time.monotonic()
    rss, threads = _proc(soak)
    rec.segment = soak.sampler.segment_at(rec.wall)
    rec.items_before = len([i for i in soak.ledger.items if i.sent < t_inject])
    missing_at_inject = _missing_keys(soak, before=t_inject)
    try:
        rec.details = await fault.inject(soak)
    except Exception as e:  # reported, and the soak goes on with the next fault
        log.exception("soak: injecting %s failed", fault.name)
        rec.error = f"{type(e).__name__}: {e}"
    if rec.error is None and "error" not in rec.details:
        took = await wait_until(lambda: fault.recovered(soak), RECOVERY_LIMIT_S)
        if took is not None:
            rec.recovery_s = round(time.monotonic() - t_inject, 2)
    window_end = max(nominal_next, time.monotonic() + SETTLE_S)
    await asyncio.sleep(max(0.0, window_end - time.monotonic()))
    rec.window_s = round(time.monotonic() - t_inject, 1)
    rec.worst_gap_ms, ended = soak.sampler.worst_gap(rec.wall, time.time())
    rec.worst_gap_after_s = None if ended is None else round(ended - rec.wall, 2)
    loads = [s.load1 for s in soak.sampler.samples if s.wall >= rec.wall]
    rec.load_max = max(loads) if loads else None
    # lost_before: stored when the fault came, gone after it (an item never stored was counted in its own window)
    rec.lost_before = sorted(_missing_keys(soak, before=t_inject) - missing_at_inject)
    cut = time.monotonic() - SETTLE_S
    rec.items_during = len([i for i in soak.ledger.items if t_inject <= i.sent < cut])
    rec.lost_during = _missing_keys(soak, before=cut, after=t_inject, ordered=True)
    rss_after, threads_after = _proc(soak)
    rec.rss_mb, rec.threads = (rss, rss_after), (threads, threads_after)
    return rec, time.monotonic()


def _missing_keys(soak: Soak, *, before: float, after: float = 0.0, ordered: bool = False) -> Any:
    """Ledger items taken in [after, before) that the store lacks now, as "kind:key" (a set, or a list)."""
    keys = [f"{i.kind}:{i.key}" for i in soak.ledger.missing(before=before, after=after)]
    return keys if ordered else set(keys)


def _proc(soak: Soak) -> tuple[float | None, int | None]:
    """The daemon's RSS (MiB) and thread count now."""
    pid = soak.daemon.pid
    stats = proc_status(pid) if pid is not None else None
    return (round(stats[0], 1), stats[1]) if stats else (None, None)
