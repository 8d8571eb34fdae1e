"""Model settings for a CUDA card: what `streamer init --gpu` writes.

`plan_for(card)` is a pure function of the card's name, memory, compute capability and SM count, so it
is tested on a CPU with made-up cards. Two predictions decide, both from numbers the project measured:

- Memory: the doctor's estimate (`estimate_memory`) must fit the card the way the doctor checks it
  (`fits`), against the card's memory less a reserve for the CUDA context and the desktop.
- Speed: output fps = video frames per chunk / chunk time. The chunk time is the chunk's FLOPs over
  the card's dense bf16 tensor rate x `EFFICIENCY`, the fraction the fast path reaches on an H100 (W1:
  14.27 TFLOP in 44.5 ms = 320 TFLOP/s of the 989 datasheet; docs/benchmarks.md). Without the fast
  path, each DiT pass also costs the host `EAGER_HOST_S` of kernel launches (W1 eager - fast, per pass).
  Cross-check: for an RTX 4090 at 480x832 and 1 step this predicts 28 fps, the part-by-part projection
  (streamer/bench/projection.py, docs/benchmarks.md) 39 since its refit to the H100's 2026-12-07 profile;
  StreamDiffusionV2 publishes 16.6 fps there without a captured graph.

The plan is the first rung of `LADDER` (resolution and steps, best picture first) that is live
(predicted >= `LIVE_FPS`) and fits; the umT5 text encoder (11.4 GB in bf16) goes on the card when it
fits beside the DiT with room to spare, `auto` (on the card to encode, freed when tight) when it fits
at all, else the CPU. A card too slow or too small for any rung gets the tiny preset. docs/setup.md
explains the rule with the resulting settings for common cards.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

from streamer.config import ModelSettings, effective_window
from streamer.model.config import preset
from streamer.model.cost import ChunkShape, chunk_cost
from streamer.model.doctor import GIB, MemoryEstimate, estimate_memory, fits

# (dense fp16/bf16 tensor FLOP per clock per SM with fp32 accumulation on the full-rate parts, nominal
# boost clock in GHz) by compute capability, from NVIDIA's datasheets (e.g. H100 SXM: 132 SMs x 4096 x
# 1.83 GHz = 989 TFLOP/s; A100: 108 x 2048 x 1.41 = 312; RTX A6000: 84 x 1024 x 1.80 = 155). GeForce
# cards accumulate in fp32 at half that (`Card.tensor_tflops`): RTX 4090 128 x 1024 x 2.52 / 2 = 165,
# RTX 3090 82 x 1024 x 1.70 / 2 = 71, the Ada and GA102 whitepapers' "BF16 with FP32 accumulate".
_TENSOR_RATE: dict[tuple[int, int], tuple[int, float]] = {
    (7, 0): (1024, 1.53),  # Volta (V100): fp16 only
    (7, 5): (1024, 1.60),  # Turing (T4, RTX 20): fp16 only
    (8, 0): (2048, 1.41),  # A100
    (8, 6): (1024, 1.70),  # RTX 30, RTX A-series
    (8, 7): (512, 1.30),  # Jetson Orin
    (8, 9): (1024, 2.50),  # RTX 40, L4, L40
    (9, 0): (4096, 1.83),  # H100, H200
    (10, 0): (8192, 1.85),  # B200
    (12, 0): (1024, 2.40),  # RTX 50
}

# achieved / datasheet tensor rate of the fast path on W1 (H100, 44.5 ms, 2026-11-25). Kept although the
# H100 now does 32.9 ms (0.438, 2026-12-07): much of that gain came from Hopper-only kernels (TMA
# attention) and H100 tuning that Ada and Ampere cards may not see, and an optimistic plan would not be
# live there.
EFFICIENCY = 0.32
EAGER_HOST_S = 0.06  # host launch time per DiT pass without the fast path (W1 on an H100: 152-198 ms eager vs 44.5 fast, 2 passes)
LIVE_FPS = 24.0  # the slowest output that still looks like live video; the daemon repeats frames up to video.fps
RESERVE = GIB  # card memory the CUDA context and a desktop take before the model gets any
RESIDENT_SHARE = 0.5  # keep the text encoder on the card only when everything needs at most this share
# Resolution (16:9-ish, multiples of 16) and steps, best picture first. Wan-1.3B was trained at 480x832,
# so one step at 480p comes before two at a lower resolution only where 2 steps at 480p is too slow.
LADDER: tuple[tuple[int, int, int], ...] = (
    (832, 480, 2), (832, 480, 1), (640, 352, 2), (640, 352, 1), (512, 288, 2), (512, 288, 1), (416, 240, 1),
)  # fmt: skip
WAN: Final = "wan-1.3b"  # every checkpoint `streamer models pull` offers is 1.3B; wan-14b is nowhere near live on one card


@dataclass(frozen=True)
class Card:
    """What the plan needs to know about a CUDA device (torch.cuda.get_device_properties)."""

    name: str
    total_memory: int  # bytes
    capability: tuple[int, int]
    sm_count: int

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)

    def tensor_tflops(self) -> float:
        """Datasheet dense bf16 (fp16 before Ampere) tensor rate with fp32 accumulation; 0 without tensor
        cores. GeForce cards accumulate in fp32 at half their advertised fp16 rate."""
        if self.capability < (7, 0):
            return 0.0
        known = [cc for cc in _TENSOR_RATE if cc <= self.capability]
        per_sm, ghz = _TENSOR_RATE[max(known)]
        rate = self.sm_count * per_sm * ghz * 1e9 / 1e12
        return rate / 2 if "geforce" in self.name.lower() else rate

    def line(self) -> str:
        cc = ".".join(map(str, self.capability))
        return f"{self.name} ({self.total_memory / GIB:.0f} GiB, compute {cc}, {self.sm_count} SMs, ≈{self.tensor_tflops():.0f} TFLOP/s bf16)"


def detect_card(index: int = 0) -> Card | None:
    """The CUDA device `index` as a Card, or None when torch sees no CUDA GPU."""
    import torch

    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    p = torch.cuda.get_device_properties(index)
    return Card(p.name, int(p.total_memory), (p.major, p.minor), int(p.multi_processor_count))


def chunk_tflop(m: ModelSettings) -> float:
    """FLOPs of one steady-state chunk (every denoising pass + the autoencoder), in TFLOP, from the cost
    model (streamer/model/cost.py): 14.27 for W1, 8.15 for W2, as FlopCounterMode counts them."""
    cfg = preset(m.preset)
    shape = ChunkShape.at(cfg, m.width, m.height, m.steps, effective_window(m)[0], frames_per_chunk(m))
    return chunk_cost(cfg, shape).total_flop / 1e12


def frames_per_chunk(m: ModelSettings) -> int:
    """Video frames a chunk turns out: the Wan autoencoder packs 4 frames into a latent, tiny's 1."""
    return 1 if m.preset == "tiny" else 4


