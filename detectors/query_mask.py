"""``QueryMask``: the localized region at the query's size, without drawing it pixel by pixel.

The localizer's probability map has 64 x 64 cells over the query. It is cut at
the calibrated threshold at most ``MASK_WORK_SIDE`` pixels along each axis (the
"cut"); a larger query's mask is that cut scaled up by nearest neighbour. A
12 MP query's mask is then 12 million pixels made of at most 1024 x 1024
distinct ones, and everything the service answers follows from the cut:

* the area fraction and the bounding box, from how many query rows and columns
  each cut row and column covers;
* the PNG (8-bit grayscale, 255 = inpainted, at the query's size), written from
  the cut: a query row that repeats the one above is PNG's "Up" filter of zeros,
  compressed once and repeated, so the encoder touches the distinct rows only
  (drawing and encoding a 12 MP mask with Pillow costs many times more).

``array`` draws the full bool mask, for callers that want the pixels (the
benchmark, tests); the service never needs it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

#: Widest and tallest map a mask is cut from (``QueryMask.from_probability``). The map has 64
#: cells along each axis of the query, so a cell stays 16 px or more: no detail is lost,
#: and edges move by at most half a pixel of the cut.
MASK_WORK_SIDE = 1024

_ADLER_MOD = 65521
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Repeated "Up" rows are emitted in chunks of this many rows, each compressed once.
_RUN_CHUNK = 16


def upsample_probability(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A low-resolution probability map -> float map at ``size`` = (width, height), bilinear."""
    small = Image.fromarray(prob.astype(np.float32), mode="F")
    return np.asarray(small.resize(size, Image.Resampling.BILINEAR))


def source_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of ``n_out`` output positions, the input position it copies (nearest, centre-aligned)."""
    return ((2 * np.arange(n_out, dtype=np.int64) + 1) * n_in) // (2 * n_out)


@dataclass(frozen=True)
class QueryMask:
    """A bool cut (h, w) standing for the mask at ``size`` = (width, height), nearest-upscaled."""

    cut: np.ndarray
    size: tuple[int, int]

    def __post_init__(self):
        if self.cut.ndim != 2 or self.cut.dtype != bool:
            raise ValueError(f"cut must be a 2-D bool array, got {self.cut.dtype} {self.cut.shape}")
        w, h = self.size
        if w < self.cut.shape[1] or h < self.cut.shape[0]:
            raise ValueError(f"size {self.size} is smaller than the cut {self.cut.shape[::-1]}")

    @classmethod
    def from_probability(cls, prob: np.ndarray, size: tuple[int, int], threshold: float) -> QueryMask:
        """``prob`` upsampled bilinearly and cut at ``threshold`` (as the localizer's cut was
        calibrated), at ``size`` = (width, height) or, along an axis longer than
        ``MASK_WORK_SIDE``, at that length."""
        work = (min(size[0], MASK_WORK_SIDE), min(size[1], MASK_WORK_SIDE))
        return cls(upsample_probability(prob, work) >= threshold, (int(size[0]), int(size[1])))

    @classmethod
    def from_array(cls, mask: np.ndarray) -> QueryMask:
        """A mask drawn at full size already (the cut is the mask)."""
        mask = np.asarray(mask, dtype=bool)
        return cls(mask, (mask.shape[1], mask.shape[0]))

    @cached_property
    def _rows(self) -> np.ndarray:
        return source_index(self.size[1], self.cut.shape[0])

    @cached_property
    def _cols(self) -> np.ndarray:
        return source_index(self.size[0], self.cut.shape[1])

    @cached_property
    def array(self) -> np.ndarray:
        """The bool (height, width) mask at the query's size."""
        if self.cut.shape == (self.size[1], self.size[0]):
            return self.cut
        return self.cut[self._rows][:, self._cols]

    @property
    def area_fraction(self) -> float:
        row_weight = np.bincount(self._rows, minlength=self.cut.shape[0])
        col_weight = np.bincount(self._cols, minlength=self.cut.shape[1])
        marked = row_weight @ self.cut.astype(np.float64) @ col_weight  # exact: integers below 2**53
        return float(marked) / (self.size[0] * self.size[1])

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of the marked pixels at the query's size; None when none are marked."""
        ys, xs = np.flatnonzero(self.cut.any(1)), np.flatnonzero(self.cut.any(0))
        if not len(ys):
            return None
        # Query rows (columns) copying cut row ys[0] .. ys[-1]: the source index is non-decreasing.
        y0, y1 = np.searchsorted(self._rows, ys[0]), np.searchsorted(self._rows, ys[-1], side="right")
        x0, x1 = np.searchsorted(self._cols, xs[0]), np.searchsorted(self._cols, xs[-1], side="right")
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)

    def png(self) -> bytes:
        """8-bit grayscale PNG at the query's size, 255 = inpainted."""
        width, height = self.size
        rows = self._rows
        # A query row repeats the one above when it copies the same cut row, or the next one
        # holding the same values; every other row is written as a PNG "Sub" scanline.
        changed = np.ones(len(self.cut), bool)
        changed[1:] = (self.cut[1:] != self.cut[:-1]).any(1)
        same_as_above = np.zeros(height, bool)
        same_as_above[1:] = (rows[1:] == rows[:-1]) | ~changed[rows[1:]]
        # Each written row is the first copy of its cut row, so their cut rows are distinct.
        starts = np.flatnonzero(~same_as_above)
        ends = np.append(starts[1:], height)
        # "Sub" filter (byte 1): each byte minus its left neighbour, so a row is zeros but at its edges.
        wide = self.cut[rows[starts]][:, self._cols].astype(np.uint8) * 255
        sub = np.empty((len(starts), width + 1), np.uint8)
        sub[:, 0] = 1
        sub[:, 1] = wide[:, 0]
        np.subtract(wide[:, 1:], wide[:, :-1], out=sub[:, 2:])
        deflate = _SegmentedDeflate()
        up_row = b"\x02" + bytes(width)  # "Up" filter of a row equal to the one above: all zeros
        up_chunk, up_one = (_deflate_segment(up_row * n) for n in (_RUN_CHUNK, 1))
        for scanline, start, end in zip(sub, starts, ends):
            deflate.add(scanline.tobytes())
            chunks, rest = divmod(int(end - start - 1), _RUN_CHUNK)
            deflate.add_up_rows(up_chunk, width, _RUN_CHUNK, chunks)
            deflate.add_up_rows(up_one, width, 1, rest)
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
        return (_PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", deflate.finish())
                + _chunk(b"IEND", b""))


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _rle_deflate():
    """Raw deflate (no zlib wrapper) with run-length matches only (distance 1: masks are runs)
    and a small hash table, since every full flush clears it."""
    return zlib.compressobj(1, zlib.DEFLATED, -15, 1, zlib.Z_RLE)


