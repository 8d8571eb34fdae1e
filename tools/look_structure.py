"""How much of the input's structure each look's target keeps, on the held-out stream, without a model.

    python tools/look_structure.py                       # the looks of streamer/train/looks.py
    python tools/look_structure.py --against 73d49ad     # beside the looks.py of a git revision
    python tools/look_structure.py --against 73d49ad --sheet /tmp/looks.png

Per look, over the first `--frames` frames of the held-out stream (the evaluator's: `--stream-seed`,
`--width` x `--height`): the target's edge corr against its input (streamer.train.quality.edge_corr, the
score the output must reach >= 0.6 in issue 14; a target below that fails for a perfect model) and the
input's own PSNR against the target ("no transform": a model must beat it by >= 3 dB, so it should be
low). This is the tool that justified redefining neon, comic, pixel and sketch (issue 14, 2026-12-06).
`--sheet` writes input | target (| target at REV) for a few frames spread over the stream, a row per look.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.train.data import BuiltinRecipe  # noqa: E402
from streamer.train.heldout import heldout_segments, nanmean, psnr, to_uint8  # noqa: E402
from streamer.train.looks import LOOKS  # noqa: E402
from streamer.train.media import to_unit  # noqa: E402
from streamer.train.quality import edge_corr, sheet_picks  # noqa: E402

Render = Callable[[Tensor], Tensor]  # uint8 [N, H, W, 3] -> uint8 [N, H, W, 3]
CHUNK = 100  # frames per batched look call: bounded memory at any stream length


def renderers(looks_module: ModuleType) -> dict[str, Render]:
    """Each look of a looks module (its LOOKS) as a uint8 -> uint8 renderer, as the evaluator renders."""
    table = looks_module.LOOKS

    def make(name: str) -> Render:
        return lambda x: to_uint8(table[name].apply(to_unit(x)).clamp(0, 1))

    return {name: make(name) for name in table}


def looks_at(rev: str) -> dict[str, Render]:
    """The looks of streamer/train/looks.py at git revision `rev` (imported from its text)."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:streamer/train/looks.py"],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"looks_{rev.replace('/', '_')}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return renderers(module)


def measure(inputs: Tensor, render: Render) -> tuple[float, float]:
    """(mean target edge corr vs input, mean input PSNR vs target) over uint8 frames [N, H, W, 3]."""
    corr, db = [], []
    for x in inputs.split(CHUNK):
        y = render(x)
        corr.append(edge_corr(y, x))
        db.append(psnr(x, y))
    return nanmean(torch.cat(corr)), nanmean(torch.cat(db))


def write_sheet(path: Path, inputs: Tensor, columns: dict[str, dict[str, Render]], frames: int) -> None:
    """A row per look: for each picked frame, the input then the target of each column's looks."""
    from PIL import Image, ImageDraw

    picks = sheet_picks(inputs.shape[0], frames)
    h, w = inputs.shape[1:3]
    names = list(next(iter(columns.values())))
    tiles_per_frame = 1 + len(columns)
    label_w, head_h, gap = 110, 20, 6
    sheet = Image.new("RGB", (label_w + len(picks) * (tiles_per_frame * w + gap), head_h + len(names) * h), (24,) * 3)
    draw = ImageDraw.Draw(sheet)
    heads = ["input", *columns]
    for j in range(len(picks)):
        for k, head in enumerate(heads):
            draw.text((label_w + j * (tiles_per_frame * w + gap) + k * w + 4, 4), head, fill=(235,) * 3)
    for i, name in enumerate(names):
        draw.text((6, head_h + i * h + h // 2), name, fill=(235,) * 3)
        for j, p in enumerate(picks):
            x = inputs[p : p + 1]
            tiles = [x[0], *(col[name](x)[0] for col in columns.values() if name in col)]
            for k, tile in enumerate(tiles):
                at = (label_w + j * (tiles_per_frame * w + gap) + k * w, head_h + i * h)
                sheet.paste(Image.fromarray(tile.numpy()), at)
    sheet.save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1200, help="held-out stream frames (default 1200: all 8 media)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--stream-seed", type=int, default=1, help="the held-out stream's seed (the evaluator's default)")
    p.add_argument("--against", metavar="REV", help="also measure looks.py at this git revision")
    p.add_argument("--sheet", type=Path, help="write a contact sheet PNG of input | targets")
    p.add_argument("--sheet-frames", type=int, default=3)
    args = p.parse_args(argv)

    recipe = BuiltinRecipe(tuple(LOOKS), (args.height, args.width), part="heldout")
    segments = list(heldout_segments(recipe, args.frames, args.stream_seed))
    inputs = torch.cat([s.inputs for s in segments])
    media = sorted({s.source.path.name for s in segments})
    print(f"{inputs.shape[0]} held-out frames, {args.width}x{args.height}, {len(media)} media: {', '.join(media)}")

    columns = {"now": renderers(sys.modules["streamer.train.looks"])}
    if args.against:
        columns = {args.against: looks_at(args.against), **columns}
    print("| look | " + " | ".join(f"{c} edge corr | {c} input PSNR" for c in columns) + " |")
    print("|---|" + "---|---|" * len(columns))
    with torch.no_grad():
        for name in dict.fromkeys(n for col in columns.values() for n in col):
            cells = []
            for col in columns.values():
                corr, db = measure(inputs, col[name]) if name in col else (float("nan"), float("nan"))
                cells += [f"{corr:.2f}", f"{db:.2f}"]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        if args.sheet:
            write_sheet(args.sheet, inputs, columns, args.sheet_frames)
            print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
