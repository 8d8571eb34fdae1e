"""Write the files `streamer models pull self-forcing --dir OUT_DIR` leaves, random values, real key names,
dtypes and sizes, plus OUT_DIR/pulled.toml pointing at them (issue 17 item 6: start-up from real-size files,
without downloading 17 GB; tools/startup_bench/device_call.sh runs it before the timed starts).

    python tools/startup_bench/make_layout.py OUT_DIR                # real size: 5.68 GB DiT + 11.36 GB umT5 (GPU if any)
    python tools/startup_bench/make_layout.py OUT_DIR --scale small  # same keys, tiny shapes: a CPU `streamer run` test
    python tools/startup_bench/make_layout.py OUT_DIR --dry-run      # real shapes as 1-element stride-0 tensors (kB)

Layout (shared/design/weights.md, streamer/models/catalogue.py):
  Self-Forcing/checkpoints/self_forcing_dmd.pt  fp32 torch pickle {"generator_ema": {"model.<Wan name>": ...}}
  Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth  bf16 plain state dict in Wan's names, no config
  Wan2.1-T2V-1.3B/google/umt5-xxl/tokenizer.json  the tests' small umT5-shaped stand-in (ids < 100)
  taehv/taew2_1.pth  fp16 TAEHV state dict (the published file is fp16, 22.6 MB)
Values come from each module's own init (DiT, UMT5Net, TAEHV), built on the GPU when there is one, so the
model runs to finite outputs; each tensor is copied to the CPU one at a time and only one file's tensors
are held in RAM at once (11.4 GB at most). Every file is then checked with the loaders' own checks
(read_checkpoint, umt5_layouts.plan, load_taehv), memory-mapped: no weights are read back. Needs a checkout:
the stand-in tokenizer is the tests' own writer (streamer/testing/umt5_tokenizer.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from streamer.model.config import PRESETS, DiTConfig
from streamer.model.dit import DiT
from streamer.model.doctor import UMT5_XXL_PARAMS
from streamer.model.umt5 import UMT5Config, UMT5Net
from streamer.model.umt5_layouts import WAN_FILE, WAN_TOKENIZER, find_layout, our_name, plan, their_name
from streamer.model.vae import TAEHV, load_taehv
from streamer.model.weights.checkpoints import read_checkpoint
from streamer.testing.umt5_tokenizer import write_tokenizer

DIT_FILE = Path("Self-Forcing/checkpoints/self_forcing_dmd.pt")
WAN_DIR = Path("Wan2.1-T2V-1.3B")
VAE_FILE = Path("taehv/taew2_1.pth")
PRESET = "wan-1.3b"
# umT5-XXL as Wan ships it (weights.md: vocab 256384, dim 4096, 64 heads x 64, ffn 10240, 24 layers). The
# project has no constant for it (the loader reads the sizes off the shapes), so it is checked below against
# doctor.UMT5_XXL_PARAMS and the DiT's text width.
UMT5_XXL = UMT5Config(vocab=256384, dim=4096, heads=64, head_dim=64, ffn=10240, layers=24)

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {msg}", flush=True)


def configs(scale: str) -> tuple[DiTConfig, UMT5Config]:
    dit = PRESETS[PRESET]
    if abs(UMT5_XXL.params / UMT5_XXL_PARAMS - 1) > 0.005 or UMT5_XXL.dim != dit.text_dim:
        raise SystemExit(f"umT5-XXL sizes disagree with the project: {UMT5_XXL.params:.4g} params, dim {UMT5_XXL.dim}")
    if scale == "real":
        return dit, UMT5_XXL
    # Same key names, tiny widths; text_dim / in / out / patch stay so it still runs as preset wan-1.3b
    # (loading.preset_mismatch), and umT5's width stays the DiT's text_dim. dim 256 = 2 heads of 128, which
    # is also what the checkpoint reader infers from the shapes.
    small_dit = dataclasses.replace(dit, dim=256, num_layers=2, num_heads=2, ffn_dim=512)
    small_t5 = dataclasses.replace(UMT5_XXL, vocab=256, heads=2, head_dim=8, ffn=32, layers=2)
    return small_dit, small_t5


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def cpu_tensors(make: Callable[[], nn.Module], dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    """The module's state dict on the CPU in `dtype`, built (and so initialised) on `device`. On "meta"
    each tensor is a 1-element stride-0 view of the real shape: the files keep every name and shape at a
    few kB, for checking the key layout without writing 17 GB."""
    with torch.device(device), default_dtype(dtype):
        module = make()
    out = {}
    for name, t in module.state_dict().items():
        if device == "meta":
            out[name] = torch.zeros(1, dtype=dtype).expand(t.shape)
        else:
            out[name] = t.detach().to("cpu", dtype)  # one tensor at a time: GPU memory is freed with the module
    del module
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    t = time.monotonic()
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a half-written file never has the real name
    say(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB in {time.monotonic() - t:.1f} s)")


def write_dit(out: Path, cfg: DiTConfig, device: str) -> None:
    sd = cpu_tensors(lambda: DiT(cfg), torch.float32, device)
    save({"generator_ema": {f"model.{k}": v for k, v in sd.items()}}, out / DIT_FILE)


def write_umt5(out: Path, cfg: UMT5Config, device: str) -> None:
    sd = cpu_tensors(lambda: UMT5Net(cfg), torch.bfloat16, device)
    wan = {their_name(k, "Wan"): v for k, v in sd.items()}  # the loader's own mapping: the names it reads
    if bad := [k for k in wan if our_name(k) not in sd]:  # the mapping must round-trip
        raise SystemExit(f"umT5 names that do not map back: {bad[:5]}")
    save(wan, out / WAN_DIR / WAN_FILE)
    vocab = write_tokenizer(out / WAN_DIR / WAN_TOKENIZER / "tokenizer.json")
    if vocab > cfg.vocab:
        raise SystemExit(f"the stand-in tokenizer has {vocab} ids, more than the embedding's {cfg.vocab}")


def write_vae(out: Path) -> None:
    torch.manual_seed(1)
    sd = {k: v.half() for k, v in TAEHV().state_dict().items()}  # taew2_1 keys; 11 M params
    save(sd, out / VAE_FILE)


def write_config(out: Path, scale: str) -> Path:
    width, height = (832, 480) if scale == "real" else (64, 64)
    text = f"""[video]