def predicted_fps(card: Card, m: ModelSettings, *, fast_path: bool) -> float:
    """Output fps of `m` on `card` (see the module docstring for where the numbers come from)."""
    rate = card.tensor_tflops() * EFFICIENCY
    if rate <= 0:
        return 0.0
    gpu_s = chunk_tflop(m) / rate
    passes = 1 if m.mode == "stream-batch" else m.steps  # stream-batch runs every step in one batched pass
    host_s = 0.0 if fast_path else EAGER_HOST_S * passes  # launches overlap GPU work: the slower one sets the pace
    return frames_per_chunk(m) / max(gpu_s, host_s)


def usable_memory(card: Card) -> int:
    return max(card.total_memory - RESERVE, 0)


def triton_installed() -> bool:
    """The fast path's fused kernels need Triton (on Windows the triton-windows package provides it)."""
    return importlib.util.find_spec("triton") is not None


@dataclass(frozen=True)
class Plan:
    card: Card
    model: ModelSettings
    estimate: MemoryEstimate  # with the text encoder where the plan puts it
    fps: float | None  # predicted output fps (None for tiny: launch-bound, not FLOP-bound, on any card)
    notes: tuple[str, ...]  # why each choice, for the person running init

    def values(self) -> dict[str, str | int]:
        """The [model] keys init writes (with a text encoder folder configured or not, these stay right)."""
        keys = ["preset", "width", "height", "steps", "mode", "dtype", "device", "text_encoder_device"]
        values: dict[str, str | int] = {k: getattr(self.model, k) for k in keys}
        if self.model.preset == "tiny":  # a pulled Wan DiT would not load as tiny: back to the shipped weights
            values.update(checkpoint="", vae="", lora="", text_encoder="")
        return values


def _need(m: ModelSettings, text_encoder_on_card: bool) -> MemoryEstimate:
    """The doctor's estimate with or without umT5 on the card. A folder name is enough: without a
    config.json there the estimate uses umT5-XXL's size, and no folder means nothing of it on the card."""
    return estimate_memory(replace(m, text_encoder="umt5-xxl" if text_encoder_on_card else ""), on_gpu=True)


