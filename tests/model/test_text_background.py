"""umT5's weights read in the background while the daemon builds and warms the engine (issue 17 item 6):
the same states as a load in the foreground, a load error raised where the weights are asked for (so a
broken text encoder still fails the model load), and the engine's warm-up running while the weights load."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import torch
from umt5_test_files import random_weights, write_tokenizer, write_wan

import streamer.model.text as text_module
from streamer.config import from_dict
from streamer.model.background import BackgroundLoad
from streamer.model.builder import build_model_transform
from streamer.model.engine import ModelTransform
from streamer.model.text import CachedTextEncoder, TextEncoderError, UMT5TextEncoder, wait_for_weights

PROMPTS = ["a red fox in the snow", "neon city at night"]


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("umt5")
    vocab = write_tokenizer(root / "probe" / "tokenizer.json")
    return write_wan(root / "Wan2.1-T2V-1.3B", random_weights(vocab)[0], vocab)


def test_background_load_result_value_error_and_wait_time() -> None:
    gate = threading.Event()
    slow = BackgroundLoad(lambda: gate.wait(10) and 42, "slow")
    assert not slow.done
    threading.Timer(0.2, gate.set).start()
    assert slow.result() == 42 and slow.done and slow.waited_s >= 0.1

    def fail() -> int:
        raise TextEncoderError("the weights are broken")

    failed = BackgroundLoad(fail, "broken")
    for _ in range(2):  # every caller hears of the failure, not only the first
        with pytest.raises(TextEncoderError, match="the weights are broken"):
            failed.result()


def test_background_umt5_gives_the_foreground_states(wan_folder: Path) -> None:
    now = UMT5TextEncoder(wan_folder)
    later = UMT5TextEncoder(wan_folder, background=True)
    assert later.encoder_id == now.encoder_id  # known before the weights: cached prompts need none
    assert torch.equal(later.encode(PROMPTS), now.encode(PROMPTS))
    assert later.wait_loaded() >= 0.0 and wait_for_weights(CachedTextEncoder(later)) is not None
    assert wait_for_weights(text_module.RandomTextEncoder(4, 8)) is None  # never loads in the background


def test_a_failed_background_load_raises_where_the_weights_are_needed(
    wan_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise TextEncoderError(f"umT5 text encoder: {wan_folder}: cannot read shared.weight (truncated)")

    monkeypatch.setattr(text_module, "load_umt5", broken)
    with pytest.raises(TextEncoderError, match="truncated"):  # in the foreground: from the constructor, as before
        UMT5TextEncoder(wan_folder)
    enc = UMT5TextEncoder(wan_folder, background=True)  # returns at once; the failure waits for a caller
    for ask in (enc.wait_loaded, lambda: enc.encode(PROMPTS), lambda: wait_for_weights(CachedTextEncoder(enc))):
        with pytest.raises(TextEncoderError, match="truncated"):
            ask()


def _build_with_umt5(wan_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load) -> ModelTransform:
    """build_model_transform on the tiny preset (CPU, eager warm-up) with the stand-in umT5 as its text
    encoder, its weights read by `load` (the tiny DiT's 384-d text width is not umT5's: the build never
    encodes a prompt, which is the point, and these tests never step the engine with one)."""
    import streamer.model.loading as loading

    def umt5_text(folder, cache_dir, device, dtype, *, text_dim, text_len, background=False, **kw):  # noqa: ANN001, ANN202
        monkeypatch.setattr(text_module, "load_umt5", load)
        return CachedTextEncoder(UMT5TextEncoder(wan_folder, background=background), cache_dir)

    monkeypatch.setattr(loading, "build_text_encoder", umt5_text)
    settings = from_dict({"model": {"cache_dir": str(tmp_path), "checkpoint": "random", "vae": "random",
                                    "text_encoder": str(wan_folder)}, "video": {"width": 64, "height": 64}})  # fmt: skip
    return build_model_transform(settings)


def test_the_engine_warms_up_while_the_weights_load(
    wan_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_load, warmed, seen = text_module.load_umt5, threading.Event(), []
    step_tensor = ModelTransform.step_tensor

    def warm_up_then_note(self: ModelTransform, frames: torch.Tensor) -> torch.Tensor | None:
        out = step_tensor(self, frames)
        warmed.set()
        return out

    def load_after_the_warm_up(*args: object) -> object:
        # A load in the foreground would hold the build here before its warm-up: the wait times out.
        seen.append(warmed.wait(30))
        return real_load(*args)

    monkeypatch.setattr(ModelTransform, "step_tensor", warm_up_then_note)
    with caplog.at_level(logging.INFO, logger="streamer.model"):
        engine = _build_with_umt5(wan_folder, tmp_path, monkeypatch, load_after_the_warm_up)
    assert seen == [True]  # the warm-up chunk ran while the weights were still loading
    messages = [r.getMessage() for r in caplog.records]
    assert any("weights still loading, in the background" in m for m in messages)
    assert any(m.startswith("text encoder weights ready: waited") for m in messages)
    engine.close()


def test_a_broken_text_encoder_still_fails_the_model_load(
    wan_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        time.sleep(0.2)  # fails after the build has gone on to the warm-up
        raise TextEncoderError("umT5 text encoder: cannot read encoder.block.0 (truncated)")

    with pytest.raises(TextEncoderError, match="truncated"):
        _build_with_umt5(wan_folder, tmp_path, monkeypatch, broken)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_fast_path_captures_while_weights_arrive_on_the_gpu(tmp_path: Path) -> None:
    """What the daemon does at start: umT5's weights go to the GPU on their own thread while the fast path
    warms up and captures its graph (fast/path.py captures in thread_local mode for this)."""
    stop = threading.Event()

    def copy_until_stopped() -> int:
        n = 0
        while not stop.is_set():
            host = torch.full((1 + n % 64, 1 << 16), float(n))  # pageable, a new size each time: a cudaMalloc
            on_gpu = host.to("cuda")  # a synchronous copy, as the weights' loader makes
            assert on_gpu[-1, -1].item() == float(n)
            n += 1
        return n

    loader = BackgroundLoad(copy_until_stopped, "copies to the GPU")
    raw = {"model": {"preset": "wan-1.3b", "width": 128, "height": 128, "dtype": "bfloat16", "device": "cuda",
                     "cache_dir": str(tmp_path), "fast_path": True}, "video": {"width": 128, "height": 128}}  # fmt: skip
    engine = build_model_transform(from_dict(raw))
    assert not loader.done  # still copying after the capture: it ran across it
    stop.set()
    assert loader.result() > 0 and engine.fast is not None
    engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_pinned_uploader_copies_every_byte() -> None:
    from streamer.model.weights.upload import PinnedUploader

    up = PinnedUploader(torch.device("cuda"), chunk_bytes=1000)  # tensors span many chunks and both buffers
    gen = torch.Generator().manual_seed(0)
    sources = [torch.randn(37, 91, generator=gen).to(torch.bfloat16), torch.randn(5000, generator=gen),
               torch.randn(64, 64, generator=gen).t(), torch.empty(0, 3), torch.randint(0, 9, (333,), generator=gen)]  # fmt: skip
    outs = [up.upload(s) for s in sources]
    up.finish()
    for s, o in zip(sources, outs, strict=True):
        assert o.device.type == "cuda" and o.dtype == s.dtype and torch.equal(o.cpu(), s)
