"""What a detector batch shows: crops and transforms that keep every map aligned, cached chunks."""

import numpy as np
import torch

from training.detector_samples import TRAIN_CROP, batch_tensors, load_train_chunks


def _painted_views(n: int, rows: slice, cols: slice):
    """``n`` 256 px samples whose only non-zero pixels (image, error and latent-grid LaRE map
    alike) are one painted rectangle: each map shows where a transform or crop put it."""
    masks = np.zeros((n, 256, 256), bool)
    masks[:, rows, cols] = True
    x = np.where(masks[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
    data = {"x": x, "error": (masks[:, None] * np.ones((1, 3, 1, 1))).astype(np.float16), "mask": masks,
            "label": np.ones(n, bool)}
    return data, np.repeat(masks[:, None, ::8, ::8], 4, 1).astype(np.float16)


def test_detector_augmentation_moves_every_map_together_and_relabels_cut_regions():
    n = 64
    data, lare = _painted_views(n, slice(8, 40), slice(8, 40))  # near one corner: some crops miss it
    rng = np.random.default_rng(0)
    labels = []
    for i in range(n):
        xi, err, lr, mask, y = batch_tensors(data, np.array([i]), lare, rng)
        assert xi.shape[-2:] == mask.shape[-2:] == err.shape[-2:] == (TRAIN_CROP, TRAIN_CROP)
        assert lr.shape[-2:] == (TRAIN_CROP // 8, TRAIN_CROP // 8)
        assert torch.equal(xi[0, 0] > 0, mask[0, 0] > 0) and torch.equal(err[0, 0] > 0, mask[0, 0] > 0)
        # The latent-grid map stays aligned with the pixels (crops are whole latent cells).
        assert torch.equal(lr[0, 0] > 0, mask[0, 0, ::8, ::8] > 0)
        assert float(y) == float(mask.sum() >= 16)
        labels.append(float(y))
    assert 0 < sum(labels) < n  # some crops keep the square, some cut it out


def test_training_samples_come_from_cached_chunks_with_their_own_seeds(tmp_path):
    """Chunks are built once (seed + 1000 k), reused on the next run, and joined in order,
    including metadata strings longer in a later chunk than in the first."""
    calls = []

    def build(n, seed):
        calls.append((n, seed))
        return {"x": np.full((n, 2), seed, np.int32), "meta": np.asarray(["m" * (1 + seed // 1000)] * n)}

    data = load_train_chunks(tmp_path, "tag", 5, 3, build, chunk_samples=2)
    assert calls == [(2, 3), (2, 1003), (1, 2003)]
    assert data["x"][:, 0].tolist() == [3, 3, 1003, 1003, 2003]
    assert data["meta"].tolist() == ["m", "m", "mm", "mm", "mmm"]
    again = load_train_chunks(tmp_path, "tag", 5, 3, build, chunk_samples=2)
    assert len(calls) == 3  # every chunk came from the cache
    assert all(np.array_equal(data[k], again[k]) for k in data)
