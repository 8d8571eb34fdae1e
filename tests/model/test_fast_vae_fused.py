"""streamer/model/fast/vae_fused.py: the rewritten TAEHV (stacked MemBlock conv + shifted add, TPool
folded into the strided conv, TGrow before the upsample) == the layers run as they are."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from streamer.model.fast.vae import ChunkCodec, _StaticStream
from streamer.model.fast.vae_fused import FusedStream
from streamer.model.fast.vae_steps import upsampled_conv_as_transposed
from streamer.model.vae import TAEHV, MemBlock

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("fusion", ["torch", "triton", "cudnn"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("frames", [1, 2, 3])
def test_memblock_stacked_conv_and_shifted_add_match_the_concatenation(
    frames: int, channels_last: bool, fusion: str
) -> None:
    """Random weights and biases, a skip conv (n_in != n_out), the carried state over three chunks."""
    torch.manual_seed(1)
    layers = nn.Sequential(MemBlock(6, 10), MemBlock(10, 10)).eval()
    for p in layers.parameters():
        nn.init.normal_(p, std=1 / p[0].numel() ** 0.5)  # O(1) activations: 1e-5 is then fp32 rounding
    ref, fused = _StaticStream(layers, channels_last), FusedStream(layers, channels_last, fusion)
    for _ in range(3):
        x = torch.randn(frames, 6, 12, 20)
        torch.testing.assert_close(fused.run(x), ref.run(x), rtol=1e-5, atol=1e-5)
    fused.reset()
    ref.reset()
    x = torch.randn(frames, 6, 12, 20)
    torch.testing.assert_close(fused.run(x), ref.run(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temporal,fusion", [(True, "torch"), (False, "torch"), (True, "triton"), (True, "cudnn")])
def test_fused_codec_matches_the_layer_by_layer_codec_at_scaled_down_taehv_widths(temporal: bool, fusion: str) -> None:
    """taew2_1's widths (64 / 256,128,64,64) at a quarter, random weights, four chunks of state. On a CPU
    "cudnn" runs its own structure (the MemBlock's halves as two convs) with unfused ops."""
    torch.manual_seed(2)
    vae = TAEHV(temporal, encoder_width=16, decoder_widths=(64, 32, 16, 16)).eval()
    for p in vae.parameters():
        nn.init.normal_(p, std=0.5 / p[0].numel() ** 0.5)
    ref, fused = ChunkCodec(vae, fusion="none"), ChunkCodec(vae, fusion=fusion)
    for _ in range(4):
        frames = torch.rand(vae.frames_per_latent, 3, 48, 64)
        z_ref, z = ref.encode(frames), fused.encode(frames)
        torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused.decode(z_ref), ref.decode(z_ref), rtol=1e-5, atol=1e-5)


def test_nearest_upsample_then_3x3_conv_is_one_transposed_conv() -> None:
    torch.manual_seed(3)
    w, x = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 7, 9, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    wt = upsampled_conv_as_transposed(w).double()
    assert wt.shape == (4, 5, 4, 4)
    torch.testing.assert_close(torch.nn.functional.conv_transpose2d(x, wt, stride=2, padding=1), ref)


def test_channels_last_decoder_upsamples_through_transposed_convs_and_matches() -> None:
    """NHWC: each Upsample + TGrow + conv runs as TGrow + one transposed conv; no upsampled tensor is
    written, and four chunks of carried state decode as the layer-by-layer codec does."""
    torch.manual_seed(4)
    vae = TAEHV(True, encoder_width=16, decoder_widths=(64, 32, 16, 16)).eval()
    for p in vae.parameters():
        nn.init.normal_(p, std=0.5 / p[0].numel() ** 0.5)
    ref, fused = ChunkCodec(vae, fusion="none"), ChunkCodec(vae, channels_last=True, fusion="torch")
    for _ in range(4):
        z = torch.randn(1, 16, 1, 6, 8)
        with _Writes() as ops:
            out = fused.decode(z)
        torch.testing.assert_close(out, ref.decode(z), rtol=1e-5, atol=1e-5)
        assert ops.names.count("convolution") >= 3 and "upsample_nearest2d" not in ops.names


