"""Finding and loading the umT5 encoder in every layout a streamer has on disk (shared/design/weights.md):

- Wan2.1: the folder, or `models_t5_umt5-xxl-enc-bf16.pth` itself (a bf16 torch pickle of a plain state
  dict in Wan's names, no config: sizes come from the shapes); tokenizer in `google/umt5-xxl/` beside it.
- Diffusers: the repo root (`model_index.json`) or its `text_encoder/` (HF names, safetensors shards
  + index, config.json); tokenizer in the sibling `tokenizer/`.
- Hugging Face umT5: config.json + weights (.safetensors or .bin, sharded or not) + tokenizer, either
  encoder-only or the full model (decoder.* and lm_head.* are skipped, and so are shards holding only them).

`find_layout` only looks at file names; `plan` opens the files (memory-mapped, nothing read) and
checks names and shapes, so a broken layout fails before any of the 11 GB is read; `load_umt5` then
builds the module on the meta device and fills it tensor by tensor, each cast straight to the target
dtype and device (1x memory; never an fp32 copy of the bf16 file), logging progress as it goes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from streamer.model.umt5 import TextEncoderError, UMT5Config, UMT5Net
from streamer.model.weights.readers import CheckpointError, read_pickle
from streamer.model.weights.upload import PinnedUploader

log = logging.getLogger(__name__)

WAN_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_TOKENIZER = Path("google") / "umt5-xxl"  # beside the .pth
_WHAT = "umT5 text encoder"

# (our name, Wan's name, Hugging Face's name); {n} is the block index.
_NAMES = [
    ("token_embedding.weight", "token_embedding.weight", "shared.weight"),
    ("blocks.{n}.norm1", "blocks.{n}.norm1.weight", "encoder.block.{n}.layer.0.layer_norm.weight"),
    *(
        (f"blocks.{{n}}.attn.{p}.weight", f"blocks.{{n}}.attn.{p}.weight",
         f"encoder.block.{{n}}.layer.0.SelfAttention.{p}.weight")
        for p in "qkvo"
    ),  # fmt: skip
    ("blocks.{n}.pos_bias.weight", "blocks.{n}.pos_embedding.embedding.weight",
     "encoder.block.{n}.layer.0.SelfAttention.relative_attention_bias.weight"),  # fmt: skip
    ("blocks.{n}.norm2", "blocks.{n}.norm2.weight", "encoder.block.{n}.layer.1.layer_norm.weight"),
    ("blocks.{n}.ffn.gate.weight", "blocks.{n}.ffn.gate.0.weight", "encoder.block.{n}.layer.1.DenseReluDense.wi_0.weight"),
    ("blocks.{n}.ffn.fc1.weight", "blocks.{n}.ffn.fc1.weight", "encoder.block.{n}.layer.1.DenseReluDense.wi_1.weight"),
    ("blocks.{n}.ffn.fc2.weight", "blocks.{n}.ffn.fc2.weight", "encoder.block.{n}.layer.1.DenseReluDense.wo.weight"),
    ("norm", "norm.weight", "encoder.final_layer_norm.weight"),
]
_ALIASES = {"encoder.embed_tokens.weight": "token_embedding.weight"}  # HF ties it to shared.weight
_SKIPPED = ("decoder.", "lm_head.")  # the full HF model's other half


def _regex(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{n\}", r"(?P<n>\d+)") + "$")


_TO_OURS = [(_regex(name), ours) for ours, wan, hf in _NAMES for name in (wan, hf)]


def our_name(key: str) -> str | None:
    """Wan or HF key -> the module's name; None for the decoder / LM head; KeyError for anything else."""
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith(_SKIPPED):
        return None
    for pattern, ours in _TO_OURS:
        if m := pattern.match(key):
            return ours.format(n=m.group("n")) if "n" in m.groupdict() else ours
    raise KeyError(key)


def their_name(ours: str, kind: str) -> str:
    """The name a file of layout `kind` ("Wan", or the Hugging Face / Diffusers one) uses for our key
    `ours` (the inverse of `our_name`; a key with no row is returned as it is)."""
    column = 1 if kind == "Wan" else 2
    for row in _NAMES:
        if m := _regex(row[0]).match(ours):
            return row[column].format(n=m.group("n")) if "n" in m.groupdict() else row[column]
    return ours


