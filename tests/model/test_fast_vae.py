"""streamer/model/fast/vae.py: chunk-at-once TAEHV with static memory == the frame-by-frame streams."""

from __future__ import annotations

import pytest
import torch

from streamer.model.fast.vae import ChunkCodec
from streamer.model.vae import TAEHV


@pytest.mark.parametrize("fusion", ["none", "torch"])
@pytest.mark.parametrize("temporal,channels_last", [(True, False), (False, False), (True, True)])
def test_chunk_codec_matches_streaming_encoder_and_decoder(temporal: bool, channels_last: bool, fusion: str) -> None:
    torch.manual_seed(0)
    vae = TAEHV(temporal, encoder_width=8, decoder_widths=(16, 8, 8, 8)).eval()
    enc, dec = vae.stream_encoder(), vae.stream_decoder()
    codec = ChunkCodec(vae, channels_last=channels_last, fusion=fusion)
    fpl = vae.frames_per_latent
    addresses = None
    for _chunk in range(4):
        frames = torch.rand(fpl, 3, 32, 48)
        z_ref = None
        for i in range(fpl):
            z_ref = enc.encode_frame(frames[i : i + 1])
        z = codec.encode(frames)
        assert z_ref is not None and z.shape == (1, 16, 1, 4, 6)
        torch.testing.assert_close(z[:, :, 0], z_ref, rtol=1e-5, atol=1e-5)
        out_ref = dec.decode_latent(z_ref)[0]
        out = codec.decode(z)
        # the streaming decoder trims the stream's first frames; the chunk codec leaves that to its caller
        torch.testing.assert_close(out[out.shape[0] - out_ref.shape[0] :], out_ref, rtol=1e-5, atol=1e-5)
        ptrs = [m.data_ptr() for m in codec._enc.memory.values()] + [m.data_ptr() for m in codec._dec.memory.values()]
        assert addresses is None or ptrs == addresses, "memory buffers must keep their addresses (graph replay)"
        addresses = ptrs
    codec.reset()
    assert all(float(m.abs().sum()) == 0 for m in codec._enc.memory.values())


def test_chunk_codec_rejects_partial_chunks() -> None:
    codec = ChunkCodec(TAEHV(True, encoder_width=8, decoder_widths=(16, 8, 8, 8)))
    with pytest.raises(ValueError, match="4 frames"):
        codec.encode(torch.rand(3, 3, 32, 32))
