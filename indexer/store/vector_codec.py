"""How embedding vectors are stored in PostgreSQL's ``embeddings.vector`` column.

New vectors are written as little-endian float16: half the bytes of float32, so the
table, its backups and every rebuild read half as much. The embeddings are L2-normalised
(every component lies in [-1, 1]), where float16 keeps about three decimal digits: a
stored vector's cosine with its float32 original is above 0.99999, far finer than any
decision the service makes on a score. Rows written as float32 by earlier versions stay
readable: the format of a row is told by its byte length against its ``dim`` column
(``2 * dim`` float16, ``4 * dim`` float32), so no migration rewrites the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STORED = np.dtype("<f2")
_FORMATS = {2: np.dtype("<f2"), 4: np.dtype("<f4")}


def encode(vector: np.ndarray) -> bytes:
    """One vector as the column stores it (float16, little-endian)."""
    return np.ascontiguousarray(vector, dtype=STORED).tobytes()


def decode(blob: bytes, dim: int) -> np.ndarray:
    """One stored vector (float16 or float32) as float32."""
    width, rest = divmod(len(blob), dim) if dim > 0 else (0, 1)
    if rest or width not in _FORMATS:
        raise ValueError(f"a stored vector of {len(blob)} bytes does not hold {dim} float16 or float32 values")
    return np.frombuffer(blob, dtype=_FORMATS[width]).astype(np.float32)


def decode_many(blobs: Sequence[bytes], dims: Sequence[int]) -> np.ndarray:
    """Stored vectors of one dimension as a float32 matrix (n, dim); rows of either
    format may be mixed. The common case, one format throughout, is one ``frombuffer``."""
    if not blobs:
        return np.zeros((0, int(dims[0]) if len(dims) else 0), np.float32)
    dim = int(dims[0])
    if any(int(d) != dim for d in dims):
        raise ValueError("stored vectors of different dimensions cannot form one matrix")
    sizes = {len(b) for b in blobs}
    if len(sizes) == 1:
        width, rest = divmod(sizes.pop(), dim)
        if not rest and width in _FORMATS:
            return np.frombuffer(b"".join(blobs), dtype=_FORMATS[width]).reshape(len(blobs), dim).astype(np.float32)
    return np.stack([decode(b, dim) for b in blobs])
