"""Same picture, other file: PDQ twins.

Packages ship one picture in several files (sizes, recompressions, copies in two
folders), so "this query's origin is not in the gallery" must be judged by the picture,
not by the file. PDQ (Meta's perceptual hash) calls two images the same picture at a
Hamming distance of at most 31 of 256 bits, when both hashes have quality >= 50 (below
that the hash of a flat image says little). Both the open-set calibration and the
held-out benchmark judge their no-origin queries this way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

PDQ_MATCH_DISTANCE = 31
MIN_QUALITY = 50


def pdq_hashes(images: Iterable[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 256) bool hashes and (n,) qualities."""
    import pdqhash  # the train and bench extras install it

    hashes, quality = [], []
    for im in images:
        h, q = pdqhash.compute(np.asarray(im.convert("RGB")))
        hashes.append(h.astype(bool))
        quality.append(q)
    return np.array(hashes, bool).reshape(-1, 256), np.array(quality, np.float64)


def twins(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(len(a), len(b)) bool: PDQ calls a[i] and b[j] the same picture."""
    (ah, aq), (bh, bq) = a, b
    a_bits, b_bits = ah.astype(np.float32), bh.astype(np.float32)
    distance = a_bits @ (1 - b_bits).T + (1 - a_bits) @ b_bits.T
    return (distance <= PDQ_MATCH_DISTANCE) & (aq[:, None] >= MIN_QUALITY) & (bq[None, :] >= MIN_QUALITY)