@pytest.mark.parametrize("fusion", ["torch", "cudnn"])
def test_channels_last_encoder_stacks_its_input_not_the_first_conv_output(fusion: str) -> None:
    """NHWC: the encoder's first conv runs on the frames stacked on channels (block-diagonal weight), so
    the TPool after it reads its output as is: no copy of the full-width activations; four chunks of
    carried state encode as the layer-by-layer codec does. Off, the full-width stacking copy is back."""
    torch.manual_seed(5)
    vae = TAEHV(True, encoder_width=16, decoder_widths=(64, 32, 16, 16)).eval()
    for p in vae.parameters():
        nn.init.normal_(p, std=0.5 / p[0].numel() ** 0.5)
    ref = ChunkCodec(vae, fusion="none")
    fused = ChunkCodec(vae, channels_last=True, fusion=fusion)
    first = fused._enc.steps[0]  # type: ignore[union-attr]
    assert first.channels == 8 and first.w.shape[:2] == (32, 8)  # 2 frames x 3 channels, zero-padded to 8
    for _ in range(4):
        frames = torch.rand(vae.frames_per_latent, 3, 48, 64)
        with _Writes() as ops:
            z = fused.encode(frames)
        torch.testing.assert_close(z, ref.encode(frames), rtol=1e-5, atol=1e-5)
        assert _full_width_writes(ops) == ["convolution"], ops.sizes  # the (in-place) ReLU aside
    FusedStream.STACKED_FRAME_CONV = False
    try:
        off = ChunkCodec(vae, channels_last=True, fusion=fusion)
        with _Writes() as ops:
            off.encode(frames)
        assert _full_width_writes(ops) == ["convolution", "clone"], ops.sizes  # the stacking copy
    finally:
        FusedStream.STACKED_FRAME_CONV = True


@pytest.mark.parametrize("channels_last", [False, True])
def test_cudnn_memblock_adds_a_view_of_its_past_buffer_not_a_concatenation(channels_last: bool) -> None:
    """The cuDNN structure writes B one frame on into a buffer whose frame 0 is the carried state: the
    shifted B is a view (no cat), the state is that frame (a view too), and a T change keeps it."""
    torch.manual_seed(6)
    layers = nn.Sequential(MemBlock(6, 6)).eval()
    ref, fused = _StaticStream(layers, channels_last), FusedStream(layers, channels_last, "cudnn")
    for frames in (3, 3, 2, 1):
        x = torch.randn(frames, 6, 10, 14)
        with _Writes() as ops:
            out = fused.run(x)
        torch.testing.assert_close(out, ref.run(x), rtol=1e-5, atol=1e-5)
        assert "cat" not in ops.names, ops.names
        mem = fused.mems[0]
        assert mem.past is not None and mem.memory is not None
        assert mem.memory.data_ptr() == mem.past.data_ptr() and mem.past.shape[0] == frames + 1


def test_channels_last_decoder_ends_in_one_relu_conv_pass() -> None:
    """NHWC: the decoder's final ReLU + conv (to 3 channels) is one relu_conv3x3 pass (the interpreter
    runs it here), writing no ReLU'd full-size tensor; NCHW, or with the switch off, the plain ops."""
    from streamer.model.fast.vae_steps import ReluConvOut

    torch.manual_seed(7)
    vae = TAEHV(True, encoder_width=16, decoder_widths=(64, 32, 16, 16)).eval()
    for p in vae.parameters():
        nn.init.normal_(p, std=0.5 / p[0].numel() ** 0.5)
    ref = ChunkCodec(vae, fusion="none")
    fused = ChunkCodec(vae, channels_last=True, fusion="cudnn")
    assert isinstance(fused._dec.steps[-1], ReluConvOut)  # type: ignore[union-attr]
    z = torch.randn(1, 16, 1, 6, 8)
    with _Writes() as ops:
        out = fused.decode(z)
    torch.testing.assert_close(out, ref.decode(z), rtol=1e-5, atol=1e-5)
    assert not [n for n, size in ops.sizes if n.startswith("relu") and size == 4 * 16 * 48 * 64], ops.sizes
    assert not isinstance(ChunkCodec(vae, fusion="cudnn")._dec.steps[-1], ReluConvOut)  # type: ignore[union-attr]
    FusedStream.FUSED_OUTPUT_CONV = False
    try:
        assert not isinstance(ChunkCodec(vae, channels_last=True, fusion="cudnn")._dec.steps[-1], ReluConvOut)  # type: ignore[union-attr]
    finally:
        FusedStream.FUSED_OUTPUT_CONV = True