@dataclass(frozen=True)
class UMT5Layout:
    """Where one umT5 encoder's parts are: weights files (only those holding encoder tensors), the
    tokenizer.json, and the HF config (None for Wan's file, whose sizes come from its shapes)."""

    kind: str  # "Wan", "Diffusers" or "Hugging Face"
    given: Path
    weights: tuple[Path, ...]
    tokenizer: Path
    config: dict[str, Any] | None

    def stamp(self) -> str:
        """Names, sizes and mtimes: replacing any file changes it (and so the embedding cache key)."""
        files = (*self.weights, self.tokenizer)
        return ",".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)


def _fail(path: Path, problem: str) -> TextEncoderError:
    return TextEncoderError(f"{_WHAT}: {path}: {problem}")


def find_layout(path: str | Path) -> UMT5Layout:
    """Which layout `path` is (see the module docstring); TextEncoderError naming what is missing."""
    given = Path(path).expanduser().absolute()
    if not given.exists():
        raise _fail(given, "does not exist (model.text_encoder)")
    if given.is_file():
        if given.suffix in (".pth", ".pt"):
            return _wan(given, given)
        raise _fail(given, f"is a file but not Wan's {WAN_FILE}: give the folder that holds the umT5 files")
    wan = [given / WAN_FILE] if (given / WAN_FILE).is_file() else sorted(given.glob("models_t5_*.pth"))
    if wan:
        return _wan(wan[0], given)
    if (given / "model_index.json").is_file():
        return _diffusers(given)
    if (given / "config.json").is_file():
        return _hugging_face(given, given)
    if (given / "tokenizer.json").is_file() and (given.parents[1] / WAN_FILE).is_file():
        # the old advice pointed at Wan's google/umt5-xxl folder: the weights are two levels up
        return _wan(given.parents[1] / WAN_FILE, given)
    raise _fail(given, f"no umT5 weights: expected {WAN_FILE} (Wan2.1 folder), model_index.json (Diffusers "
                       "repo) or config.json with the weights and tokenizer (Hugging Face umT5 folder)")  # fmt: skip


def _wan(pth: Path, given: Path) -> UMT5Layout:
    tokenizer = pth.parent / WAN_TOKENIZER / "tokenizer.json"
    if not tokenizer.is_file():
        raise _fail(given, f"no tokenizer: expected {tokenizer} (Wan2.1's google/umt5-xxl folder beside {pth.name})")
    return UMT5Layout("Wan", given, (pth,), tokenizer, None)


def _read_json(path: Path, given: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _fail(given, f"cannot read {path.name}: {e}") from None
    if not isinstance(data, dict):
        raise _fail(given, f"{path.name} is not a JSON object")
    return data


def _diffusers(root: Path) -> UMT5Layout:
    index = _read_json(root / "model_index.json", root)
    for part in ("text_encoder", "tokenizer"):
        if part not in index:
            raise _fail(root, f"model_index.json names no {part} (not a Wan Diffusers repo?)")
        if not (root / part).is_dir():
            raise _fail(root, f"no {part}/ folder (model_index.json names it): download it too")
    return _hugging_face(root / "text_encoder", root, kind="Diffusers")


def _hugging_face(folder: Path, given: Path, kind: str = "Hugging Face") -> UMT5Layout:
    config = _read_json(folder / "config.json", given)
    if config.get("model_type") != "umt5":
        arch = ", ".join(config.get("architectures") or []) or config.get("_class_name", "")
        raise _fail(given, f"{folder / 'config.json'} is not a umT5 config (model_type "
                           f"{config.get('model_type')!r}{f', {arch}' if arch else ''})")  # fmt: skip
    places = [folder / "tokenizer.json", folder.parent / "tokenizer" / "tokenizer.json"]  # Diffusers: a sibling
    tokenizer = next((p for p in places if p.is_file()), None)
    if tokenizer is None:
        raise _fail(given, f"no tokenizer: expected {' or '.join(map(str, places))}")
    return UMT5Layout(kind, given, _hf_weights(folder, given), tokenizer, config)


def _hf_weights(folder: Path, given: Path) -> tuple[Path, ...]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):  # fmt: skip
        if (folder / index_name).is_file():
            weight_map = _read_json(folder / index_name, given).get("weight_map")
            if not isinstance(weight_map, dict):
                raise _fail(given, f"{index_name} has no weight_map")
            # only the shards holding encoder tensors: google/umt5-xxl's decoder shards are never opened
            shards = sorted({f for k, f in weight_map.items() if not str(k).startswith(_SKIPPED)})
            missing = [f for f in shards if not (folder / f).is_file()]
            if missing:
                raise _fail(given, f"missing shard(s) {', '.join(missing)} listed in {folder / index_name}")
            return tuple(folder / f for f in shards)
        if (folder / single).is_file():
            return (folder / single,)
    raise _fail(given, f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json with "
                       "its shards, pytorch_model.bin or pytorch_model.bin.index.json with its shards")  # fmt: skip


