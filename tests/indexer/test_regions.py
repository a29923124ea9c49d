"""Region vectors: references indexed by crops of themselves, cut from their latent."""

import numpy as np
import pytest
import torch

from origin_id.indexer.embedder import Embedder
from origin_id.indexer.regions import DEFAULT_LAYOUT, region_latents, windows


def test_windows_sit_at_their_anchors():
    assert windows(0.5, [(0, 0), (0.5, 0.5), (1, 1)]) == [(0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75),
                                                          (0.5, 0.5, 1.0, 1.0)]
    assert all(0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 for x0, y0, x1, y1 in DEFAULT_LAYOUT)


def test_a_region_is_the_latent_cut_and_resized_back():
    latents = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    out = region_latents(latents, [(0, 0, 1, 1), (0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)])
    assert out.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(out[:, 0], latents)  # the whole image is itself
    # The top-left quarter doubled in size: its corners hold the quarter's corner cells.
    assert out[0, 1, 0, 0, 0] == latents[0, 0, 0, 0] and out[0, 2, 0, -1, -1] == latents[0, 0, -1, -1]
    assert region_latents(latents, []).shape == (2, 0, 4, 8, 8)


def test_references_get_a_vector_per_region_and_crops_meet_their_region(bundle, reference_images):
    embedder = Embedder(bundle, layout=DEFAULT_LAYOUT)
    images = reference_images[:6]
    vectors = embedder.reference_vectors(images)
    assert vectors.shape == (6, 1 + len(DEFAULT_LAYOUT), bundle.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-4)
    # Row 0 is the whole image, as the plain embedding.
    np.testing.assert_allclose(vectors[:, 0], Embedder(bundle).embed(images), atol=1e-4)
    assert Embedder(bundle).reference_vectors(images).shape == (6, 1, bundle.dim)
    # A 55% centre crop (the last region) is much nearer its region vector than the whole image.
    crops = []
    for im in images:
        w, h = im.size
        crops.append(im.crop((round(w * 0.225), round(h * 0.225), round(w * 0.775), round(h * 0.775))))
    queries = embedder.embed(crops)
    to_region = (queries * vectors[:, -1]).sum(-1)
    to_whole = (queries * vectors[:, 0]).sum(-1)
    assert (to_region > to_whole + 0.1).all(), (to_region, to_whole)
    assert to_region.mean() > 0.8


@pytest.mark.parametrize("layout", [(), DEFAULT_LAYOUT])
def test_empty_batches_keep_their_shape(bundle, layout):
    assert Embedder(bundle, layout=layout).reference_vectors([]).shape == (0, 1 + len(layout), bundle.dim)
