"""The umT5 encoder forward (Wan's text encoder) and its prompt preparation, in plain torch.

Written here rather than mapped onto transformers' UMT5EncoderModel so that every file layout a
streamer has (Wan's bf16 `.pth`, Diffusers shards, Hugging Face folders) loads straight into one
module in the dtype wanted, without the 23 GB fp32 detour (facts: shared/design/weights.md).

- `UMT5Config`: the sizes (umT5-XXL: vocab 256384, dim 4096, 64 heads x 64, ffn 10240, 24 layers).
- `UMT5Net`: embedding (no scaling) -> blocks of pre-RMSNorm self-attention with the layer's own
  relative-position bias (no 1/sqrt(d)) and a gated-GELU FFN -> final RMSNorm. Parameter names are
  Wan's, simplified (`ffn.gate`, `pos_bias`); `umt5_layouts` maps every layout onto them.
- `clean_prompt` / `PromptTokenizer`: Wan's cleaning, then ids with `</s>` appended, truncated.
Checked against transformers' UMT5EncoderModel in tests/model/test_text_umt5.py.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TextEncoderError(RuntimeError):
    """A text encoder that cannot be loaded (missing, incomplete or wrong local files); the message names
    the path and what is missing. Defined in this leaf so every text module can raise it."""


@dataclass(frozen=True)
class UMT5Config:
    vocab: int
    dim: int
    heads: int
    head_dim: int
    ffn: int
    layers: int
    buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    @property
    def params(self) -> int:
        inner = self.heads * self.head_dim
        per_layer = 4 * self.dim * inner + 3 * self.dim * self.ffn + 2 * self.dim + self.buckets * self.heads
        return self.vocab * self.dim + self.layers * per_layer + self.dim


def relative_position_bucket(rel: Tensor, buckets: int, max_distance: int) -> Tensor:
    """Bidirectional T5 buckets of rel = key - query: half the buckets per direction, the first half of
    those exact distances, the rest log-spaced up to max_distance (everything beyond shares the last)."""
    half = buckets // 2
    out = (rel > 0).long() * half
    dist = rel.abs()
    exact = half // 2
    # clamp(min=1) only keeps log() finite where the exact branch is taken anyway
    log_ratio = torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return out + torch.where(dist < exact, dist, large)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """T5's RMSNorm: no mean, no bias; the variance in fp32 whatever the activations' dtype."""
    y = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(weight.dtype)


def _fp16_clamp(x: Tensor) -> Tensor:
    # umT5 overflows fp16 in its residual stream; Wan and transformers clamp it the same way
    if x.dtype == torch.float16:
        bound = torch.finfo(torch.float16).max - 1000
        return x.clamp(-bound, bound)
    return x


class Attention(nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        inner = cfg.heads * cfg.head_dim
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.q, self.k, self.v = (nn.Linear(cfg.dim, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, cfg.dim, bias=False)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x [B, L, dim], bias [B, heads, L, L] (position bias + key mask) -> [B, L, dim]."""
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, self.heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        logits = q @ k.transpose(-1, -2) + bias  # no 1/sqrt(d): T5 folds it into the trained weights
        weights = F.softmax(logits.float(), dim=-1).to(v.dtype)
        return self.o((weights @ v).transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.fc2 = nn.Linear(cfg.ffn, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x) * F.gelu(self.gate(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.eps = cfg.eps
        self.norm1 = nn.Parameter(torch.ones(cfg.dim))
        self.attn = Attention(cfg)
        self.pos_bias = nn.Embedding(cfg.buckets, cfg.heads)  # umT5: one table per layer
        self.norm2 = nn.Parameter(torch.ones(cfg.dim))
        self.ffn = FeedForward(cfg)

    def forward(self, x: Tensor, buckets: Tensor, key_mask: Tensor) -> Tensor:
        """x [B, L, dim], buckets [L, L] bucket ids, key_mask [B, 1, 1, L] additive -> [B, L, dim]."""
        bias = self.pos_bias(buckets).permute(2, 0, 1).unsqueeze(0).to(x.dtype) + key_mask
        x = _fp16_clamp(x + self.attn(rms_norm(x, self.norm1, self.eps), bias))
        return _fp16_clamp(x + self.ffn(rms_norm(x, self.norm2, self.eps)))


class UMT5Net(nn.Module):
    """The umT5 encoder stack: token ids -> final states (padding positions are not zeroed here)."""

    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.Parameter(torch.ones(cfg.dim))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids [B, L] int64, mask [B, L] (1 = real token) -> states [B, L, dim] in the weights' dtype."""
        n = ids.shape[1]
        pos = torch.arange(n, device=ids.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.cfg.buckets, self.cfg.max_distance)
        x = self.token_embedding(ids)
        key_mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        key_mask = key_mask.masked_fill(mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for block in self.blocks:
            x = block(x, buckets, key_mask)
        return rms_norm(x, self.norm, self.cfg.eps)


_WHITESPACE = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: ftfy's fixes, HTML entities unescaped twice (chat text is often escaped
    twice), then whitespace runs collapsed to one space and the ends stripped."""
    try:
        import ftfy
    except ImportError:
        raise TextEncoderError("the umT5 text encoder needs ftfy for Wan's prompt cleaning: pip install ftfy") from None
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


class PromptTokenizer:
    """`tokenizer.json` through the `tokenizers` library: ids of the cleaned prompt, cut to text_len - 1,
    then `</s>`; no BOS. Padding is left to the caller (pad id 0, masked out)."""

    def __init__(self, path: Path, text_len: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        # A tokenizer.json may carry its own padding/truncation settings; ours are explicit below.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        eos = self.tokenizer.token_to_id("</s>")
        if eos is None:
            raise TextEncoderError(f"umT5 tokenizer {path} has no '</s>' token: not umT5's tokenizer.json")
        self.eos, self.text_len = eos, text_len
        pad = self.tokenizer.token_to_id("<pad>")
        self.pad = 0 if pad is None else pad

    def __call__(self, prompts: list[str]) -> list[list[int]]:
        encoded = self.tokenizer.encode_batch([clean_prompt(p) for p in prompts], add_special_tokens=False)
        return [e.ids[: self.text_len - 1] + [self.eos] for e in encoded]
