"""The causal Wan2.1 DiT: real parameter names/shapes, math details, and cached == full-sequence forward."""

from __future__ import annotations

import re

import pytest
import torch

from streamer.model.cache import KVCache
from streamer.model.config import preset
from streamer.model.dit import DiT, build, timestep_embedding
from streamer.model.rope import apply_rope, band_dims, rope_tables, rotate_time_band

F64 = torch.float64


def _expected_wan_keys(layers: int) -> set[str]:
    keys = {
        "patch_embedding.weight", "patch_embedding.bias",
        "text_embedding.0.weight", "text_embedding.0.bias", "text_embedding.2.weight", "text_embedding.2.bias",
        "time_embedding.0.weight", "time_embedding.0.bias", "time_embedding.2.weight", "time_embedding.2.bias",
        "time_projection.1.weight", "time_projection.1.bias",
        "head.modulation", "head.head.weight", "head.head.bias",
    }  # fmt: skip
    for n in range(layers):
        p = f"blocks.{n}."
        keys |= {p + "modulation", p + "norm3.weight", p + "norm3.bias"}
        for attn in ("self_attn", "cross_attn"):
            keys |= {f"{p}{attn}.{x}.{w}" for x in "qkvo" for w in ("weight", "bias")}
            keys |= {f"{p}{attn}.norm_q.weight", f"{p}{attn}.norm_k.weight"}
        keys |= {f"{p}ffn.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    return keys


def test_wan_1_3b_names_and_shapes_on_meta() -> None:
    with torch.device("meta"):
        model = DiT(preset("wan-1.3b"))
    sd = model.state_dict()
    assert set(sd) == _expected_wan_keys(30)
    assert len(sd) == 825
    assert sum(v.numel() for v in sd.values()) == 1_418_996_800
    shapes = {
        "patch_embedding.weight": (1536, 16, 1, 2, 2),
        "text_embedding.0.weight": (1536, 4096),
        "time_embedding.0.weight": (1536, 256),
        "time_projection.1.weight": (9216, 1536),
        "time_projection.1.bias": (9216,),
        "blocks.7.modulation": (1, 6, 1536),
        "blocks.7.self_attn.q.weight": (1536, 1536),
        "blocks.7.self_attn.norm_q.weight": (1536,),
        "blocks.7.norm3.bias": (1536,),
        "blocks.7.cross_attn.o.bias": (1536,),
        "blocks.7.ffn.0.weight": (8960, 1536),
        "blocks.7.ffn.2.weight": (1536, 8960),
        "head.modulation": (1, 2, 1536),
        "head.head.weight": (64, 1536),
        "head.head.bias": (64,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key


def test_wan_14b_parameter_count() -> None:
    with torch.device("meta"):
        model = DiT(preset("wan-14b"))
    sd = model.state_dict()
    assert set(sd) == _expected_wan_keys(40)
    assert round(sum(v.numel() for v in sd.values()) / 1e9, 2) == 14.29


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="wan-1.3b"):
        preset("wan-2b")


def test_rope_band_split_and_rewind_identity() -> None:
    assert band_dims(128) == (44, 42, 42)
    assert band_dims(64) == (24, 20, 20)
    torch.manual_seed(0)
    x = torch.randn(2, 3 * 2 * 2, 4, 64, dtype=F64)
    p = torch.tensor([5, 6, 7])
    cos, sin = rope_tables(p, 2, 2, 64, dtype=F64)
    moved = rotate_time_band(apply_rope(x, cos, sin), torch.tensor(-4), 64)
    cos2, sin2 = rope_tables(p - 4, 2, 2, 64, dtype=F64)
    torch.testing.assert_close(moved, apply_rope(x, cos2, sin2), rtol=0, atol=1e-12)
    # rotation keeps norms: positions change phase only
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=0)


def test_timestep_embedding_is_cos_then_sin_on_the_1000_scale() -> None:
    e = timestep_embedding(torch.tensor([0.0, 500.0]), 256)
    assert e.dtype == F64 and e.shape == (2, 256)
    assert torch.equal(e[0, :128], torch.ones(128, dtype=F64)) and torch.equal(e[0, 128:], torch.zeros(128, dtype=F64))
    assert e[1, 0].item() == pytest.approx(torch.cos(torch.tensor(500.0, dtype=F64)).item())
    assert e[1, 128].item() == pytest.approx(torch.sin(torch.tensor(500.0, dtype=F64)).item())


def test_unpatchify_channel_order_is_pt_ph_pw_c() -> None:
    model = build("tiny", dtype=F64)
    with torch.no_grad():
        model.head.head.weight.zero_()
        model.head.head.bias.copy_(torch.arange(64, dtype=F64))
        out = model(
            torch.randn(1, 16, 2, 4, 6, dtype=F64), torch.full((1, 2), 500.0), torch.randn(1, 5, 384, dtype=F64)
        )
    assert out.shape == (1, 16, 2, 4, 6)
    for c in (0, 5, 15):
        for ph in (0, 1):
            for pw in (0, 1):
                want = (ph * 2 + pw) * 16 + c
                assert torch.all(out[0, c, :, ph::2, pw::2] == want), (c, ph, pw)


@pytest.fixture(scope="module")
def tiny64() -> DiT:
    torch.manual_seed(1)
    return build("tiny", dtype=F64)


def _inputs(batch: int, frames: int, h: int = 4, w: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 16, frames, h, w, dtype=F64, generator=g)
    t = torch.rand(batch, frames, dtype=F64, generator=g) * 1000
    text = torch.randn(batch, 7, 384, dtype=F64, generator=g)
    return x, t, text


@torch.no_grad()
def test_block_causal_ignores_the_future_and_bidirectional_does_not(tiny64: DiT) -> None:
    x, t, text = _inputs(1, 4)
    x2 = x.clone()
    x2[:, :, 2:] += 1.0  # change chunk 1 only
    causal = tiny64(x, t, text, chunk_frames=2)
    causal2 = tiny64(x2, t, text, chunk_frames=2)
    torch.testing.assert_close(causal[:, :, :2], causal2[:, :, :2], rtol=0, atol=1e-12)
    assert (causal[:, :, 2:] - causal2[:, :, 2:]).abs().max() > 1e-3
    bidi, bidi2 = tiny64(x, t, text), tiny64(x2, t, text)
    assert (bidi[:, :, :2] - bidi2[:, :, :2]).abs().max() > 1e-3


@pytest.mark.parametrize("chunk", [1, 3])
@torch.no_grad()
def test_cached_streaming_equals_full_block_causal_forward(tiny64: DiT, chunk: int) -> None:
    frames = 6
    x, t, text = _inputs(2, frames)
    ctx = tiny64.cross_kv(text)
    full = tiny64(x, t, ctx, chunk_frames=chunk)
    cache = KVCache(tiny64.cfg, batch=2, tokens_per_frame=6, window=frames + chunk, chunk_frames=chunk, dtype=F64)
    outs = []
    for s in range(0, frames, chunk):
        # two denoising passes on the same chunk: the first one's staged K/V must not leak into history
        tiny64(x[:, :, s : s + chunk] * 0.5, t[:, s : s + chunk], ctx, cache)
        outs.append(tiny64(x[:, :, s : s + chunk], t[:, s : s + chunk], ctx, cache))
        cache.commit(chunk)
    torch.testing.assert_close(torch.cat(outs, dim=2), full, rtol=0, atol=1e-11)


@torch.no_grad()
def test_raw_text_and_precomputed_cross_kv_agree(tiny64: DiT) -> None:
    x, t, text = _inputs(1, 2)
    out = torch.empty(0)
    kv = tiny64.cross_kv(text)
    ptr = kv.k.data_ptr()
    tiny64.cross_kv(text * 2, out=kv)  # a new prompt rewrites the same buffers
    assert kv.k.data_ptr() == ptr
    out = tiny64(x, t, kv)
    torch.testing.assert_close(out, tiny64(x, t, text * 2), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="text_len"):
        tiny64.cross_kv(torch.randn(1, 65, 384, dtype=F64))
    with pytest.raises(ValueError, match="text_dim"):
        tiny64.cross_kv(torch.randn(1, 5, 383, dtype=F64))


@torch.no_grad()
def test_bf16_inference_keeps_modulation_fp32_and_tracks_fp32() -> None:
    torch.manual_seed(3)
    ref = build("tiny", dtype=torch.float32)
    low = build("tiny", dtype=torch.float32)
    low.load_state_dict(ref.state_dict())
    low.to_inference_dtype(torch.bfloat16)
    assert low.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    for name, p in low.named_parameters():
        if re.search(r"modulation|time_embedding|time_projection|^head\.", name):
            assert p.dtype == torch.float32, name
    ref_sd = ref.state_dict()
    for name, p in low.named_parameters():
        if p.dtype == torch.float32:  # kept weights are the fp32 values, never rounded through bf16
            assert torch.equal(p, ref_sd[name]), name
    x, t, text = (a.float() for a in _inputs(1, 2))
    want, got = ref(x, t, text), low(x, t, text)
    assert got.dtype == torch.float32
    assert ((got - want).norm() / want.norm()).item() < 0.05


def test_bad_shapes_are_clear_errors(tiny64: DiT) -> None:
    x, t, text = _inputs(1, 2)
    with pytest.raises(ValueError, match="patch"):
        tiny64(x[..., :5], t, text)
    with pytest.raises(ValueError, match=r"t must be \[B, F\]"):
        tiny64(x, t[:, :1], text)
