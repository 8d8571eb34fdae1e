"""The evaluator's quality mode: per look, how close the output comes to the look's target (PSNR) and
how much of the input's structure it keeps (edge score), against the untouched input, and a contact
sheet to see it (`python -m streamer.train.evaluate --mode quality`, docs/training.md).

Edge-structure score, `edge_corr(a, b)` of two uint8 RGB frames:
    edges(f) = sqrt(gx^2 + gy^2), (gx, gy) = Sobel (3x3, /4, replicated border) of G(Y(f)),
               Y = Rec.601 luma in [0, 1], G = Gaussian blur of sigma 1 px (pixel noise is not structure);
    edge_corr(a, b) = Pearson correlation of edges(a) and edges(b) over the frame's pixels, in [-1, 1];
               NaN (undefined) when either edge map is flat (std < 1e-6), e.g. a uniform frame.
A look's score is the mean over the frames that have a defined value (NaN if none). It ignores the
edges' sign and colour: a negative, a recoloured or a relit picture with every outline in place
scores 1; blurred, moved, lost or invented outlines lower it towards 0 and below.

Per look the report gives the output's PSNR against the target and the input's own ("no transform"),
the gain, edge_corr(output, input), edge_corr(target, input) (how much structure the look itself
keeps: the reference for the output's score), edge_corr(output, target) (does the output draw the
look's lines) and the verdict against the target of issue 14: gain >= 3 dB and edge_corr >= 0.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from streamer.config import ModelSettings, effective_strength
from streamer.model.condition import luma
from streamer.model.loading import LoadedParts
from streamer.train.data import BuiltinRecipe
from streamer.train.heldout import Progress, heldout_segments, make_engine, nanmean, run_stream
from streamer.train.looks import LOOKS, gaussian_blur, sobel
from streamer.train.media import to_unit

EDGE_BLUR_SIGMA = 1.0
FLAT_STD = 1e-6  # an edge map with less spread than this has no structure to correlate
TARGET_GAIN_DB = 3.0  # the output beats the untouched input by this much against the look's target ...
TARGET_EDGE_CORR = 0.6  # ... and keeps at least this much of the input's edge structure
EDGE_SCORE = ("Pearson correlation over pixels of the Sobel gradient magnitude of the luma (Rec.601, blurred with "
              f"sigma {EDGE_BLUR_SIGMA:g} px), mean over frames; NaN where an edge map is flat")  # fmt: skip


# ---- the edge score -------------------------------------------------------------------------------------
def edges(frames: Tensor) -> Tensor:
    """uint8 RGB frames [..., H, W, 3] -> edge maps [..., H, W] (float32; see the module docstring)."""
    lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
    x = to_unit(frames.reshape(-1, h, w, 3))
    gx, gy = sobel(gaussian_blur(luma(x), EDGE_BLUR_SIGMA))
    return (gx.square() + gy.square()).sqrt().reshape(*lead, h, w)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of a and b over their last two dimensions ([..., H, W] -> [...], float32);
    NaN where either has a standard deviation below FLAT_STD."""
    a, b = a.flatten(-2).double(), b.flatten(-2).double()
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    va, vb = a.square().mean(-1), b.square().mean(-1)
    r = (a * b).mean(-1) / (va * vb).sqrt().clamp(min=1e-300)
    flat = (va < FLAT_STD**2) | (vb < FLAT_STD**2)
    return torch.where(flat, torch.full_like(r, float("nan")), r.clamp(-1, 1)).float()


def edge_corr(a: Tensor, b: Tensor) -> Tensor:
    """Edge-structure score of uint8 RGB frames a vs b ([..., H, W, 3] -> [...])."""
    return pearson(edges(a), edges(b))


def passes(gain_db: float, edge: float) -> bool:
    """The quality target: gain >= TARGET_GAIN_DB and edge score >= TARGET_EDGE_CORR (NaN fails)."""
    return gain_db >= TARGET_GAIN_DB and edge >= TARGET_EDGE_CORR


# ---- running one look -----------------------------------------------------------------------------------
@dataclass
class SheetRow:
    """One look's row of the contact sheet: (input, target, output) uint8 [H, W, 3] CPU frames (None where
    the engine gave no output) and the caption under the look's name."""

    look: str
    caption: list[str]
    frames: list[tuple[Tensor, Tensor, Tensor] | None] = field(default_factory=list)


class _Collector:
    """run_stream's on_output: per-frame edge scores on the device, and the frames the sheet shows."""

    def __init__(self, frames: int, device: torch.device, picks: list[int]) -> None:
        def empty() -> Tensor:
            return torch.full((frames,), float("nan"), dtype=torch.float32, device=device)

        self.out_in, self.target_in, self.out_target = empty(), empty(), empty()
        self.picks, self.kept = set(picks), {}  # type: ignore[var-annotated]

    def __call__(self, index: int, inp: Tensor, target: Tensor, out: Tensor) -> None:
        e_in, e_target, e_out = edges(torch.stack([inp, target, out]))
        self.out_in[index] = pearson(e_out, e_in)
        self.target_in[index] = pearson(e_target, e_in)
        self.out_target[index] = pearson(e_out, e_target)
        if index in self.picks:
            self.kept[index] = (inp.cpu(), target.cpu(), out.cpu())


def sheet_picks(frames: int, count: int) -> list[int]:
    """`count` stream frames evenly spread over the stream (the middles of equal parts: other media)."""
    return sorted({min(frames - 1, int((j + 0.5) * frames / count)) for j in range(max(0, count))})


