"""`streamer train`: the command-line entry of the training loop (prune's is in streamer.train.prune)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from streamer.train import config as tconfig
from streamer.train.trainer import Trainer, distributed_env

log = logging.getLogger(__name__)


def train_command(args: argparse.Namespace) -> int:
    """Train (or resume) per the config; under torchrun every process runs this same function."""
    cfg = tconfig.load(args.config)
    overrides = {k: v for k, v in (("steps", args.steps), ("out_dir", args.out_dir)) if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
        tconfig.check(cfg, args.config)
    rank, world, _ = distributed_env()
    if rank:
        logging.getLogger().setLevel(logging.WARNING)  # one progress display, from process 0
    trainer = Trainer(cfg)
    step = trainer.run(stop_after=args.stop_after, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    if rank == 0:
        print(f"stopped at step {step}/{cfg.steps}; checkpoints in {trainer.out_dir / 'checkpoints'}")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
