import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from origin_id.indexer.store import Checkpoint
from origin_id.indexer.vector_index import VectorIndex


def unit(n, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class FixedStore:
    """The smallest ReferenceStore the index reads from (iter_embeddings + checkpoint)."""

    def __init__(self, ids, vectors):
        self.ids, self.vectors = np.asarray(ids, np.int64), vectors

    def iter_embeddings(self, model_version, after_id=0, batch=10_000):
        keep = self.ids > after_id
        if keep.any():
            yield self.ids[keep], self.vectors[keep]

    def checkpoint(self, model_version):
        return Checkpoint(model_version, len(self.ids), int(self.ids.max(initial=0)), int(self.ids.sum()))

    def embedding_ids(self, model_version):
        return self.ids

    def vectors_of(self, embedding_ids, model_version):
        where = {int(i): row for row, i in enumerate(self.ids)}
        return {int(i): self.vectors[where[int(i)]] for i in embedding_ids if int(i) in where}


@pytest.fixture
def index():
    idx = VectorIndex(16, use_gpu="off")
    yield idx
    idx.close()


def test_search_returns_ids_best_first_and_pads(index):
    v = unit(5)
    index.add(np.arange(10, 15), v)
    scores, ids = index.search(v[2:3], 7)
    assert ids[0, 0] == 12 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert list(ids[0, 5:]) == [-1, -1]
    assert np.all(np.diff(scores[0, :5]) <= 1e-6)


def test_remove_takes_effect_immediately(index):
    v = unit(3)
    index.add([1, 2, 3], v)
    assert index.remove([2, 99]) == 1
    _, ids = index.search(v[1:2], 3)
    assert 2 not in ids[0] and len(index) == 2


def test_concurrent_searches_are_batched_correctly(index):
    from concurrent.futures import ThreadPoolExecutor

    v = unit(50, seed=1)
    index.add(np.arange(50), v)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: index.search(v[i:i + 1], 1 + i % 3)[1][0, 0], range(50)))
    assert results == list(range(50))


def test_save_load_and_rebuild_when_stale_or_corrupt(tmp_path, index):
    v = unit(6, seed=2)
    store = FixedStore([1, 2, 3, 4, 5, 6], v)
    path = tmp_path / "index.faiss"
    assert index.load_or_rebuild(path, store, "m").startswith("rebuilt (no index file")
    fresh = VectorIndex(16, use_gpu="off")
    assert fresh.load_or_rebuild(path, store, "m") == "loaded" and len(fresh) == 6
    # Stale: the store gained a row since the checkpoint.
    store2 = FixedStore([1, 2, 3, 4, 5, 6, 7], unit(7, seed=2))
    assert "does not match the store" in fresh.load_or_rebuild(path, store2, "m")
    assert len(fresh) == 7
    # Corrupt: bytes changed on disk.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = VectorIndex(16, use_gpu="off")
    assert "corrupt" in again.load_or_rebuild(path, store2, "m")
    _, ids = again.search(unit(7, seed=2)[6:7], 1)
    assert ids[0, 0] == 7
    for idx in (fresh, again):
        idx.close()


def test_a_forged_index_file_with_a_matching_checkpoint_is_rebuilt(tmp_path, index):
    """Whoever can write the index file can write its checkpoint beside it: the file is
    trusted only when a sample of its vectors is what the database holds."""
    import faiss

    store = FixedStore([1, 2, 3], unit(3, seed=4))
    path = tmp_path / "index.faiss"
    index.load_or_rebuild(path, store, "m")
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    forged = faiss.IndexIDMap2(faiss.IndexFlatIP(16))
    forged.add_with_ids(unit(3, seed=99), np.array([1, 2, 3], np.int64))  # the same ids, other vectors
    faiss.write_index(forged, str(path))
    meta = Path(str(path) + ".json")
    fields = json.loads(meta.read_text())
    fields["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta.write_text(json.dumps(fields))
    loaded = VectorIndex(16, use_gpu="off")
    assert "is not the store's" in loaded.load_or_rebuild(path, store, "m")
    _, ids = loaded.search(unit(3, seed=4)[1:2], 1)
    assert ids[0, 0] == 2
    loaded.close()


def test_sync_picks_up_rows_added_and_removed_elsewhere(index):
    v = unit(4, seed=3)
    index.add([1, 2, 3], v[:3])
    store = FixedStore([1, 3, 4], v[[0, 2, 3]])
    assert index.sync(store, "m") == (1, 1)
    assert not index.contains(2) and index.contains(4)
