"""A stage process's life: join the process group, load, agree on the placement, serve, report.

Started by the driver (group.py) with torch.multiprocessing's spawn; it sets the variables torchrun
would (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) and joins with `init_method="env://"`. The
backend follows the device: NCCL on CUDA GPUs, gloo on the CPU. Every stage loads the whole DiT on its
device, the first measures the per-layer and autoencoder times and places the boundaries
(balance.py) for all, then each frees the blocks it does not run. A watchdog thread ends the process
when the driver is gone or a send/recv outlives its timeout (an NCCL wait may not return on its own),
so a stage never hangs; any error is reported to the driver before the process exits.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

import torch
import torch.distributed as dist

from streamer.config import ModelSettings
from streamer.model.dit import DiT
from streamer.model.engine import EagerOps
from streamer.model.loading import load_configured_dit, load_configured_vae, resolve_dtype
from streamer.model.pipeline.balance import StageCosts, measure_costs
from streamer.model.pipeline.stage import Stage
from streamer.model.pipeline.wire import Link

WATCHDOG_GRACE_S = 5.0  # past the link's own timeout: the wait should have raised by then


@dataclasses.dataclass(frozen=True)
class StageArgs:
    rank: int
    world: int
    settings: ModelSettings
    device: str  # "cpu" or "cuda:N"
    port: int
    timeout_s: float  # every send/recv; the idle heartbeat comes 4x as often
    start_timeout_s: float  # joining and loading (the placement broadcast waits for the first stage)
    frame_hw: tuple[int, int]  # the pipeline's frame size (the measured encode/decode use it)
    threads: int  # CPU: intra-op threads per stage (the cores shared out)
    layers: tuple[tuple[int, int], ...] | None = None  # fixed stage ranges; None = measured placement


def stage_main(args: StageArgs, inbox: Any, outbox: Any, parent_pid: int) -> None:
    """Process entry point (spawn): run the stage; on any error tell the driver, then exit non-zero."""
    # A terminal's Ctrl-C reaches every process of its foreground group, the stages too. The driver stops
    # them when the daemon shuts down; dying of it here would read as a stage failure (and a restart).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(args.port),
        RANK=str(args.rank),
        WORLD_SIZE=str(args.world),
        LOCAL_RANK=str(args.rank),
    )
    try:
        _run(args, inbox, outbox, parent_pid)
    except BaseException as e:  # noqa: BLE001 - reported whatever it is: the driver decides
        oom = isinstance(e, torch.OutOfMemoryError)
        what = "ran out of memory" if oom else "failed"
        outbox.put(("error", args.rank, f"{what}: {type(e).__name__}: {e}", traceback.format_exc(limit=8)))
        _exit(outbox, 1)
    _exit(outbox, 0)


def _exit(outbox: Any, code: int) -> None:
    outbox.close()
    outbox.join_thread()  # the message is in the pipe before the process goes
    sys.stdout.flush()
    os._exit(code)  # no teardown that could wait on a dead peer


def _run(args: StageArgs, inbox: Any, outbox: Any, parent_pid: int) -> None:
    m, device = args.settings, torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method="env://",
        rank=args.rank,
        world_size=args.world,
        timeout=datetime.timedelta(seconds=args.start_timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    first, last = args.rank == 0, args.rank == args.world - 1
    dtype = resolve_dtype(m.dtype, device)
    with torch.no_grad():
        dit, dit_src = load_configured_dit(m, device, dtype)
        vae, vae_src = load_configured_vae(m, device, dtype) if first or last else (None, "")
        costs, layers = _placement(args, dit, vae)
        release_blocks(dit, layers)
        link = Link(device, args.timeout_s, max_in_flight=4 * (m.steps + 8))
        stage = Stage(m, args.rank, args.world, layers, dit, vae, link, outbox,
                      heartbeat_s=args.timeout_s / 4, graphs=device.type == "cuda" and m.fast_path)  # fmt: skip
        threading.Thread(target=_watchdog, args=(link, parent_pid, args.timeout_s), daemon=True).start()
        fpl = vae.frames_per_latent if vae is not None else 0
        outbox.put(("ready", args.rank, (layers.start, layers.stop), dit_src, vae_src, costs, fpl))
        if first:
            stage.serve_first(inbox)
        else:
            stage.serve()
        link.flush()


def _placement(args: StageArgs, dit: DiT, vae: Any) -> tuple[StageCosts | None, range]:
    """The first stage measures and places; every stage learns its range from it (one broadcast)."""
    costs: StageCosts | None = None
    box: list[Any] = [args.layers]
    if args.rank == 0 and args.layers is None:
        costs = _measure(args.settings, dit, vae, args.frame_hw)
        box = [tuple((r.start, r.stop) for r in costs.place(args.world))]
    dist.broadcast_object_list(box, src=0)
    start, stop = box[0][args.rank]
    return costs, range(start, stop)


def _measure(m: ModelSettings, dit: DiT, vae: Any, frame_hw: tuple[int, int]) -> StageCosts:
    device = dit.patch_embedding.weight.device
    ops = EagerOps(vae, m, dit.dtype, torch.contiguous_format)
    grey = torch.full((vae.frames_per_latent, *frame_hw, 3), 64, dtype=torch.uint8, device=device)
    latent = ops.encode(ops.to_model(grey))
    costs = measure_costs(
        dit,
        lambda: ops.encode(ops.to_model(grey)),
        lambda: ops.to_frames(ops.decode(latent), *frame_hw),
        m,
        batch=1,  # a pass is one chunk (or one stream-batch slot)
    )
    ops.reset()
    return costs


def release_blocks(dit: DiT, keep: range) -> None:
    """Free the weights of the blocks this stage does not run. Their `modulation` stays (a block's input
    is normalised with the NEXT block's modulation) and every tensor keeps its dtype."""
    for i, block in enumerate(dit.layers):
        if i in keep:
            continue
        for name, p in block.named_parameters():
            if name != "modulation":
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)
    if dit.patch_embedding.weight.device.type == "cuda":
        torch.cuda.empty_cache()


def _watchdog(link: Link, parent_pid: int, timeout_s: float) -> None:
    """End the process when the driver is gone or a wait outlives its timeout (never hang a GPU)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(4)
        since = link.busy_since
        if since is not None and time.monotonic() - since > timeout_s + WATCHDOG_GRACE_S:
            print(f"pipeline stage: a send/recv has waited {timeout_s:g} s; exiting", file=sys.stderr, flush=True)
            os._exit(3)
