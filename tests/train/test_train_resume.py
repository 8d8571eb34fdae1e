"""Checkpoints resume exactly: N steps straight == N/2, interruption (stop or SIGKILL), resume, N/2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from streamer.model.vae import load_taehv
from streamer.model.weights.checkpoints import load_dit
from streamer.train import checkpoint as ckpt
from streamer.train.config import TrainConfig
from streamer.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def tiny_cfg(out: Path, data: Path, init: Path | None = None, **kw: object) -> TrainConfig:
    base = dict(init=str(init or ""), data=str(data), out_dir=str(out), width=32, height=32, frames=3, batch=2, steps=4, save_every=2,
                log_every=1, sample_every=0, warmup=1, p_history=0.5, p_rollout=0.5, p_shortcut=0.5, ema=0.9)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def state(tr: Trainer) -> dict[str, torch.Tensor]:
    sd = {f"w.{k}": v.detach().clone() for k, v in tr.dit.state_dict().items()}  # type: ignore[union-attr]
    for i, s in tr.opt.state_dict()["state"].items():
        sd.update({f"opt.{i}.{k}": v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)})
    sd.update({f"ema.{i}": e.clone() for i, e in enumerate(tr.ema or [])})
    return sd


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


def test_stop_and_resume_is_bit_identical(tmp_path: Path, pair_dir: Path, micro_init: Path, fast_text: None) -> None:
    straight = Trainer(tiny_cfg(tmp_path / "a", pair_dir, micro_init))
    straight.run()
    first = Trainer(tiny_cfg(tmp_path / "b", pair_dir, micro_init))
    assert first.run(stop_after=2) == 2
    again = Trainer(tiny_cfg(tmp_path / "b", pair_dir, micro_init))
    assert again.resume() == 2
    again.step = 0  # run() resumes by itself; start from scratch state to prove it does
    assert again.run() == 4
    assert_same(state(straight), state(again))
    assert len(list((tmp_path / "b" / "checkpoints").glob("step_*"))) == 2  # step 2 and 4
    # the weights are an ordinary Wan-named checkpoint for the project's loader
    dit, _ = load_dit(tmp_path / "b" / "checkpoints" / "step_0000004")
    assert torch.equal(dit.blocks[0].ffn[0].weight, straight.dit.blocks[0].ffn[0].weight)  # type: ignore[union-attr]


def test_sigkill_mid_run_then_resume_matches_straight_run(
    tmp_path: Path, pair_dir: Path, micro_init: Path, fast_text: None
) -> None:
    steps = 12
    toml = tmp_path / "t.toml"
    toml.write_text(
        "[train]\n" + f'data = "{pair_dir}"\nout_dir = "{tmp_path / "killed"}"\n'
        f'init = "{micro_init}"\n'
        f"width = 32\nheight = 32\nframes = 3\nbatch = 2\nsteps = {steps}\nsave_every = 3\nsample_every = 0\n"
        "warmup = 1\np_history = 0.5\np_rollout = 0.5\np_shortcut = 0.5\nema = 0.9\nlog_every = 1\n"
    )
    code = (
        "import sys; from streamer.model.text import RandomTextEncoder; import streamer.train.trainer as T\n"
        "T.build_text_encoder = lambda *a, text_dim, text_len, **k: RandomTextEncoder(text_len, text_dim)\n"
        "from streamer.cli import main; sys.exit(main(['train', '--config', sys.argv[1]]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(toml)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    first_ckpt = tmp_path / "killed" / "checkpoints" / "step_0000003" / "state.pt"
    deadline = time.monotonic() + 120
    while not first_ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    killed_at = ckpt.latest(tmp_path / "killed")
    assert killed_at is not None and killed_at.name < f"step_{steps:07d}", "the run finished before it was killed"
    resumed = Trainer(tiny_cfg(tmp_path / "killed", pair_dir, micro_init, steps=steps, save_every=3))
    assert resumed.run() == steps
    straight = Trainer(tiny_cfg(tmp_path / "straight", pair_dir, micro_init, steps=steps, save_every=3))
    straight.run()
    assert_same(state(straight), state(resumed))


def test_vae_stage_trains_and_saves_a_loadable_autoencoder(tmp_path: Path, pair_dir: Path) -> None:
    cfg = tiny_cfg(tmp_path / "v", pair_dir, stage="vae", steps=6, save_every=6, lr=3e-3, ema=0.0)
    tr = Trainer(cfg)
    losses = [tr.train_step().loss for _ in range(6)]
    assert losses[-1] < losses[0]
    tr.save()
    vae = load_taehv(tmp_path / "v" / "checkpoints" / "step_0000006" / "vae.safetensors", temporal=False)
    assert not vae.temporal and torch.equal(vae.encoder[0].weight, tr.vae.encoder[0].weight.detach())


def test_resume_rejects_a_damaged_state_file(tmp_path: Path, pair_dir: Path, micro_init: Path, fast_text: None) -> None:
    tr = Trainer(tiny_cfg(tmp_path / "d", pair_dir, micro_init, steps=2))
    tr.run()
    (tmp_path / "d" / "checkpoints" / "step_0000002" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable training state"):
        Trainer(tiny_cfg(tmp_path / "d", pair_dir, micro_init, steps=4)).resume()
