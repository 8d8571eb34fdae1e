"""Two-process DDP on the CPU (gloo) gives the same gradients as one process averaging both batches."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from streamer.train.config import TrainConfig


def cfg_for(out: Path, data: Path, init: Path) -> TrainConfig:
    return TrainConfig(init=str(init), data=str(data), out_dir=str(out), width=32, height=32, frames=3, batch=2,
                       steps=2, sample_every=0, p_history=0.5, p_rollout=0.5, p_shortcut=0.5)  # fmt: skip


def flat_grads(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in params])


def _worker(rank: int, port: int, out: str, data: str, init: str, result: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    from streamer.model.text import RandomTextEncoder
    from streamer.train import trainer as T

    T.build_text_encoder = lambda *a, text_dim, text_len, **k: RandomTextEncoder(text_len, text_dim)  # type: ignore[assignment]
    tr = T.Trainer(cfg_for(Path(out), Path(data), Path(init)))
    assert isinstance(tr.module, torch.nn.parallel.DistributedDataParallel)
    tr.backward(step=1)
    if rank == 0:
        torch.save(flat_grads(tr.params), result)
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_gloo_matches_single_process(tmp_path: Path, pair_dir: Path, micro_init: Path,
                                                 fast_text: None) -> None:  # fmt: skip
    result = tmp_path / "ddp_grads.pt"
    args = (free_port(), str(tmp_path / "ddp"), str(pair_dir), str(micro_init), str(result))
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="spawn")
    ddp = torch.load(result, weights_only=True)
    from streamer.train.trainer import Trainer

    single = Trainer(cfg_for(tmp_path / "single", pair_dir, micro_init))
    assert single.world == 1
    grads = []
    for rank in (0, 1):  # one process computing each rank's batch in turn
        single.rank = rank
        single.backward(step=1)
        grads.append(flat_grads(single.params))
    expected = (grads[0] + grads[1]) / 2
    assert expected.abs().max() > 0 and not torch.allclose(grads[0], grads[1])
    assert torch.allclose(ddp, expected, rtol=1e-4, atol=1e-7), float((ddp - expected).abs().max())
