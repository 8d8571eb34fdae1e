"""TAEHV: the tiny video autoencoder in Wan's latent space (taew2_1 key names), run as a stream.

Facts (model.md §4): pixels in [0, 1], 16 latent channels, 8x space; with temporal scaling on, 4
video frames per latent (two TPool(64, 2) in the encoder, two TGrow(., 2) in the decoder) and the
first 3 decoded frames of a stream trimmed so L latents give 1 + 4(L-1) frames like Wan's VAE.
Every MemBlock sees its own input at the previous time step (zeros at t = 0), which is what makes
the model causal and lets it run one frame / one latent at a time with per-layer memory; the
streaming path and the whole-clip path below compute the same function (tests check it).

`temporal=False` turns every TPool/TGrow stride to 1: a per-frame autoencoder of the same family
(one latent per frame, no 4-frame latency floor) used by the `tiny` preset, usually with narrower
layers (`TINY_WIDTHS`) so it runs on a CPU. Its weights are not interchangeable with taew2_1.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENCODER_WIDTH = 64
DECODER_WIDTHS = (256, 128, 64, 64)
# The tiny preset's autoencoder: the same layer list at an eighth of the width (≈60x fewer FLOPs).
# Measured on 2 CPU cores at 256x256 (channels_last): 11 ms encode + 17 ms decode per frame, against
# 27 + 40 ms at a quarter width - the difference decides whether the tiny preset reaches 10 fps (W4).
TINY_ENCODER_WIDTH = 8
TINY_DECODER_WIDTHS = (32, 16, 8, 8)


class VAELoadError(ValueError):
    """A TAEHV weights file that cannot be used: missing, unreadable, wrong keys or shapes."""


def _conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the latent to about ±3 (tanh(x/3)·3) before decoding."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual block over [x_t, x_{t-1}]: the only place information crosses time steps."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(2 * n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: Tensor, past: Tensor) -> Tensor:
        """x, past: [N, C, H, W] (this frame and the previous frame's input) -> [N, n_out, H, W]."""
        return F.relu(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TPool(nn.Module):
    """Merges `stride` consecutive frames (stacked on channels, earliest first) with a 1x1 conv."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n * stride, n, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [N*T, C, H, W] with T a multiple of stride -> [N*T/stride, C, H, W]."""
        nt, c, h, w = x.shape
        return self.conv(x.reshape(nt // self.stride, self.stride * c, h, w))


class TGrow(nn.Module):
    """Splits each frame into `stride` frames: a 1x1 conv to n·stride channels, earliest first."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [N*T, C, H, W] -> [N*T*stride, C, H, W]."""
        nt, c, h, w = x.shape
        return self.conv(x).reshape(nt * self.stride, c, h, w)


def build_encoder(temporal: bool, width: int = ENCODER_WIDTH, latent_channels: int = 16) -> nn.Sequential:
    """Indices match taew2_1: 0 conv, 2/7/12 TPool, 3/8/13 strided conv, 4-6/9-11/14-16 MemBlock, 17 conv."""
    s = 2 if temporal else 1
    n = width

    def stage(stride: int) -> list[nn.Module]:
        return [TPool(n, stride), _conv(n, n, stride=2, bias=False), MemBlock(n, n), MemBlock(n, n), MemBlock(n, n)]

    return nn.Sequential(_conv(3, n), nn.ReLU(), *stage(s), *stage(s), *stage(1), _conv(n, latent_channels))


def build_decoder(
    temporal: bool, widths: tuple[int, int, int, int] = DECODER_WIDTHS, latent_channels: int = 16
) -> nn.Sequential:
    """Indices match taew2_1: 0 Clamp, 1 conv, 3-5/9-11/15-17 MemBlock, 6/12/18 Upsample, 7/13/19 TGrow, 22 conv."""
    s = 2 if temporal else 1
    a, b, c, d = widths

    def stage(n_in: int, n_out: int, stride: int) -> list[nn.Module]:
        return [
            MemBlock(n_in, n_in), MemBlock(n_in, n_in), MemBlock(n_in, n_in),
            nn.Upsample(scale_factor=2), TGrow(n_in, stride), _conv(n_in, n_out, bias=False),
        ]  # fmt: skip

    return nn.Sequential(
        Clamp(), _conv(latent_channels, a), nn.ReLU(),
        *stage(a, b, 1), *stage(b, c, s), *stage(c, d, s),
        nn.ReLU(), _conv(d, 3),
    )  # fmt: skip


def _run_clip(layers: nn.Sequential, x: Tensor) -> Tensor:
    """Whole-clip pass. x: [N, T, C, H, W] -> [N, T', C', H', W'] (T' = T / pools · grows)."""
    n, t = x.shape[:2]
    h = x.reshape(n * t, *x.shape[2:])
    for layer in layers:
        if isinstance(layer, MemBlock):
            frames = h.reshape(n, t, *h.shape[1:])
            past = torch.cat([torch.zeros_like(frames[:, :1]), frames[:, :-1]], 1)
            h = layer(h, past.reshape(h.shape))
        elif isinstance(layer, TPool):
            if t % layer.stride:
                raise ValueError(f"clip length {t} at this layer is not a multiple of {layer.stride}")
            h, t = layer(h), t // layer.stride
        elif isinstance(layer, TGrow):
            h, t = layer(h), t * layer.stride
        else:
            h = layer(h)
    return h.reshape(n, t, *h.shape[1:])


class _LayerStream:
    """Runs a layer list frame by frame with per-layer memory (MemBlock: last input; TPool: pending frames)."""

    def __init__(self, layers: nn.Sequential) -> None:
        self.layers = layers
        self.reset()

    def reset(self) -> None:
        self.memory: dict[int, Tensor] = {}
        self.pending: dict[int, list[Tensor]] = {}

    def push(self, x: Tensor) -> list[Tensor]:
        """One frame [N, C, H, W] in; the frames that leave the last layer (possibly none) out."""
        frames = [x]
        for i, layer in enumerate(self.layers):
            out: list[Tensor] = []
            for f in frames:
                if isinstance(layer, MemBlock):
                    past = self.memory.get(i)
                    out.append(layer(f, torch.zeros_like(f) if past is None else past))
                    self.memory[i] = f
                elif isinstance(layer, TPool):
                    waiting = self.pending.setdefault(i, [])
                    waiting.append(f)
                    if len(waiting) == layer.stride:
                        out.append(layer.conv(torch.cat(waiting, 1)))
                        waiting.clear()
                elif isinstance(layer, TGrow):
                    out.extend(layer.conv(f).chunk(layer.stride, dim=1))
                else:
                    out.append(layer(f))
            frames = out
            if not frames:
                return []
        return frames


class StreamingEncoder:
    """`encode_frame(frame [N,3,H,W] in [0,1]) -> latent [N,16,H/8,W/8] | None`: one latent every
    `frames_per_latent` frames (4 temporal, 1 per-frame)."""

    def __init__(self, model: TAEHV) -> None:
        self.model = model
        self._stream = _LayerStream(model.encoder)

    def reset(self) -> None:
        self._stream.reset()

    @torch.no_grad()
    def encode_frame(self, frame: Tensor) -> Tensor | None:
        out = self._stream.push(frame)
        return out[0] if out else None


class StreamingDecoder:
    """`decode_latent(latent [N,16,h,w]) -> frames [N,T,3,8h,8w]` in [0,1]: T = 4 (temporal; 1 for the
    very first latent of a stream, whose first 3 frames are trimmed) or 1 (per-frame)."""

    def __init__(self, model: TAEHV) -> None:
        self.model = model
        self._stream = _LayerStream(model.decoder)
        self._to_trim = model.frames_to_trim

    def reset(self) -> None:
        self._stream.reset()
        self._to_trim = self.model.frames_to_trim

    @torch.no_grad()
    def decode_latent(self, latent: Tensor) -> Tensor:
        frames = self._stream.push(latent)
        frames, self._to_trim = frames[self._to_trim :], max(0, self._to_trim - len(frames))
        return torch.stack(frames, 1).clamp_(0, 1)


class TAEHV(nn.Module):
    """Tiny video autoencoder with taew2_1's parameter names (encoder.N…, decoder.N…).

    Tensors are N,T,C,H,W; pixels in [0, 1]; latents are not rescaled (Wan latent space as is).
    """

    def __init__(
        self,
        temporal: bool = True,
        *,
        encoder_width: int = ENCODER_WIDTH,
        decoder_widths: tuple[int, int, int, int] = DECODER_WIDTHS,
        latent_channels: int = 16,
    ) -> None:
        super().__init__()
        self.temporal = temporal
        self.latent_channels = latent_channels
        self.encoder = build_encoder(temporal, encoder_width, latent_channels)
        self.decoder = build_decoder(temporal, decoder_widths, latent_channels)
        self.frames_per_latent = 4 if temporal else 1
        self.frames_to_trim = self.frames_per_latent - 1

    def encode_video(self, x: Tensor) -> Tensor:
        """x: [N, T, 3, H, W] in [0,1], T a multiple of frames_per_latent -> [N, T/fpl, 16, H/8, W/8]."""
        if x.shape[1] % self.frames_per_latent:
            raise ValueError(f"encode_video needs a multiple of {self.frames_per_latent} frames, got {x.shape[1]}")
        return _run_clip(self.encoder, x)

    def decode_video(self, z: Tensor) -> Tensor:
        """z: [N, L, 16, h, w] -> [N, fpl·L - trim, 3, 8h, 8w] in [0,1] (the stream's first frames trimmed)."""
        return self.decode_unclamped(z).clamp(0, 1)

    def decode_unclamped(self, z: Tensor) -> Tensor:
        """decode_video without the final clamp to [0, 1]: what training differentiates (a clamp has no
        gradient outside the range)."""
        return _run_clip(self.decoder, z)[:, self.frames_to_trim :]

    def use_layout(self, memory_format: torch.memory_format) -> TAEHV:
        """Store the convolution weights in `memory_format` (NHWC: oneDNN's and cuDNN's fast layout for the
        narrow layers); values unchanged. What `nn.Module.to(memory_format=...)` does, typed."""
        for p in self.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=memory_format)
        return self

    def stream_encoder(self) -> StreamingEncoder:
        return StreamingEncoder(self)

    def stream_decoder(self) -> StreamingDecoder:
        return StreamingDecoder(self)


def tiny_taehv() -> TAEHV:
    """The `tiny` preset's per-frame autoencoder (random until trained weights are configured)."""
    return TAEHV(temporal=False, encoder_width=TINY_ENCODER_WIDTH, decoder_widths=TINY_DECODER_WIDTHS)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a .safetensors file or a torch pickle loaded with weights_only=True."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise VAELoadError(
            f"{p}: autoencoder weights not found (model.vae); download taew2_1.pth (`streamer models pull taehv`) "
            "or clear the setting"
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(p))
        else:
            raw = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # the library's own message says what is wrong with the bytes
        raise VAELoadError(f"{p}: cannot read autoencoder weights: {type(e).__name__}: {e}") from None
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise VAELoadError(f"{p}: not a state dict of tensors (got {type(raw).__name__})")
    return dict(raw)


# Autoencoders users point model.vae at by mistake (design/weights.md): the full Wan VAEs that sit beside
# the DiT in every upstream folder, and madebyollin/taehv weights for other latent spaces, which share
# taew2_1's key names and would decode Wan latents into garbage, or fail with a list of shapes.
_USE_TAEW2_1 = (
    "streamer needs TAEHV for Wan 2.1's latent space: madebyollin/taehv's taew2_1.pth (or "
    "safetensors/taew2_1.safetensors); `streamer models pull taehv` fetches it and sets model.vae"
)
_FULL_VAES = {16: "the full Wan 2.1 VAE (Wan2.1_VAE.pth)", 48: "the full Wan 2.2 VAE (Wan2.2_VAE.pth)"}
_TAE_BY_CHANNELS = {48: "Wan 2.2 5B (taew2_2)", 32: "HunyuanVideo 1.5 (taehv1_5)", 128: "LTX-2 (taeltx)"}
_TAE_BY_NAME = {"taew2_2": "Wan 2.2 5B", "taehv1_5": "HunyuanVideo 1.5", "taecvx": "CogVideoX",
                "taeos1_3": "Open-Sora 1.3", "taeltx": "LTX-2"}  # fmt: skip


def foreign_autoencoder(sd: Mapping[str, Tensor], where: str) -> str | None:
    """Why these weights are another autoencoder than TAEHV for Wan 2.1 (the message names what to use
    instead), or None. Decided by the tensors first; the file name only for TAEHV weights of another
    16-channel latent space, which no shape can tell apart (the name is how madebyollin/taehv tells them)."""
    if any(k.startswith(("encoder.", "decoder.")) and v.ndim == 5 for k, v in sd.items()):  # 3D convolutions
        z = sd.get("conv2.weight", sd.get("post_quant_conv.weight"))  # Wan's / Diffusers' latent-side 1x1x1 conv
        z_dim = int(z.shape[0]) if z is not None else 0
        what = _FULL_VAES.get(z_dim, f"a full video VAE ({z_dim or 'unknown'} latent channels)")
        names = "Diffusers' AutoencoderKLWan names" if "post_quant_conv.weight" in sd else "Wan's own names"
        return (f"{where}: this is {what} in {names}, not TAEHV (the full VAE is far too slow for a live stream); "
                f"{_USE_TAEW2_1}")  # fmt: skip
    first, last = sd.get("encoder.0.weight"), sd.get("encoder.17.weight")
    if first is not None and last is not None and (int(last.shape[0]) != 16 or int(first.shape[1]) != 3):
        latent, patch = int(last.shape[0]), round((int(first.shape[1]) / 3) ** 0.5)
        model = _TAE_BY_CHANNELS.get(latent, "another video model")
        return (f"{where}: TAEHV weights for {model}: {latent} latent channels on {patch}x{patch} pixel patches, "
                f"another latent space than Wan 2.1's 16 channels; {_USE_TAEW2_1}")  # fmt: skip
    stem = Path(where).stem.lower()
    for prefix, model in [*_TAE_BY_NAME.items(), ("taehv", "HunyuanVideo 1")]:
        if stem.startswith(prefix) and (prefix != "taehv" or stem == "taehv"):
            return (f"{where}: by its name, TAEHV weights for {model}, another latent space than Wan 2.1's; "
                    f"{_USE_TAEW2_1} (a renamed taew2_1 file: give it back its name)")  # fmt: skip
    return None


def infer_config(sd: Mapping[str, Tensor], where: str = "state dict") -> dict[str, object]:
    """TAEHV constructor arguments read from the tensor shapes (so per-frame and narrow variants load too)."""
    foreign = foreign_autoencoder(sd, where)
    if foreign is not None:
        raise VAELoadError(foreign)
    need = ["encoder.0.weight", "encoder.2.conv.weight", "encoder.17.weight", "decoder.1.weight",
            "decoder.8.weight", "decoder.14.weight", "decoder.20.weight", "decoder.13.conv.weight"]  # fmt: skip
    missing = [k for k in need if k not in sd]
    if missing:
        sample = ", ".join(sorted(sd)[:5])
        raise VAELoadError(
            f"{where}: not a TAEHV (taew2_1-style) state dict; missing {', '.join(missing)} (first keys: {sample})"
        )
    width = sd["encoder.0.weight"].shape[0]
    temporal = sd["encoder.2.conv.weight"].shape[1] == 2 * width
    widths = tuple(int(sd[f"decoder.{i}.weight"].shape[0]) for i in (1, 8, 14, 20))
    return {
        "temporal": temporal,
        "encoder_width": int(width),
        "decoder_widths": widths,
        "latent_channels": int(sd["encoder.17.weight"].shape[0]),
    }


def to_per_frame(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A temporal state dict adapted to temporal=False: each stride-2 TPool sees the same frame twice
    (its two weight halves summed) and each stride-2 TGrow keeps only its last time step's output
    channels (what TAEHV itself does when time upscaling is turned off for a cheaper preview)."""
    out = dict(sd)
    for key, w in sd.items():
        if not key.endswith(".conv.weight") or w.shape[2:] != (1, 1):
            continue
        if key.startswith("encoder.") and w.shape[1] == 2 * w.shape[0]:  # TPool(n, 2): [n, 2n, 1, 1]
            out[key] = w[:, : w.shape[0]] + w[:, w.shape[0] :]
        elif key.startswith("decoder.") and w.shape[0] == 2 * w.shape[1]:  # TGrow(n, 2): [2n, n, 1, 1]
            out[key] = w[w.shape[1] :]
    return out


def load_taehv(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    temporal: bool | None = None,
) -> TAEHV:
    """A TAEHV built to the file's shapes with every tensor checked; clear errors on any mismatch.

    temporal: None = as the file is; False with a temporal file (taew2_1) = the per-frame adaptation
    (`to_per_frame`); True with a per-frame file is an error (time scaling cannot be invented).
    """
    sd = read_state_dict(path)
    config = infer_config(sd, str(path))
    if temporal is False and config["temporal"]:
        sd, config["temporal"] = to_per_frame(sd), False
    elif temporal and not config["temporal"]:
        raise VAELoadError(f"{path}: a per-frame autoencoder; the configured preset needs a temporal one (taew2_1)")
    model = TAEHV(**config)  # type: ignore[arg-type]
    expected = model.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in sd]
    problems += [f"unexpected {k}" for k in sd if k not in expected]
    problems += [
        f"{k}: file has {tuple(sd[k].shape)}, model needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise VAELoadError(f"{path}: does not match the TAEHV layout: {'; '.join(problems[:8])}{more}")
    model.load_state_dict(sd)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