def _full_width_writes(ops: _Writes) -> list[str]:
    """Ops that wrote a full chunk of full-resolution 16-channel activations, in-place ones left out."""
    return [n for n, size in ops.sizes if size >= 4 * 48 * 64 * 16 and not n.endswith("_")]


_VIEWS = {"view", "slice", "select", "unsqueeze", "permute", "_unsafe_view", "as_strided", "expand", "empty_like"}


class _Writes(TorchDispatchMode):
    """Each op's name and the elements it writes (views and allocations write nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.sizes: list[tuple[str, int]] = []  # (op, elements written) of each writing op
        self.written = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **kwargs or {})
        name = str(func.overloadpacket.__name__)
        self.names.append(name)
        if name not in _VIEWS and isinstance(out, torch.Tensor):
            self.written += out.numel()
            self.sizes.append((name, out.numel()))
        return out


def test_fused_codec_writes_no_concatenation_and_less_memory() -> None:
    vae = TAEHV(True, encoder_width=8, decoder_widths=(16, 8, 8, 8)).eval()
    frames = torch.rand(4, 3, 32, 48)
    seen = {}
    for fusion in ("none", "torch"):
        codec = ChunkCodec(vae, fusion=fusion)
        codec.decode(codec.encode(frames))  # buffers made
        with _Writes() as ops:
            codec.decode(codec.encode(frames))
        seen[fusion] = ops
    ref, fused = seen["none"], seen["torch"]
    assert "cat" in ref.names and "cat" not in fused.names
    assert fused.names.count("convolution") == ref.names.count("convolution") - 6  # 3 TPools, 3 TGrows folded
    # 692544 vs 814656 elements here: the TPool and TGrow rewrites; the MemBlock rewrite trades the
    # concatenation for the shifted add, the same bytes (its gain is one read of x instead of two)
    assert fused.written < 0.9 * ref.written, (fused.written, ref.written)


def test_building_a_fused_codec_leaves_the_checkpoint_names_and_values_alone() -> None:
    vae = TAEHV(True, encoder_width=8, decoder_widths=(16, 8, 8, 8))
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    ChunkCodec(vae, fusion="torch")
    after = vae.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    vae.load_state_dict(before)  # strict: no derived tensor was registered


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ValueError, match="fusion must be one of"):
        ChunkCodec(TAEHV(True, encoder_width=8, decoder_widths=(16, 8, 8, 8)), fusion="nope")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (bf16 cuDNN convolutions, compiled Triton)")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("fusion", ["torch", "triton", "cudnn"])
def test_fused_codec_matches_on_the_gpu_in_bf16(fusion: str, channels_last: bool) -> None:
    """Against the old codec in fp32: within the old codec's own bf16 error (the bench's rule)."""
    from streamer.bench.vae_speed import error_against, within_rounding

    torch.manual_seed(3)
    vae = TAEHV(True).eval().requires_grad_(False)
    for p in vae.parameters():
        nn.init.normal_(p, std=1 / p[0].numel() ** 0.5)
    gold = ChunkCodec(vae.to("cuda"), fusion="none")
    vae16 = TAEHV(True).eval().requires_grad_(False)
    vae16.load_state_dict(vae.state_dict())
    vae16 = vae16.to("cuda", torch.bfloat16)
    chunks = [torch.rand(4, 3, 96, 160, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    old = error_against(gold, ChunkCodec(vae16, channels_last=channels_last, fusion="none"), chunks)
    new = error_against(gold, ChunkCodec(vae16, channels_last=channels_last, fusion=fusion), chunks)
    assert within_rounding(new, old), (new, old)
