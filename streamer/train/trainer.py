"""The training loop: one process or several (PyTorch DDP under torchrun), exact resume, progress, samples.

Launch: `streamer train --config TRAIN.toml` (one process) or
`torchrun --nproc-per-node N -m streamer train --config TRAIN.toml` (DDP: NCCL on GPUs, gloo on CPUs).
Each process draws its own batch from generators seeded by (seed, step, rank); DDP averages the
gradients, so N processes at batch b train like one process at batch N*b (a test checks the gradients).
Process 0 alone writes checkpoints, samples and log.jsonl. A run resumes from `out_dir`'s latest
checkpoint automatically and continues bit-for-bit as if never interrupted (a test kills and compares).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from streamer.model.config import preset
from streamer.model.text import build_text_encoder
from streamer.model.vae import TAEHV, load_taehv, tiny_taehv
from streamer.model.weights.checkpoints import CheckpointError, read_checkpoint
from streamer.train import checkpoint as ckpt
from streamer.train.config import TrainConfig
from streamer.train.data import BatchPrefetcher, build_source, draw_clips, step_generator
from streamer.train.objective import DiTForward, DiTObjective, StepStats, VAEForward, VAEObjective
from streamer.train.shortcut import ShortcutDiT, load_shortcut_file
from streamer.train.vae_init import colour_carrier_init

log = logging.getLogger(__name__)


def resolve_device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device = {spec!r} but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return device


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run directly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def build_dit(cfg: TrainConfig) -> ShortcutDiT:
    """The DiT to train: `init` (any layout the project's loader reads, step embedding if saved), else a
    seeded random `preset`."""
    # Seeded even with `init`: a step embedding the checkpoint lacks starts from these random weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if not cfg.init:
            return ShortcutDiT(preset(cfg.preset))
        info = read_checkpoint(cfg.init)
        if info.problems:
            raise CheckpointError(f"{info.path}: cannot fine-tune: " + "; ".join(info.problems))
        model = ShortcutDiT(info.config)
    model.load_weights(info.state_dict, load_shortcut_file(info.path.parent))
    return model


def build_vae(cfg: TrainConfig) -> TAEHV:
    """The autoencoder: tiny = per-frame (TINY widths), Wan presets = temporal taew2_1."""
    per_frame = cfg.preset == "tiny"
    if cfg.vae:
        return load_taehv(cfg.vae, temporal=not per_frame).float()
    if cfg.stage == "dit":
        log.warning("train.vae is empty: the DiT learns the latent space of a RANDOM autoencoder; "
                    "train one first with stage = 'vae' (see docs/training.md)")  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        # the tiny one starts with colour carried through (streamer/train/vae_init.py: from a plain
        # random start its 8-channel layers stayed grey for the whole first recipe run)
        return colour_carrier_init(tiny_taehv()) if per_frame else TAEHV(temporal=True)


class TextStates:
    """Prompt -> token states [L, text_dim], computed once per prompt (the encoder stays frozen)."""

    def __init__(self, encode: Callable[[list[str]], Tensor], device: torch.device) -> None:
        self.encode, self.device, self.cache = encode, device, {}  # type: ignore[var-annotated]

    def __call__(self, prompts: list[str]) -> Tensor:
        missing = sorted({p for p in prompts if p not in self.cache})
        if missing:
            for p, s in zip(missing, self.encode(missing), strict=True):
                self.cache[p] = s.to(self.device)
        return torch.stack([self.cache[p] for p in prompts])


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class Trainer:
    """Owns the model, optimizer, data and objective of one process (see module docstring)."""

    def __init__(self, cfg: TrainConfig, *, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.rank, self.world, local_rank = distributed_env()
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
        self.device = device or resolve_device(cfg.device, local_rank)
        self.out_dir = Path(cfg.out_dir).expanduser()
        self.vae = build_vae(cfg).to(self.device)
        self.source = build_source(cfg.data, cfg.looks, (cfg.height, cfg.width))
        self.video_frames = cfg.frames * self.vae.frames_per_latent
        self.dit: ShortcutDiT | None = None
        if cfg.stage == "vae":
            if self.vae.temporal:
                raise ValueError("stage = 'vae' trains the tiny per-frame autoencoder only (preset = 'tiny')")
            self.vae.train().requires_grad_(True)
            module: nn.Module = VAEForward(self.vae)
            self.params = list(self.vae.parameters())
        else:
            self.vae.eval().requires_grad_(False)
            self.dit = build_dit(cfg).to(self.device).train()
            m = self.dit.cfg
            enc = build_text_encoder(cfg.text_encoder, "", "cpu", torch.float32, text_dim=m.text_dim,
                                     text_len=m.text_len, allow_random=False)  # fmt: skip
            self.text = TextStates(enc.encode, self.device)
            self.text(self.source.prompts)  # every prompt once, up front
            module = DiTForward(self.dit, cfg)
            self.params = list(self.dit.parameters())
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.module = module
        if cfg.stage == "vae":
            self.objective: DiTObjective | VAEObjective = VAEObjective(module)
        else:
            assert self.dit is not None
            self.objective = DiTObjective(module, self.dit, self.vae, self.text, cfg)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        self.ema = [p.detach().clone() for p in self.params] if cfg.ema else None
        self.step = 0
        self._prefetch: BatchPrefetcher | None = None

    # ---- state -----------------------------------------------------------------------------------
    def _named(self) -> dict[str, dict[str, Tensor]]:
        if self.dit is not None:
            out = {"model": self.dit.wan_state_dict(), "shortcut": self.dit.shortcut_state_dict()}
            names = [n for n, _ in self.dit.named_parameters()]
        else:
            out = {"vae": self.vae.state_dict()}
            names = [n for n, _ in self.vae.named_parameters()]
        if self.ema is not None:
            out["ema"] = dict(zip(names, self.ema, strict=True))
        return out

    def save(self) -> Path | None:
        """Checkpoint the current step (process 0 only; others wait so nobody races ahead of a save)."""
        path = None
        if self.rank == 0:
            path = ckpt.save(self.out_dir, self.step, weights=self._named(),
                             dit_cfg=self.dit.cfg if self.dit is not None else None,
                             optimizer=self.opt.state_dict(), train_cfg=self.cfg, keep=self.cfg.keep_checkpoints)  # fmt: skip
        if self.world > 1:
            dist.barrier()
        return path

    def resume(self) -> int:
        """Load the latest checkpoint in out_dir, if any; returns the step to continue from."""
        folder = ckpt.latest(self.out_dir)
        if folder is None:
            return 0
        state = ckpt.load_state(folder)
        target = self.dit if self.dit is not None else self.vae
        weights = {}
        for stem in ("model", "shortcut", "vae"):
            weights.update(ckpt.load_weights(folder, stem) or {})
        target.load_state_dict(weights, strict=True)
        self.opt.load_state_dict(state["optimizer"])
        if self.ema is not None:
            ema = ckpt.load_weights(folder, "ema")
            if ema is None:
                raise ValueError(f"{folder}: train.ema is on but the checkpoint has no ema.safetensors")
            names = [n for n, _ in target.named_parameters()]
            self.ema = [ema[n].to(self.device) for n in names]
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", folder, self.step)
        return self.step

    # ---- one step --------------------------------------------------------------------------------
    def backward(self, step: int) -> tuple[Tensor, StepStats]:
        """Zero the gradients, compute step `step`'s loss on this process's batch, backpropagate."""
        cfg = self.cfg
        # Looks are rendered on the training device when it is a GPU (batched, ~free there), else with the crops
        # (in the data workers when there are any); the targets are the same either way.
        render = self.device.type == "cpu"
        if cfg.workers and self._prefetch is None:
            self._prefetch = BatchPrefetcher(self.source, cfg.batch, self.video_frames, cfg.seed, self.rank,
                                             cfg.workers, render)  # fmt: skip
        if self._prefetch is not None:
            clips = self._prefetch.get(step)
        else:
            clips = draw_clips(self.source, cfg.batch, self.video_frames, cfg.seed, step, self.rank, render)
        batch = clips.ready(self.device)
        gen = step_generator(cfg.seed, step, self.rank, "noise")
        self.opt.zero_grad(set_to_none=True)
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
        with amp:
            loss, stats = self.objective.loss(batch, gen)
        loss.backward()
        return loss, stats

    def train_step(self) -> StepStats:
        _, stats = self.backward(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.cfg, self.step)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1 - self.cfg.ema)
        self.step += 1
        return stats

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None, max_seconds: float | None = None) -> int:
        """Train until cfg.steps (or `stop_after` more steps / `max_seconds`), checkpointing on the way
        and at the end. Returns the step reached."""
        try:
            return self._run(stop_after, max_seconds)
        finally:
            if self._prefetch is not None:
                self._prefetch.close()
                self._prefetch = None

    def _run(self, stop_after: int | None, max_seconds: float | None) -> int:
        cfg = self.cfg
        start = self.resume()
        end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
        t0 = last_t = time.monotonic()
        last_step, window = start, []
        logfile = self.out_dir / "log.jsonl"
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log.info("training %s stage: steps %d..%d, %d process(es) x batch %d on %s", cfg.stage, start, end,
                     self.world, cfg.batch, self.device)  # fmt: skip
        while self.step < end:
            stats = self.train_step()
            window.append(stats)
            done = self.step
            if done % cfg.log_every == 0 or done == end:
                now = time.monotonic()
                rate = (done - last_step) / max(now - last_t, 1e-9)
                eta = (end - done) / rate if rate > 0 else float("inf")
                mean = {k: sum(getattr(s, k) for s in window) / len(window) for k in asdict(stats)}
                if self.rank == 0:
                    parts = (
                        ""
                        if self.dit is None
                        else f" (flow {mean['flow_loss']:.4f}, shortcut {mean['shortcut_loss']:.4f}"
                        + (f", pixel {mean['pixel_loss']:.4f})" if cfg.pixel_loss else ")")
                    )
                    log.info("step %d/%d  loss %.4f%s  %.2f step/s  %.1f clips/s  ETA %s", done, cfg.steps,
                             mean["loss"], parts, rate, rate * cfg.batch * self.world, _fmt_eta(eta))  # fmt: skip
                    with logfile.open("a") as f:
                        f.write(json.dumps({"step": done, **mean, "steps_per_s": rate, "lr": lr_at(cfg, done - 1),
                                            "time": time.time()}) + "\n")  # fmt: skip
                last_t, last_step, window = now, done, []
            if done % cfg.save_every == 0 or done == end:
                self.save()
            if cfg.sample_every and done % cfg.sample_every == 0 and self.rank == 0 and self.dit is not None:
                from streamer.train.samples import write_samples

                write_samples(self, done)
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                log.info("time limit reached at step %d; resume later with the same command", done)
                if done % cfg.save_every:
                    self.save()
                break
        return self.step


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
