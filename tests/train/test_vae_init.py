"""The tiny autoencoder's colour-carrier start: colour goes through at step 0, the latent holds it."""

from __future__ import annotations

import pytest
import torch

from streamer.model.vae import TAEHV, tiny_taehv
from streamer.train.config import TrainConfig
from streamer.train.trainer import build_vae
from streamer.train.vae_init import colour_carrier_init


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).square().mean()))


def _scene() -> torch.Tensor:
    """[1, 1, 3, 64, 64]: smooth colour ramps and a saturated square, like a test pattern."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    img = torch.stack([xx, yy, 1 - xx])
    img[:, 16:40, 20:44] = torch.tensor([1.0, 0.1, 0.8])[:, None, None]
    return img[None, None]


@torch.no_grad()
def test_constant_colour_reaches_latent_and_output() -> None:
    torch.manual_seed(0)
    vae = colour_carrier_init(tiny_taehv())
    rgb = torch.tensor([0.2, 0.6, 0.9])
    x = rgb[None, None, :, None, None].expand(1, 1, 3, 64, 64).clone()
    z = vae.encode_video(x)
    centre = z[0, 0, :3, 2:-2, 2:-2]  # away from the zero padding at the border
    torch.testing.assert_close(centre, (2 * rgb - 1)[:, None, None].expand_as(centre), atol=1e-5, rtol=0)
    y = vae.decode_video(z)[0, 0, :, 16:-16, 16:-16]
    assert (y - rgb[:, None, None]).abs().max() < 0.02  # only the decoder's soft clamp bends it


@torch.no_grad()
def test_colour_goes_through_at_step_zero_unlike_a_random_start() -> None:
    x = _scene()
    torch.manual_seed(1)
    plain = tiny_taehv()
    torch.manual_seed(1)
    carried = colour_carrier_init(tiny_taehv())
    p_plain = _psnr(plain.decode_video(plain.encode_video(x)), x)
    p_carried = _psnr(carried.decode_video(carried.encode_video(x)), x)
    assert p_carried > 12 and p_carried > p_plain + 8, (p_carried, p_plain)  # 13.5 vs 4.3 dB (8x8 latent)


def test_the_vae_stage_starts_from_carriers_and_temporal_models_are_refused() -> None:
    vae = build_vae(TrainConfig(stage="vae", preset="tiny"))
    assert torch.equal(vae.encoder[-1].bias[:3], torch.full((3,), -1.0))  # latent = 2 rgb - 1
    with pytest.raises(ValueError, match="per-frame"):
        colour_carrier_init(TAEHV(temporal=True))
