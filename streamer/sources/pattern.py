"""Test-pattern source (FFmpeg lavfi through PyAV) with a machine-readable frame counter.

The counter is a block code burnt into the top-left corner: an 8x6 grid of black/white cells whose
top row and left column alternate (the guard, which also tells the reader the cell size), and 35 data
cells holding the frame index (24 bits), a CRC-8 and 3 zero bits. A reading is accepted only when
every cell is clearly black or white and the CRC matches, so a wrong guess of the scale is rejected. Cells are big (16 px at 640x360) and read from
their centres against levels measured on the guard, so the code survives x264 compression and
scaling; benches and tests read it back from the far end of the pipeline to measure latency and drops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import av
import numpy as np

from streamer import frames as frames_mod
from streamer.frames import Frame
from streamer.sources import Source, SourceError, to_rgb

COLS, ROWS = 8, 6
INDEX_BITS = 24
CRC_BITS = 8
PAD_BITS = 3
MAX_CELL = 16
_MIN_MARGIN = 40.0  # luma gap (0-255) between the darkest guard white and the lightest guard black


def _guard_cells() -> list[tuple[int, int, bool]]:
    """(row, col, is_white) for the top row and the left column."""
    cells = [(0, c, c % 2 == 0) for c in range(COLS)]
    cells += [(r, 0, r % 2 == 0) for r in range(1, ROWS)]
    return cells


_GUARD = _guard_cells()
_DATA = [(r, c) for r in range(1, ROWS) for c in range(1, COLS)]  # 35 cells, row-major
assert len(_DATA) == INDEX_BITS + CRC_BITS + PAD_BITS


def _crc8(value: int) -> int:
    """CRC-8 (polynomial x^8 + x^2 + x + 1) of the 24-bit value, MSB first."""
    crc = 0
    for i in range(INDEX_BITS - 1, -1, -1):
        top = ((crc >> 7) & 1) ^ ((value >> i) & 1)
        crc = (crc << 1) & 0xFF
        if top:
            crc ^= 0x07
    return crc


def _bits(index: int) -> list[int]:
    value = index % (1 << INDEX_BITS)
    word = ((value << CRC_BITS) | _crc8(value)) << PAD_BITS
    return [(word >> i) & 1 for i in range(len(_DATA) - 1, -1, -1)]


def cell_size(width: int, height: int) -> int:
    """Pixel size of one code cell in a frame of this size (16, or less in small frames)."""
    return min(MAX_CELL, width // COLS, height // ROWS)


def stamp_index(pixels: np.ndarray, index: int) -> None:
    """Draw `index` (mod 2**24) as the block code in the top-left corner of HxWx3 uint8 `pixels`, in place."""
    h, w = pixels.shape[:2]
    c = cell_size(w, h)
    if c < 2:
        raise ValueError(f"a {w}x{h} frame is too small for the frame-counter code (needs {2 * COLS}x{2 * ROWS})")
    for r, col, white in _GUARD:
        pixels[r * c:(r + 1) * c, col * c:(col + 1) * c] = 255 if white else 0
    for (r, col), bit in zip(_DATA, _bits(index), strict=True):
        pixels[r * c:(r + 1) * c, col * c:(col + 1) * c] = 255 if bit else 0


def read_stamp(pixels: np.ndarray) -> int | None:
    """The index stamped by `stamp_index`, or None when no valid code is found.

    Works on the frame as stamped or after compression and scaling (the cell size is searched for,
    separately in x and y when the aspect ratio changed).
    """
    img = np.asarray(pixels)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected HxWx3 pixels, got shape {img.shape}")
    h, w = img.shape[:2]
    span_w, span_h = min(w, COLS * 4 * MAX_CELL), min(h, ROWS * 4 * MAX_CELL)  # up to 4x upscaled codes
    luma = img[:span_h, :span_w, :3].astype(np.float32).mean(axis=2)
    table = np.zeros((span_h + 1, span_w + 1), np.float64)
    table[1:, 1:] = luma.cumsum(0).cumsum(1)

    expected = float(cell_size(w, h))
    sizes = np.geomspace(2.0, 4.0 * MAX_CELL, 96)
    for sx, sy in (
        (np.array([expected]), np.array([expected])),  # same size as stamped: the usual case
        (sizes, sizes),  # scaled, aspect kept
        tuple(np.meshgrid(sizes, sizes)),  # scaled, aspect changed
    ):
        found = _decode(table, np.ravel(sx), np.ravel(sy))
        if found is not None:
            return found
    return None


def _decode(table: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> int | None:
    """Try every candidate cell size (sx[k], sy[k]); the best guard margin with a valid CRC wins."""
    span_h, span_w = table.shape[0] - 1, table.shape[1] - 1
    fits = (sx * COLS <= span_w + 0.5) & (sy * ROWS <= span_h + 0.5) & (sx >= 1.5) & (sy >= 1.5)
    sx, sy = sx[fits], sy[fits]
    if sx.size == 0:
        return None
    cells = _GUARD_RC + _DATA_RC
    rows = np.array([r for r, _ in cells], np.float64)[None, :]
    cols = np.array([c for _, c in cells], np.float64)[None, :]
    sxk, syk = sx[:, None], sy[:, None]
    x0 = np.floor((cols + 0.25) * sxk).astype(np.int64)
    x1 = np.maximum(x0 + 1, np.ceil((cols + 0.75) * sxk).astype(np.int64)).clip(max=span_w)
    y0 = np.floor((rows + 0.25) * syk).astype(np.int64)
    y1 = np.maximum(y0 + 1, np.ceil((rows + 0.75) * syk).astype(np.int64)).clip(max=span_h)
    sums = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    means = sums / ((y1 - y0) * (x1 - x0))
    g = len(_GUARD)
    guard, data = means[:, :g], means[:, g:]
    white = np.array([wh for _, _, wh in _GUARD])
    margin = guard[:, white].min(axis=1) - guard[:, ~white].max(axis=1)
    threshold = (guard[:, white].mean(axis=1) + guard[:, ~white].mean(axis=1)) / 2.0
    for k in np.argsort(-margin)[:3]:
        if margin[k] < _MIN_MARGIN:
            break
        if np.abs(data[k] - threshold[k]).min() < margin[k] / 4:  # a cell neither black nor white: wrong scale
            continue
        word = 0
        for bit in data[k] > threshold[k]:
            word = (word << 1) | int(bit)
        if word & ((1 << PAD_BITS) - 1):
            continue
        word >>= PAD_BITS
        value, crc = word >> CRC_BITS, word & ((1 << CRC_BITS) - 1)
        if _crc8(value) == crc:
            return value
    return None


_GUARD_RC = [(r, c) for r, c, _ in _GUARD]
_DATA_RC = list(_DATA)


class PatternSource(Source):
    """An FFmpeg lavfi test pattern (testsrc2 has a moving element), paced in real time at video.fps,
    with the frame index burnt in (source.stamp)."""

    name = "pattern"

    def describe(self) -> str:
        return f"pattern {self.settings.source.pattern}"

    def _spec(self) -> str:
        pattern = self.settings.source.pattern
        joiner = ":" if "=" in pattern else "="
        return f"{pattern}{joiner}size={self.width}x{self.height}:rate={self.fps:g}"

    def _read(self, halt: threading.Event) -> Iterator[Frame]:
        stamp = self.settings.source.stamp
        if stamp and cell_size(self.width, self.height) < 2:
            raise SourceError(f"video size {self.width}x{self.height} is too small for the frame counter; "
                              "set source.stamp = false or a bigger video size")
        try:
            container = av.open(self._spec(), format="lavfi")
        except av.FFmpegError as e:
            raise SourceError(f"lavfi cannot make pattern {self._spec()!r}: {e} "
                              "(use an FFmpeg source filter name such as testsrc2, smptebars, rgbtestsrc)") from e
        try:
            anchor = frames_mod.now()
            n = 0
            for decoded in container.decode(video=0):
                pixels = to_rgb(decoded, self.width, self.height)
                if stamp:
                    stamp_index(pixels, self.next_index)
                wait = anchor + n / self.fps - frames_mod.now()
                if wait > 0:
                    if halt.wait(wait):
                        return
                elif wait < -0.5:  # fell far behind (machine busy): restart the clock instead of bursting
                    anchor = frames_mod.now() - n / self.fps
                n += 1
                yield self._emit(pixels, pts=self.next_index / self.fps)
                if halt.is_set():
                    return
        finally:
            container.close()
