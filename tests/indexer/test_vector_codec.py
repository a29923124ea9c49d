"""The stored vector format: float16 written, float16 or float32 read, anything else refused."""

import numpy as np
import pytest

from origin_id.indexer.store import vector_codec


def unit_vectors(n, dim, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_float16_halves_the_bytes_and_keeps_cosines_of_unit_vectors():
    vectors = unit_vectors(200, 512)
    blobs = [vector_codec.encode(v) for v in vectors]
    assert {len(b) for b in blobs} == {512 * 2}
    back = vector_codec.decode_many(blobs, [512] * 200)
    assert back.dtype == np.float32 and back.shape == (200, 512)
    cosines = np.sum(back * vectors, axis=1) / np.linalg.norm(back, axis=1)
    assert cosines.min() > 0.99999
    # Orderings of scores against a query survive: what ranking needs.
    query = unit_vectors(1, 512, seed=1)[0]
    assert np.abs(back @ query - vectors @ query).max() < 1e-3


def test_float32_rows_decode_exactly_and_formats_mix():
    vectors = unit_vectors(3, 16)
    old = vectors[0].astype("<f4").tobytes()
    np.testing.assert_array_equal(vector_codec.decode(old, 16), vectors[0])
    mixed = vector_codec.decode_many([old, vector_codec.encode(vectors[1])], [16, 16])
    np.testing.assert_array_equal(mixed[0], vectors[0])
    np.testing.assert_array_equal(mixed[1], vectors[1].astype(np.float16))


def test_a_blob_of_the_wrong_length_or_dims_that_differ_are_refused():
    with pytest.raises(ValueError, match="12 bytes"):
        vector_codec.decode(b"x" * 12, 16)
    with pytest.raises(ValueError, match="different dimensions"):
        vector_codec.decode_many([b"x" * 32, b"x" * 16], [16, 8])
    assert vector_codec.decode_many([], []).shape == (0, 0)