class _WeightsFile:
    """One weights file opened without reading its tensors: safetensors through safe_open (tensor by
    tensor), torch pickles through the shared reader (weights_only=True: a pickle that would run code
    is refused; memory-mapped, so nothing is read until a tensor is asked for)."""

    def __init__(self, path: Path, given: Path) -> None:
        self.path = path
        self.shapes: dict[str, tuple[int, ...]]
        self.get: Callable[[str], Tensor]
        self.pickled = path.suffix != ".safetensors"
        if not self.pickled:
            from safetensors import safe_open

            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
                self.shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
            except Exception as e:  # safetensors' own error type: truncated or corrupt header
                raise _fail(given, f"cannot read {path} ({e}); truncated or not a safetensors file?") from None
            self.get = handle.get_tensor
            return
        try:
            state = read_pickle(path)
        except CheckpointError as e:
            # torch's refusal text ends in advice to load with weights_only=False: never right for a download
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            if found:
                raise _fail(given, f"refused {path}: a pickle that would call {found.group(1)} while loading, not "
                                   "plain tensors (read with weights_only=True); do not load it another way") from None  # fmt: skip
            raise _fail(given, f"unreadable (truncated download? compare its size with the Hub's): {e}") from None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise _fail(given, f"{path} is not a plain state dict of tensors")
        self.shapes = {k: tuple(v.shape) for k, v in state.items()}
        self.get = state.__getitem__


@dataclass
class UMT5Plan:
    """A checked layout: sizes, and for each of the module's tensors the file and key it comes from."""

    layout: UMT5Layout
    cfg: UMT5Config
    sources: dict[str, tuple[_WeightsFile, str]]


def plan(layout: UMT5Layout) -> UMT5Plan:
    """Open the weights (nothing read yet), map the names and check every tensor is there and fits."""
    sources: dict[str, tuple[_WeightsFile, str]] = {}
    unknown: list[str] = []
    for path in layout.weights:
        f = _WeightsFile(path, layout.given)
        for key in f.shapes:
            try:
                ours = our_name(key)
            except KeyError:
                unknown.append(key)
                continue
            if ours is not None:
                sources.setdefault(ours, (f, key))  # shared.weight and its tied alias: the first one
    if unknown:
        raise _fail(layout.given, f"not umT5 encoder tensors: {', '.join(unknown[:5])}"
                                  + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))  # fmt: skip
    cfg = _config(layout, sources)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in UMT5Net(cfg).state_dict().items()}
    missing = [their_name(k, layout.kind) for k in expected if k not in sources]
    if missing:
        raise _fail(layout.given, f"missing tensors: {', '.join(missing[:6])}"
                                  + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
                                  + f" ({len(missing)} of {len(expected)})")  # fmt: skip
    extra = sorted(k for k in sources if k not in expected)  # e.g. a block past the configured num_layers
    if extra:
        raise _fail(layout.given, f"tensors beyond the config's {cfg.layers} layers: {sources[extra[0]][1]}")
    for name, shape in expected.items():
        f, key = sources[name]
        if f.shapes[key] != shape:
            raise _fail(layout.given, f"{f.path.name}: {key} has shape {list(f.shapes[key])}, expected "
                                      f"{list(shape)} for {_describe(cfg)}")  # fmt: skip
    return UMT5Plan(layout, cfg, sources)


def _describe(cfg: UMT5Config) -> str:
    return (f"vocab {cfg.vocab}, dim {cfg.dim}, {cfg.heads} heads x {cfg.head_dim}, ffn {cfg.ffn}, "
            f"{cfg.layers} layers, {cfg.buckets} buckets")  # fmt: skip


