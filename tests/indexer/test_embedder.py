"""The embedder's batching: how images are grouped never changes their vectors."""

import numpy as np

from origin_id.indexer import embedder as embedder_module
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.regions import DEFAULT_LAYOUT


def test_vectors_do_not_depend_on_the_batch_or_the_encoder_chunk(bundle, reference_images, monkeypatch):
    """On a CPU the encoder runs a few images at a time (``CPU_CHUNK``, for speed); a batch's
    vectors are each image's own, whatever the batch and the chunk."""
    images = reference_images[:5]
    embedder = Embedder(bundle, layout=DEFAULT_LAYOUT)
    together = embedder.reference_vectors(images)
    assert together.shape == (5, 1 + len(DEFAULT_LAYOUT), bundle.dim)
    alone = np.concatenate([embedder.reference_vectors([im]) for im in images])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    monkeypatch.setattr(embedder_module, "CPU_CHUNK", 16)  # one pass for the whole batch
    np.testing.assert_allclose(embedder.reference_vectors(images), together, atol=1e-4)
