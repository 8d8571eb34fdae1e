"""TAEHV: taew2_1 layout, parameter counts, streaming == whole clip, loading and its errors."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from streamer.model.vae import TAEHV, VAELoadError, infer_config, load_taehv, read_state_dict, tiny_taehv

# model.md §4: example shapes of taew2_1.
EXAMPLE_SHAPES = {
    "encoder.0.weight": (64, 3, 3, 3),
    "encoder.2.conv.weight": (64, 128, 1, 1),
    "encoder.4.conv.0.weight": (64, 128, 3, 3),
    "encoder.17.weight": (16, 64, 3, 3),
    "decoder.1.weight": (256, 16, 3, 3),
    "decoder.3.conv.0.weight": (256, 512, 3, 3),
    "decoder.7.conv.weight": (256, 256, 1, 1),
    "decoder.13.conv.weight": (256, 128, 1, 1),
    "decoder.19.conv.weight": (128, 64, 1, 1),
    "decoder.22.weight": (3, 64, 3, 3),
}


def _small(temporal: bool) -> TAEHV:
    torch.manual_seed(0)
    return TAEHV(temporal, encoder_width=8, decoder_widths=(16, 8, 8, 8)).eval()


def test_taew2_1_layout_and_parameter_counts() -> None:
    model = TAEHV(temporal=True)
    sd = model.state_dict()
    for key, shape in EXAMPLE_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    # Layer indices from the list in model.md §4 (odd ones in between are activations).
    mem = {k.split(".conv.")[0] for k in sd if ".conv.0." in k}
    assert mem == {f"encoder.{i}" for i in (4, 5, 6, 9, 10, 11, 14, 15, 16)} | {
        f"decoder.{i}" for i in (3, 4, 5, 9, 10, 11, 15, 16, 17)
    }
    pools = {k for k in sd if k.endswith(".conv.weight") and sd[k].shape[2:] == (1, 1)}
    assert pools == {f"encoder.{i}.conv.weight" for i in (2, 7, 12)} | {f"decoder.{i}.conv.weight" for i in (7, 13, 19)}
    assert "decoder.8.bias" not in sd and "encoder.3.bias" not in sd and "decoder.1.bias" in sd
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    assert abs(enc - 1.47e6) < 0.01e6 and abs(dec - 9.84e6) < 0.01e6, (enc, dec)


@torch.no_grad()
def test_whole_clip_shapes_and_trim() -> None:
    model = _small(temporal=True)
    x = torch.rand(2, 8, 3, 32, 48)
    z = model.encode_video(x)
    assert z.shape == (2, 2, 16, 4, 6)
    y = model.decode_video(z)
    assert y.shape == (2, 4 * 2 - 3, 3, 32, 48)  # Wan's 1 + 4k layout
    assert 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match="multiple of 4"):
        model.encode_video(x[:, :6])


@torch.no_grad()
@pytest.mark.parametrize("temporal", [True, False])
def test_streaming_equals_whole_clip(temporal: bool) -> None:
    model = _small(temporal)
    x = torch.rand(1, 8, 3, 32, 32)
    enc, dec = model.stream_encoder(), model.stream_decoder()
    latents, frames = [], []
    for t in range(8):
        z = enc.encode_frame(x[:, t])
        if z is None:
            assert temporal and t % 4 != 3
            continue
        latents.append(z)
        frames.append(dec.decode_latent(z))
    assert len(latents) == (2 if temporal else 8)
    torch.testing.assert_close(torch.stack(latents, 1), model.encode_video(x), rtol=1e-5, atol=1e-5)
    if temporal:
        assert [f.shape[1] for f in frames] == [1, 4]
    torch.testing.assert_close(torch.cat(frames, 1), model.decode_video(torch.stack(latents, 1)), rtol=1e-5, atol=1e-5)
    # reset() starts a new stream: the same input gives the same first latent again
    enc.reset()
    again = [enc.encode_frame(x[:, t]) for t in range(4 if temporal else 1)][-1]
    assert again is not None
    torch.testing.assert_close(again, latents[0])


def test_memory_makes_it_causal_not_per_frame() -> None:
    """Changing an earlier frame changes later latents (MemBlocks carry time), never earlier ones."""
    model = _small(temporal=False)
    x = torch.rand(1, 3, 3, 16, 16)
    x2 = x.clone()
    x2[:, 1] = torch.rand(3, 16, 16)
    with torch.no_grad():
        a, b = model.encode_video(x), model.encode_video(x2)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 2], b[:, 2])


def test_tiny_variant_is_per_frame_and_small() -> None:
    model = tiny_taehv()
    assert model.frames_per_latent == 1 and model.frames_to_trim == 0
    assert sum(p.numel() for p in model.parameters()) < 1e6


def test_load_pth_and_safetensors_roundtrip(tmp_path) -> None:
    model = _small(temporal=True)
    sd = model.state_dict()
    torch.save(sd, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    x = torch.rand(1, 4, 3, 16, 16)
    for name in ("w.pth", "w.safetensors"):
        loaded = load_taehv(tmp_path / name)
        assert loaded.temporal and loaded.decoder[1].out_channels == 16
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode_video(x), model.encode_video(x))


def test_temporal_weights_adapt_to_per_frame(tmp_path) -> None:
    torch.save(_small(temporal=True).state_dict(), tmp_path / "w.pth")
    model = load_taehv(tmp_path / "w.pth", temporal=False)
    assert not model.temporal
    with torch.no_grad():
        assert model.decode_video(model.encode_video(torch.rand(1, 2, 3, 16, 16))).shape == (1, 2, 3, 16, 16)
    torch.save(_small(temporal=False).state_dict(), tmp_path / "p.pth")
    with pytest.raises(VAELoadError, match="per-frame"):
        load_taehv(tmp_path / "p.pth", temporal=True)


def test_load_errors_are_clear(tmp_path) -> None:
    with pytest.raises(VAELoadError, match="not found"):
        load_taehv(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(VAELoadError, match="cannot read"):
        load_taehv(tmp_path / "junk.pth")
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(VAELoadError, match="not a TAEHV"):
        load_taehv(tmp_path / "other.pth")
    sd = _small(temporal=True).state_dict()
    sd["decoder.3.conv.2.weight"] = torch.zeros(16, 16, 1, 1)
    del sd["decoder.22.bias"]
    sd["decoder.99.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(VAELoadError) as err:
        load_taehv(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "missing decoder.22.bias" in msg and "unexpected decoder.99.weight" in msg
    assert "decoder.3.conv.2.weight: file has (16, 16, 1, 1), model needs (16, 16, 3, 3)" in msg
    torch.save({"net": object()}, tmp_path / "pickle.pth")  # weights_only refuses arbitrary objects
    with pytest.raises(VAELoadError, match="cannot read"):
        load_taehv(tmp_path / "pickle.pth")


def _full_wan_vae(z_dim: int = 16, diffusers: bool = False) -> dict[str, torch.Tensor]:
    """A narrow stand-in for Wan2.1_VAE.pth with its real key names: 3D convolutions, encoder/decoder and the
    latent-side 1x1x1 convolutions (`conv1` / `conv2`; Diffusers: `quant_conv` / `post_quant_conv`)."""
    if diffusers:
        return {
            "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3, 3),
            "quant_conv.weight": torch.zeros(2 * z_dim, 2 * z_dim, 1, 1, 1),
            "post_quant_conv.weight": torch.zeros(z_dim, z_dim, 1, 1, 1),
            "decoder.conv_in.weight": torch.zeros(8, z_dim, 3, 3, 3),
        }
    return {
        "encoder.conv1.weight": torch.zeros(8, 3, 3, 3, 3), "encoder.conv1.bias": torch.zeros(8),
        "encoder.downsamples.0.residual.0.gamma": torch.ones(8, 1, 1, 1),
        "encoder.head.2.weight": torch.zeros(2 * z_dim, 8, 3, 3, 3),
        "conv1.weight": torch.zeros(2 * z_dim, 2 * z_dim, 1, 1, 1), "conv1.bias": torch.zeros(2 * z_dim),
        "conv2.weight": torch.zeros(z_dim, z_dim, 1, 1, 1), "conv2.bias": torch.zeros(z_dim),
        "decoder.conv1.weight": torch.zeros(8, z_dim, 3, 3, 3),
        "decoder.upsamples.0.residual.0.gamma": torch.ones(8, 1, 1, 1),
    }  # fmt: skip


_USE_INSTEAD = r"taew2_1\.pth \(or safetensors/taew2_1\.safetensors\); `streamer models pull taehv`"


@pytest.mark.parametrize(
    ("name", "sd", "what"),
    [
        ("Wan2.1_VAE.pth", _full_wan_vae(), r"this is the full Wan 2\.1 VAE \(Wan2\.1_VAE\.pth\) in Wan's own names"),
        ("renamed.pth", _full_wan_vae(), r"the full Wan 2\.1 VAE"),  # the keys decide, not the name
        ("Wan2.2_VAE.pth", _full_wan_vae(48), r"the full Wan 2\.2 VAE"),
        ("diffusion_pytorch_model.safetensors", _full_wan_vae(diffusers=True), r"Wan 2\.1 VAE .* AutoencoderKLWan"),
    ],
)
def test_full_wan_vae_is_refused_naming_taehv(tmp_path, name: str, sd: dict[str, torch.Tensor], what: str) -> None:
    path = tmp_path / name
    save_file(sd, str(path)) if name.endswith(".safetensors") else torch.save(sd, path)
    with pytest.raises(VAELoadError, match=rf"{re.escape(str(path))}: .*{what}.*not TAEHV.*{_USE_INSTEAD}"):
        load_taehv(path)
    with pytest.raises(VAELoadError, match="not TAEHV"):  # the doctor's check reads it the same way
        infer_config(read_state_dict(path), str(path))


def _other_latent_space(latent: int, patch: int) -> dict[str, torch.Tensor]:
    sd = TAEHV(True, encoder_width=8, decoder_widths=(16, 8, 8, 8), latent_channels=latent).state_dict()
    sd["encoder.0.weight"] = torch.zeros(8, 3 * patch * patch, 3, 3)
    sd["decoder.22.weight"] = torch.zeros(3 * patch * patch, 8, 3, 3)
    return sd


@pytest.mark.parametrize(
    ("name", "sd", "what"),
    [
        (
            "taew2_2.pth",
            _other_latent_space(48, 2),
            r"TAEHV weights for Wan 2\.2 5B \(taew2_2\): 48 latent channels on 2x2",
        ),
        ("x.safetensors", _other_latent_space(48, 2), r"Wan 2\.2 5B"),  # the shapes decide, not the name
        ("taehv1_5.pth", _other_latent_space(32, 2), r"HunyuanVideo 1\.5 \(taehv1_5\): 32 latent channels"),
        # 16 latent channels like taew2_1: only the file name (madebyollin/taehv's naming) tells them apart
        ("taecvx.pth", _small(True).state_dict(), r"by its name, TAEHV weights for CogVideoX"),
        ("taehv.safetensors", _small(True).state_dict(), r"by its name, TAEHV weights for HunyuanVideo 1,"),
    ],
)
def test_taehv_of_other_latent_spaces_is_refused(tmp_path, name: str, sd: dict[str, torch.Tensor], what: str) -> None:
    path = tmp_path / name
    save_file(sd, str(path)) if name.endswith(".safetensors") else torch.save(sd, path)
    with pytest.raises(VAELoadError, match=rf"{re.escape(str(path))}: .*{what}.*{_USE_INSTEAD}"):
        load_taehv(path)


@pytest.mark.parametrize("name", ["taew2_1.pth", "lighttaew2_1.safetensors", "vae.safetensors"])
def test_wan_2_1_taehv_names_still_load(tmp_path, name: str) -> None:
    sd = _small(True).state_dict()
    path = tmp_path / name
    save_file(sd, str(path)) if name.endswith(".safetensors") else torch.save(sd, path)
    assert load_taehv(path).temporal