def evaluate_quality(
    parts: LoadedParts, m: ModelSettings, recipe: BuiltinRecipe, looks: list[str], frames: int, seed: int,
    progress: Progress, sheet_frames: int = 3,
) -> tuple[dict[str, Any], list[SheetRow]]:  # fmt: skip
    """Per look, a fresh engine on the same first `frames` held-out frames at the model's settings
    (its steps, the preset's strength unless set): the scores of the module docstring and a sheet row."""
    segments = list(heldout_segments(recipe, frames, seed, parts.device))
    picks = sheet_picks(frames, sheet_frames)
    per_look: dict[str, dict[str, Any]] = {}
    rows = []
    for look in looks:
        engine = make_engine(m, parts)
        collect = _Collector(frames, parts.device, picks)
        prompt = LOOKS[look].prompts[0]
        scores, identity = run_stream(engine, segments, look, prompt, frames, progress, collect)
        engine.close()
        psnr, base = nanmean(scores.cpu()), nanmean(identity.cpu())
        edge = nanmean(collect.out_in.cpu())
        per_look[look] = {
            "prompt": prompt, "psnr": psnr, "input_psnr": base, "gain_db": psnr - base, "edge_corr": edge,
            "target_edge_corr": nanmean(collect.target_in.cpu()),
            "edge_corr_vs_target": nanmean(collect.out_target.cpu()),
            "pass": passes(psnr - base, edge), "missing_frames": int(torch.isnan(scores).sum()),
        }  # fmt: skip
        rows.append(SheetRow(look, _caption(per_look[look]), [collect.kept.get(i) for i in picks]))
    keys = ("psnr", "input_psnr", "gain_db", "edge_corr", "target_edge_corr", "edge_corr_vs_target")
    mean = {k: sum(v[k] for v in per_look.values()) / len(per_look) for k in keys}
    result = {
        "per_look": per_look, "mean": mean, "passed": sum(v["pass"] for v in per_look.values()),
        "target": {"gain_db": TARGET_GAIN_DB, "edge_corr": TARGET_EDGE_CORR}, "edge_score": EDGE_SCORE,
        "steps": m.steps, "strength": effective_strength(m), "sheet_frames": picks,
    }  # fmt: skip
    return result, rows


def _caption(v: dict[str, Any]) -> list[str]:
    return [f"{fmt_number(v['psnr'])} dB (input {fmt_number(v['input_psnr'])})", f"gain {fmt_number(v['gain_db'], True)} dB",
            f"edges {fmt_number(v['edge_corr'])} (look {fmt_number(v['target_edge_corr'])})", "PASS" if v["pass"] else "fail"]  # fmt: skip


# ---- the contact sheet ----------------------------------------------------------------------------------
LABEL_W, HEADER_H, GAP, BG, FG = 190, 24, 8, (24, 24, 24), (235, 235, 235)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def contact_sheet(rows: list[SheetRow], path: Path, tile: int = 0) -> Path:
    """Write the PNG: a row per look (its name and scores on the left), for each picked frame the triple
    input | look target | output. tile > 0 scales each frame to that many pixels on its longer side."""
    from PIL import Image, ImageDraw

    first = next((f for r in rows for f in r.frames if f is not None), None)
    if first is None:
        raise ValueError("no output frames to put on a contact sheet")
    h, w = first[0].shape[:2]
    if tile > 0:
        h, w = max(1, round(h * tile / max(h, w))), max(1, round(w * tile / max(h, w)))
    n = max(len(r.frames) for r in rows)
    sheet = Image.new("RGB", (LABEL_W + n * (3 * w + GAP), HEADER_H + len(rows) * (h + GAP)), BG)
    draw, big, small = ImageDraw.Draw(sheet), _font(18), _font(13)
    for j in range(n):
        for k, name in enumerate(("input", "look target", "output")):
            draw.text((LABEL_W + j * (3 * w + GAP) + k * w + 4, 4), name, fill=FG, font=small)
    for i, row in enumerate(rows):
        y = HEADER_H + i * (h + GAP)
        draw.text((8, y + 4), row.look, fill=FG, font=big)
        for k, line in enumerate(row.caption):
            draw.text((8, y + 30 + 17 * k), line, fill=FG, font=small)
        for j, triple in enumerate(row.frames):
            for k, frame in enumerate(triple or ()):
                image = Image.fromarray(frame.numpy())
                if image.size != (w, h):
                    image = image.resize((w, h), Image.Resampling.LANCZOS)
                sheet.paste(image, (LABEL_W + j * (3 * w + GAP) + k * w, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


# ---- the table ------------------------------------------------------------------------------------------
def fmt_number(x: float, sign: bool = False) -> str:
    """Two decimals (with a sign if asked), "n/a" for NaN/inf: the tables' cells."""
    return "n/a" if not math.isfinite(x) else (f"{x:+.2f}" if sign else f"{x:.2f}")


def markdown(results: list[dict[str, Any]]) -> list[str]:
    """Table lines of quality-mode runs: one row per (run, look) and a mean row per run."""
    lines = ["| model | look | input PSNR | output PSNR | gain (≥ 3) | edge corr (≥ 0.6) | look's edge corr "
             "| output vs look's edges | pass |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        q = r["quality"]
        for look, v in [*q["per_look"].items(), ("mean", q["mean"])]:
            verdict = f"{q['passed']}/{len(q['per_look'])}" if look == "mean" else ("yes" if v["pass"] else "no")
            lines.append(f"| {r['label']} | {look} | {fmt_number(v['input_psnr'])} | {fmt_number(v['psnr'])} | {fmt_number(v['gain_db'], True)} "
                         f"| {fmt_number(v['edge_corr'])} | {fmt_number(v['target_edge_corr'])} | {fmt_number(v['edge_corr_vs_target'])} "
                         f"| {verdict} |")  # fmt: skip
    return lines