def _config(layout: UMT5Layout, sources: dict[str, tuple[_WeightsFile, str]]) -> UMT5Config:
    c = layout.config
    if c is not None:  # HF config.json
        keys = ("vocab_size", "d_model", "num_heads", "d_kv", "d_ff", "num_layers")
        if absent := [k for k in keys if not isinstance(c.get(k), int)]:
            raise _fail(layout.given, f"config.json lacks {', '.join(absent)}")
        if c.get("feed_forward_proj", "gated-gelu") != "gated-gelu":
            raise _fail(layout.given, f"config.json feed_forward_proj is {c['feed_forward_proj']!r}; umT5 uses gated-gelu")
        return UMT5Config(
            vocab=c["vocab_size"], dim=c["d_model"], heads=c["num_heads"], head_dim=c["d_kv"], ffn=c["d_ff"],
            layers=c["num_layers"], buckets=int(c.get("relative_attention_num_buckets", 32)),
            max_distance=int(c.get("relative_attention_max_distance", 128)),
            eps=float(c.get("layer_norm_epsilon", 1e-6)),
        )  # fmt: skip
    # Wan's file has no config: read the sizes off the shapes (heads from the [buckets, heads] table).
    needed = ("token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.fc1.weight", "blocks.0.pos_bias.weight")
    if absent := [their_name(k, layout.kind) for k in needed if k not in sources]:
        raise _fail(layout.given, f"missing tensors: {', '.join(absent)}")
    shape = {k: sources[k][0].shapes[sources[k][1]] for k in needed}
    if bad := [their_name(k, layout.kind) for k in needed if len(shape[k]) != 2]:
        raise _fail(layout.given, f"{', '.join(bad)}: not a matrix; not umT5's weights")
    vocab, dim = shape["token_embedding.weight"]
    inner, ffn = shape["blocks.0.attn.q.weight"][0], shape["blocks.0.ffn.fc1.weight"][0]
    buckets, heads = shape["blocks.0.pos_bias.weight"]
    layers = 1 + max(int(k.split(".")[1]) for k in sources if k.startswith("blocks."))
    if inner % heads:
        raise _fail(layout.given, f"attention width {inner} is not a multiple of {heads} heads")
    return UMT5Config(vocab=vocab, dim=dim, heads=heads, head_dim=inner // heads, ffn=ffn, layers=layers, buckets=buckets)


class _Progress:
    """Log lines at every 10 % of the bytes read, in loading.py's style: a 11 GB read takes a while."""

    def __init__(self, what: str, total_bytes: int, total_tensors: int) -> None:
        self.what, self.total, self.count = what, max(total_bytes, 1), total_tensors
        self.started, self.done, self.tensors, self.next_pct = time.monotonic(), 0, 0, 10

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        self.tensors += 1
        pct = 100 * self.done // self.total
        if pct >= self.next_pct or self.tensors == self.count:
            log.info("umT5 load %3d%% (%.1f s): %d/%d tensors, %.2f/%.2f GB from %s", pct,
                     time.monotonic() - self.started, self.tensors, self.count, self.done / 1e9, self.total / 1e9,
                     self.what)  # fmt: skip
            self.next_pct = (pct // 10 + 1) * 10


def load_umt5(p: UMT5Plan, device: torch.device, dtype: torch.dtype) -> UMT5Net:
    """Fill a meta-device UMT5Net tensor by tensor (each cast to dtype, then to `device`: through pinned
    buffers on a GPU) and assign."""
    with torch.device("meta"):
        net = UMT5Net(p.cfg)
    names = sorted(p.sources, key=lambda k: (str(p.sources[k][0].path), p.sources[k][1]))  # file order
    sizes = {k: _numel(p.sources[k][0].shapes[p.sources[k][1]]) for k in names}
    progress = _Progress(", ".join(w.name for w in p.layout.weights), sum(sizes.values()) * dtype.itemsize, len(names))
    state: dict[str, Tensor] = {}
    uploader = PinnedUploader(device) if device.type == "cuda" else None  # why: weights/upload.py
    for name in names:
        f, key = p.sources[name]
        try:
            if uploader is not None:
                state[name] = uploader.upload(f.get(key).to(dtype))
            else:
                # copy out of a memory-mapped pickle even when the dtype matches, so the module owns its
                # memory (the page cache may be dropped, the file replaced); safetensors already hands a copy
                state[name] = f.get(key).to(dtype=dtype, copy=f.pickled)
        except Exception as e:
            raise _fail(p.layout.given, f"cannot read {key} from {f.path} ({type(e).__name__}: {e})") from None
        progress.advance(sizes[name] * dtype.itemsize)
    if uploader is not None:
        uploader.finish()
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