def plan_for(card: Card, *, fast_path: bool = True, live_fps: float = LIVE_FPS) -> Plan:
    """The settings for `card` (see the module docstring for the rule)."""
    dtype: Literal["bfloat16", "float16"] = "bfloat16" if card.bf16 else "float16"
    usable = usable_memory(card)
    notes = [f"{card.line()}; {usable / GIB:.1f} GiB for the model after {RESERVE / GIB:.0f} GiB for CUDA and the desktop"]
    if not card.bf16:
        notes.append("no bf16 on this card: float16 (if the picture turns black or noisy, set dtype = 'float32', about 3x slower)")
    best: tuple[float, ModelSettings] | None = None  # the fastest rung, to say how far from live the card is
    for width, height, steps in LADDER:
        m = ModelSettings(preset=WAN, width=width, height=height, steps=steps, dtype=dtype, device="cuda")
        m = _choose_mode(card, m, fast_path=fast_path, usable=usable)
        est = _need(m, text_encoder_on_card=False)
        fps = predicted_fps(card, m, fast_path=fast_path)
        if fits(est.total, usable) and (best is None or fps > best[0]):
            best = (fps, m)
        if fits(est.total, usable) and fps >= live_fps:
            return _place_text_encoder(card, m, fps, notes, usable)
    if card.tensor_tflops() == 0:
        why = f"no tensor cores (compute capability {card.capability[0]}.{card.capability[1]} < 7.0)"
    elif best is None:
        why = "no setting fits its memory"
    else:
        why = f"its fastest setting, {_setting(best[1])}, predicts ≈{best[0]:.0f} fps (< {live_fps:.0f})"
    notes.append(f"too slow or too small for {WAN} live: {why}; the tiny preset instead "
                 f"(set preset = '{WAN}' and a resolution from docs/setup.md to try Wan anyway)")  # fmt: skip
    m = ModelSettings(preset="tiny", width=512, height=512, dtype=dtype, device="cuda")
    return Plan(card, m, estimate_memory(m, on_gpu=True), None, tuple(notes))


def _setting(m: ModelSettings) -> str:
    return f"{m.width}x{m.height} at {m.steps} step{'s' if m.steps > 1 else ''}"


def _choose_mode(card: Card, m: ModelSettings, *, fast_path: bool, usable: int) -> ModelSettings:
    """stream-batch only when it is clearly faster: without the fast path on a card fast enough that
    launching kernels, not the GPU, sets the pace (it halves the launches per chunk at 2 steps, but adds
    steps - 1 chunks of latency and a KV cache per step). With the fast path, which captures either mode as
    one graph, sequential stays: its one batched forward saves no launches there, and the larger batch
    gained little on the GPU (H100, 2026-12-06, `streamer bench model W1 --mode stream-batch`: W1 40.4
    vs 41.2 ms per chunk, W2 24.5 vs 25.5) for about twice the glass-to-glass latency (docs/benchmarks.md)."""
    if fast_path or m.steps == 1:
        return m
    batched = replace(m, mode="stream-batch")
    faster = predicted_fps(card, batched, fast_path=False) >= 1.2 * predicted_fps(card, m, fast_path=False)
    fits_too = fits(_need(batched, text_encoder_on_card=False).total, usable)
    return batched if faster and fits_too else m


def _place_text_encoder(card: Card, m: ModelSettings, fps: float, notes: list[str], usable: int) -> Plan:
    on_card = _need(m, text_encoder_on_card=True)
    where: Literal["auto", "cpu", "cuda"]
    if on_card.total <= RESIDENT_SHARE * usable:
        where, est, why = "cuda", on_card, "stays on the card (a new prompt encodes in milliseconds)"
    elif fits(on_card.total, usable):
        where, est, why = "auto", on_card, "on the card to encode a prompt, freed when memory is tight"
    else:
        where, est = "cpu", _need(m, text_encoder_on_card=False)
        why = "on the CPU (11.4 GB in bf16 does not fit beside the DiT; a new prompt takes seconds)"
    m = replace(m, text_encoder_device=where)
    notes.append(f"{_setting(m)}, {m.mode}, {m.dtype}: "
                 f"predicted ≈{fps:.0f} fps, needs {est.line()}")  # fmt: skip
    notes.append(f"text encoder {why}")
    return Plan(card, m, est, fps, tuple(notes))


NO_CUDA = (
    "no CUDA GPU found (torch {version} {why}); install the CUDA build of PyTorch, e.g. "
    "pip install torch --index-url https://download.pytorch.org/whl/cu130, and an NVIDIA driver (docs/setup.md)"
)


def init_gpu(path: Path) -> int:
    """`streamer init --gpu [PATH]`: write the plan for the first CUDA card into the [model] table of PATH (created from
    the example config when missing; an existing file keeps its other keys, its comments and the weights
    `streamer models pull` set). Returns the exit code."""
    import torch

    card = detect_card()
    if card is None:
        why = "is a CPU-only build" if torch.version.cuda is None else "sees no GPU: check the driver with nvidia-smi"
        print(NO_CUDA.format(version=torch.__version__, why=why), file=sys.stderr)
        return 1
    from streamer.models.pull import ModelsError, update_config  # the one [model] editor (keeps comments)

    fast = triton_installed()
    plan = plan_for(card, fast_path=fast)
    try:
        created = update_config(path, plan.values())
    except ModelsError as e:
        print(e, file=sys.stderr)
        return 1
    for note in plan.notes:
        print(f"  {note}")
    if not fast:
        print("  Triton is not installed: the model runs eager PyTorch, several times slower; pip install triton "
              "(Windows: triton-windows) for the fast path, then run init --gpu again")  # fmt: skip
    print(f"{'wrote' if created else 'updated [model] in'} {path}; next: streamer doctor --config {path}")
    return 0