width = {width}
height = {height}
fps = 30.0
[source]
kind = "pattern"
[sinks]
enabled = ["null"]
[dashboard]
enabled = false
[store]
path = "{out}/streamer.db"
[prompt]
console = false
[model]
preset = "{PRESET}"
checkpoint = "{out / DIT_FILE}"
vae = "{out / VAE_FILE}"
text_encoder = "{out / WAN_DIR}"
width = {width}
height = {height}
steps = 2
cache_dir = "{out}/cache"
"""
    path = out / "pulled.toml"
    path.write_text(text)
    return path


def check(out: Path, dit_cfg: DiTConfig, t5_cfg: UMT5Config, scale: str) -> None:
    """The loaders' own checks on the written files (memory-mapped: names, shapes, dtypes; no data read)."""
    info = read_checkpoint(out / DIT_FILE)
    want_preset = PRESET if scale == "real" else "custom"
    if info.problems or info.preset != want_preset or info.container != "generator_ema" or info.config != dit_cfg:
        raise SystemExit(f"DiT file fails the checkpoint reader: {info.problems}, preset {info.preset}, "
                         f"entry {info.container!r}, config {info.config}")  # fmt: skip
    dtypes = {str(t.dtype) for t in info.state_dict.values()}
    say(f"DiT ok: {info.layout}; {'; '.join(info.notes)}; {info.num_params / 1e9:.3f} B params, {len(info.state_dict)} "
        f"tensors, {dtypes}; {info.container_reason}")  # fmt: skip
    checked = plan(find_layout(out / WAN_DIR))
    if checked.cfg != t5_cfg or checked.layout.kind != "Wan":
        raise SystemExit(f"umT5 layout read as {checked.layout.kind} {checked.cfg}, wrote {t5_cfg}")
    files = {f.path for f, _ in checked.sources.values()}
    say(f"umT5 ok: {checked.layout.kind} layout, {len(checked.sources)} tensors, {checked.cfg.params / 1e9:.3f} B "
        f"params from {', '.join(p.name for p in files)}; tokenizer {checked.layout.tokenizer}")  # fmt: skip
    vae = load_taehv(out / VAE_FILE, temporal=True)
    say(f"TAEHV ok: {sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M params")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--scale", choices=("real", "small"), default="real")
    p.add_argument("--dry-run", action="store_true", help="real shapes as 1-element stride-0 tensors (names only)")
    p.add_argument("--device", default="auto", help="where the modules are built and initialised (auto: cuda if any)")
    a = p.parse_args()
    out = a.out.resolve()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    device = "meta" if a.dry_run else device
    dit_cfg, t5_cfg = configs(a.scale)
    say(f"{a.scale} layout in {out} built on {device}: DiT {dit_cfg.dim}x{dit_cfg.num_layers}, umT5 vocab "
        f"{t5_cfg.vocab} dim {t5_cfg.dim} x{t5_cfg.layers} ({t5_cfg.params / 1e9:.3f} B)")  # fmt: skip
    torch.manual_seed(0)
    write_dit(out, dit_cfg, device)
    write_umt5(out, t5_cfg, device)
    write_vae(out)
    say(f"config {write_config(out, a.scale)}")
    check(out, dit_cfg, t5_cfg, a.scale)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
