"""Sample clips: the trained model streamed through the daemon's engine, written as H.264 with PyAV."""

from __future__ import annotations

from pathlib import Path

import av

from streamer.train.config import TrainConfig
from streamer.train.samples import write_samples
from streamer.train.trainer import Trainer


def test_sample_clip_is_input_model_target_side_by_side(tmp_path: Path, pair_dir: Path, micro_init: Path,
                                                        fast_text: None) -> None:  # fmt: skip
    cfg = TrainConfig(init=str(micro_init), data=str(pair_dir), out_dir=str(tmp_path), width=32, height=32, frames=2,
                      batch=1, steps=1, sample_every=1, sample_frames=5, save_every=1)  # fmt: skip
    tr = Trainer(cfg)
    tr.run()  # step 1 writes samples/step_0000001.mp4 through the loop
    path = tmp_path / "samples" / "step_0000001.mp4"
    assert path.is_file()
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (2 * 32, 3 * 32, 3)  # 2 clips stacked; input | model | target
    left, middle = frames[-1][:32, :32].astype(int), frames[-1][:32, 32:64].astype(int)
    assert abs(left - middle).mean() > 1  # the model's column is its own output, not a copy of the input
    assert (tmp_path / "samples" / "step_0000001.txt").read_text().strip()
    assert write_samples(tr, 7).name == "step_0000007.mp4"
