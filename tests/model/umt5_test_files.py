"""Tiny umT5 encoders written in every real on-disk layout (shared/design/weights.md), all holding the
SAME random weights: Wan2.1's bf16 .pth + google/umt5-xxl/, a Diffusers repo (sharded text_encoder/ +
sibling tokenizer/), Hugging Face full (encoder + decoder, .bin or .safetensors shards) and encoder-only.

The key names are written out here from weights.md, not taken from streamer's own mapping, so the
tests check the loader against the documented names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from streamer.testing.umt5_tokenizer import write_tokenizer  # noqa: F401  (the tests import it from here)

DIMS = {"d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 48, "num_layers": 2}
WAN_FILE = "models_t5_umt5-xxl-enc-bf16.pth"


def hf_config(vocab: int) -> dict:
    from transformers import UMT5Config

    return UMT5Config(vocab_size=vocab, **DIMS).to_dict()


def random_weights(vocab: int, seed: int = 0) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(encoder state dict in HF names, decoder + lm_head tensors) of a random tiny UMT5. Every value is
    bf16-representable, so the bf16 Wan file and the fp32 HF files hold exactly the same numbers; the
    norms are random too (their init is all ones, which would hide a norm that is never applied)."""
    from transformers import UMT5Config, UMT5ForConditionalGeneration

    torch.manual_seed(seed)
    full = UMT5ForConditionalGeneration(UMT5Config(vocab_size=vocab, **DIMS)).state_dict()
    out = {}
    for k, v in full.items():
        v = v.detach().clone()
        if k.endswith("layer_norm.weight"):
            v = 0.5 + torch.rand_like(v)
        out[k] = v.to(torch.bfloat16).float()
    encoder = {k: v for k, v in out.items() if k == "shared.weight" or k.startswith("encoder.")}
    encoder.pop("encoder.embed_tokens.weight")  # tied to shared.weight; save_pretrained keeps one
    rest = {k: v for k, v in out.items() if k.startswith(("decoder.", "lm_head."))}
    return encoder, rest


def wan_names(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF encoder names -> Wan's names (the table in weights.md)."""
    out = {"token_embedding.weight": hf["shared.weight"], "norm.weight": hf["encoder.final_layer_norm.weight"]}
    for n in range(DIMS["num_layers"]):
        p = f"encoder.block.{n}.layer."
        out[f"blocks.{n}.norm1.weight"] = hf[p + "0.layer_norm.weight"]
        for x in "qkvo":
            out[f"blocks.{n}.attn.{x}.weight"] = hf[p + f"0.SelfAttention.{x}.weight"]
        out[f"blocks.{n}.pos_embedding.embedding.weight"] = hf[p + "0.SelfAttention.relative_attention_bias.weight"]
        out[f"blocks.{n}.norm2.weight"] = hf[p + "1.layer_norm.weight"]
        out[f"blocks.{n}.ffn.gate.0.weight"] = hf[p + "1.DenseReluDense.wi_0.weight"]
        out[f"blocks.{n}.ffn.fc1.weight"] = hf[p + "1.DenseReluDense.wi_1.weight"]
        out[f"blocks.{n}.ffn.fc2.weight"] = hf[p + "1.DenseReluDense.wo.weight"]
    return out


def _shards(sd: dict[str, Tensor], folder: Path, groups: list[list[str]], fmt: str) -> None:
    """Write `groups` of keys as numbered shards + the index transformers writes beside them."""
    from safetensors.torch import save_file

    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    weight_map = {}
    for i, keys in enumerate(groups, 1):
        name = f"{stem}-{i:05d}-of-{len(groups):05d}.{ext}"
        part = {k: sd[k].contiguous().clone() for k in keys}
        save_file(part, str(folder / name)) if fmt == "safetensors" else torch.save(part, folder / name)
        weight_map.update(dict.fromkeys(keys, name))
    total = sum(v.numel() * v.element_size() for v in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))


def write_wan(root: Path, hf: dict[str, Tensor], vocab: int) -> Path:
    """Wan2.1-T2V-1.3B as downloaded: the bf16 .pth, google/umt5-xxl/ (tokenizer only), and the DiT's
    config.json + safetensors at the root, which must not be mistaken for the text encoder's."""
    from safetensors.torch import save_file

    root.mkdir(parents=True)
    torch.save({k: v.to(torch.bfloat16) for k, v in wan_names(hf).items()}, root / WAN_FILE)
    write_tokenizer(root / "google" / "umt5-xxl" / "tokenizer.json")
    (root / "google" / "umt5-xxl" / "special_tokens_map.json").write_text('{"eos_token": "</s>"}')
    (root / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 1536, "text_len": 512}))
    save_file({"patch_embedding.weight": torch.zeros(2, 2)}, str(root / "diffusion_pytorch_model.safetensors"))
    return root


def write_diffusers(root: Path, hf: dict[str, Tensor], vocab: int) -> Path:
    """Wan2.1-T2V-1.3B-Diffusers: model_index.json, text_encoder/ (2 safetensors shards + index),
    tokenizer/ as a sibling, transformer/ (another model's config)."""
    te = root / "text_encoder"
    te.mkdir(parents=True)
    index = {"_class_name": "WanPipeline", "text_encoder": ["transformers", "UMT5EncoderModel"],
             "tokenizer": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"]}  # fmt: skip
    (root / "model_index.json").write_text(json.dumps(index))
    (te / "config.json").write_text(json.dumps({**hf_config(vocab), "architectures": ["UMT5EncoderModel"]}))
    keys = list(hf)
    _shards(hf, te, [keys[: len(keys) // 2], keys[len(keys) // 2 :]], "safetensors")
    write_tokenizer(root / "tokenizer" / "tokenizer.json")
    (root / "transformer").mkdir()
    (root / "transformer" / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel"}))
    return root


def write_hf_full(folder: Path, hf: dict[str, Tensor], rest: dict[str, Tensor], vocab: int, fmt: str) -> Path:
    """google/umt5-xxl-like: encoder + decoder in 3 shards (encoder only, mixed, decoder only). The
    decoder-only shard is written as garbage: a loader that opens it fails."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**hf_config(vocab), "architectures": ["UMT5ForConditionalGeneration"]}))
    write_tokenizer(folder / "tokenizer.json")
    both = {**hf, **rest, "encoder.embed_tokens.weight": hf["shared.weight"]}
    enc, dec = list(hf) + ["encoder.embed_tokens.weight"], list(rest)
    _shards(both, folder, [enc[:-4], enc[-4:] + dec[:3], dec[3:]], fmt)
    last = sorted(folder.glob(f"*-00003-of-00003.{'safetensors' if fmt == 'safetensors' else 'bin'}"))[0]
    last.write_bytes(b"decoder-only shard: never opened")
    return folder


def write_hf_encoder(folder: Path, hf: dict[str, Tensor], vocab: int) -> Path:
    """An encoder-only Hugging Face folder (UMT5EncoderModel.save_pretrained): one model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**hf_config(vocab), "architectures": ["UMT5EncoderModel"]}))
    save_file({k: v.contiguous() for k, v in hf.items()}, str(folder / "model.safetensors"))
    write_tokenizer(folder / "tokenizer.json")
    return folder
