"""The DiT's architecture hyper-parameters and the named presets: a leaf every other model module imports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiTConfig:
    """Architecture hyper-parameters (names follow the original Wan config.json)."""

    dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    eps: float = 1e-6
    rope_theta: float = 10000.0
    # Width of one attention head; 0 = dim // num_heads (every Wan model). Only head pruning
    # (`streamer prune`) sets it, making the attention width num_heads * head_width narrower than dim.
    head_width: int = 0
    # An input-conditioned DiT may also get the input's luma at full resolution, pixel-unshuffled by this
    # factor (the autoencoder's 8) onto the latent grid: in_dim = 2 x out_dim + frames_per_latent x factor².
    # 0 = the clean latent alone. Made by `streamer train widen-luma` (streamer/model/condition.py says why).
    cond_luma_factor: int = 0

    def __post_init__(self) -> None:
        if not self.head_width and self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim must be even, got {self.freq_dim}")
        extra, f = self.in_dim - 2 * self.out_dim, self.cond_luma_factor
        if f < 0 or (f and (extra <= 0 or extra % (f * f))):
            raise ValueError(
                f"cond_luma_factor {f} needs in_dim - 2 x out_dim (= {extra}) to be a positive multiple of "
                f"{f * f}: the luma planes of each latent frame's input frames"
            )

    @property
    def conditions_on_input(self) -> bool:
        """An input-conditioned DiT (in_dim = 2 x out_dim): every pass gets the chunk's CLEAN input latent
        beside the noisy one, concatenated on the channel axis (as Wan2.1's I2V model takes its condition
        latents), so it can restore the detail the noise destroyed. Made from a plain one by
        `streamer train widen-input` (streamer/train/widen.py). A luma-conditioned one (cond_luma_factor)
        gets the input's luma planes after the clean latent (streamer/model/condition.py)."""
        return self.in_dim == 2 * self.out_dim + self.luma_channels

    @property
    def luma_channels(self) -> int:
        """Channels of the input's luma planes in the condition: frames_per_latent x cond_luma_factor², or 0."""
        return self.in_dim - 2 * self.out_dim if self.cond_luma_factor else 0

    @property
    def head_dim(self) -> int:
        return self.head_width or self.dim // self.num_heads

    @property
    def attn_dim(self) -> int:
        """Width of q/k/v and the attention output: dim, or less in a head-pruned model."""
        return self.num_heads * self.head_dim

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        """Tokens per latent frame for a latent of this spatial size (1560 at 60x104, 1024 at 64x64)."""
        _, ph, pw = self.patch_size
        if latent_height % ph or latent_width % pw:
            raise ValueError(f"latent size {latent_height}x{latent_width} is not divisible by the patch {ph}x{pw}")
        return (latent_height // ph) * (latent_width // pw)


PRESETS: dict[str, DiTConfig] = {
    "wan-1.3b": DiTConfig(dim=1536, num_layers=30, num_heads=12, ffn_dim=8960),
    "wan-14b": DiTConfig(dim=5120, num_layers=40, num_heads=40, ffn_dim=13824),
    # Same code at small width for CPUs and tests; text_dim 384 = all-MiniLM-L6-v2 token embeddings.
    "tiny": DiTConfig(dim=256, num_layers=4, num_heads=4, ffn_dim=1024, text_dim=384, text_len=64),
}


def preset(name: str) -> DiTConfig:
    """The DiTConfig of a named preset (`wan-1.3b`, `wan-14b`, `tiny`)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}") from None