def _deflate_segment(data: bytes) -> bytes:
    """Raw deflate blocks for ``data`` that reference nothing before them and end byte-aligned."""
    comp = _rle_deflate()
    return comp.compress(data) + comp.flush(zlib.Z_FULL_FLUSH)


class _SegmentedDeflate:
    """A zlib stream of compressed rows with precompressed segments spliced in.

    After a full flush a deflate stream is byte-aligned and later blocks never refer
    back, so a segment compressed once can be repeated between flushes; the zlib
    header and the Adler-32 of the uncompressed bytes are written here (repeats
    folded in by formula)."""

    def __init__(self):
        self._comp = _rle_deflate()
        self._parts = [b"\x78\x01"]
        self._a, self._b = 1, 0
        self._pending = False

    def add(self, data: bytes) -> None:
        self._parts.append(self._comp.compress(data))
        self._pending = True
        value = zlib.adler32(data, (self._b << 16) | self._a)
        self._a, self._b = value & 0xFFFF, value >> 16

    def add_up_rows(self, segment: bytes, width: int, rows_per_segment: int, repeats: int) -> None:
        """``repeats`` copies of ``segment``, the compression of ``rows_per_segment`` rows of
        b"\\x02" followed by ``width`` zeros (an "Up" scanline repeating the row above)."""
        if repeats <= 0:
            return
        if self._pending:
            self._parts.append(self._comp.flush(zlib.Z_FULL_FLUSH))
            self._pending = False
        self._parts.extend([segment] * repeats)
        # Adler-32 over k rows of (2, 0 x W): A grows by 2 per row; B by (W + 1) * A after each.
        k, w1 = repeats * rows_per_segment, width + 1
        self._b = (self._b + w1 * (k * self._a + k * (k + 1))) % _ADLER_MOD
        self._a = (self._a + 2 * k) % _ADLER_MOD

    def finish(self) -> bytes:
        return b"".join([*self._parts, self._comp.flush(zlib.Z_FINISH), struct.pack(">I", (self._b << 16) | self._a)])
