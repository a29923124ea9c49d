"""The vector index over a real PostgreSQL: builds from a snapshot, the change log, the
index kinds, collection filters, checkpoints and the checks that keep a forged file out."""

import json

import faiss
import numpy as np
import pytest

from origin_id.indexer import index_plan
from origin_id.indexer import vector_index as vi
from origin_id.indexer.store import NewReference
from origin_id.indexer.store.feed import IndexFeed
from origin_id.indexer.store.migrate import upgrade
from origin_id.indexer.store.postgres import PostgresStore

DIM, MODEL = 32, "m"


def unit(n, seed=0, dim=DIM):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(database_url):
    s = PostgresStore.from_url(database_url)
    upgrade(s.engine)
    yield s
    s.close()


@pytest.fixture
def feed(store):
    return IndexFeed(store)


def write(store, vectors, collection="c", prefix="r"):
    """References with these vectors; their embedding ids."""
    items = [NewReference(collection=collection, sha256=f"{prefix}-{i:08d}".ljust(64, "0"), width=1, height=1,
                          vectors=v[None]) for i, v in enumerate(vectors)]
    ids = []
    for start in range(0, len(items), 500):
        ids += [r.embeddings[0][0] for r in store.write(items[start:start + 500], MODEL)]
    return np.asarray(ids, np.int64)


@pytest.fixture
def index():
    idx = vi.VectorIndex(DIM, use_gpu="off")
    yield idx
    idx.close()


def test_build_search_add_and_remove(store, feed, index):
    v = unit(40, seed=1)
    ids = write(store, v)
    index.rebuild(feed, MODEL)
    assert len(index) == 40 and index.recall_at_1 == 1.0 and "IDMap2,Flat" in index.description
    scores, found = index.search(v[3:4], 5)
    assert found[0, 0] == ids[3] and scores[0, 0] == pytest.approx(1.0, abs=1e-4)  # stored as float16
    extra = unit(2, seed=2)
    index.add(np.array([10_001, 10_002]), extra, np.array([7, 7]))
    assert index.search(extra[1:2], 1)[1][0, 0] == 10_002 and len(index) == 42
    assert index.remove([ids[3], 10_001, 99_999]) == 2
    _, found = index.search(v[3:4], 3)
    assert ids[3] not in found[0] and len(index) == 40
    # Padded with -1 when fewer exist.
    assert list(index.search(v[:1], 50)[1][0, -3:]) == [-1, -1, -1]


def test_other_processes_writes_arrive_through_the_change_log(database_url, store, feed, index):
    ids = write(store, unit(5, seed=3))
    index.rebuild(feed, MODEL)
    other = PostgresStore.from_url(database_url)  # another process's store on the same database
    new = write(other, unit(3, seed=4), prefix="o")
    other.delete(other.candidates([int(ids[0])])[int(ids[0])][0].id)
    other.close()
    assert index.sync(feed, MODEL) == (3, 1)
    assert index.sync(feed, MODEL) == (0, 0)  # nothing twice
    assert index.contains(int(new[2])) and not index.contains(int(ids[0])) and len(index) == 7
    # A transaction that commits after a later one was read is still seen.
    with store.engine.connect() as late:
        tx = late.begin()
        late.exec_driver_sql("SELECT 1")
        write(store, unit(1, seed=5), prefix="x")
        assert index.sync(feed, MODEL) == (1, 0)
        tx.commit()


def test_an_ivf_index_above_the_exact_size_reports_its_recall(store, feed, monkeypatch):
    monkeypatch.setattr(index_plan, "EXACT_BELOW", 500)
    v = unit(3000, seed=6, dim=128)  # 4-bit codes of 32 dimensions are too coarse to rank
    ids = write(store, v)
    index = vi.VectorIndex(128, use_gpu="off")
    index.rebuild(feed, MODEL)
    assert index._base.plan.kind == "ivf" and index._base.plan.factory.startswith("IDMap2,IVF256,")
    assert index.recall_at_1 >= index_plan.TARGET_RECALL
    queries = index_plan.near_duplicates(v[:200], seed=9)
    _, found = index.search(queries, 1)
    assert (found[:, 0] == ids[:200]).mean() >= 0.97


def test_a_collection_filter_searches_that_collections_vectors_at_any_size(store, feed, index, monkeypatch):
    monkeypatch.setattr(index_plan, "EXACT_BELOW", 500)
    big = write(store, unit(2000, seed=7), collection="big")
    lone_vector = unit(1, seed=8)
    lone = write(store, lone_vector, collection="lone", prefix="l")
    index.rebuild(feed, MODEL)
    cids = store.collection_ids(["big", "lone"])
    far = -lone_vector  # the opposite direction: the lone vector is the worst match globally
    _, found = index.search(far, 3, np.array([cids["lone"]]))
    assert list(found[0]) == [int(lone[0]), -1, -1]
    monkeypatch.setattr(vi, "SMALL_FILTER", 10)  # the large-collection path: an id selector
    _, found = index.search(unit(5, seed=7)[:1], 1, np.array([cids["big"]]))
    assert found[0, 0] == big[0]
    _, found = index.search(unit(1, seed=7), 3, np.array([cids["lone"]]))
    assert list(found[0]) == [int(lone[0]), -1, -1]


def test_checkpoint_load_and_catch_up(tmp_path, store, feed, index):
    write(store, unit(10, seed=10))
    index.rebuild(feed, MODEL)
    index.add(np.array([50_000]), unit(1, seed=11), np.array([1]))
    index.save(tmp_path / "ix")
    assert oct((tmp_path / "ix" / "base.faiss").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "ix").stat().st_mode & 0o777) == "0o700"
    later = write(store, unit(2, seed=12), prefix="z")  # written while the server was down
    loaded = vi.VectorIndex(DIM, use_gpu="off")
    assert loaded.load(tmp_path / "ix", feed, MODEL, max_age_s=3600) is None
    assert loaded.contains(50_000) and loaded.contains(int(later[1])) and len(loaded) == 13
    assert "longer ago" in vi.VectorIndex(DIM, use_gpu="off").load(tmp_path / "ix", feed, MODEL, max_age_s=0)
    assert "no usable" in vi.VectorIndex(DIM, use_gpu="off").load(tmp_path / "nothing", feed, MODEL, 3600)


def test_a_forged_index_file_is_not_trusted(tmp_path, store, feed, index):
    ids = write(store, unit(6, seed=13))
    index.rebuild(feed, MODEL)
    index.save(tmp_path / "ix")
    forged = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    forged.add_with_ids(unit(6, seed=99), ids)  # the same ids, other vectors
    (tmp_path / "ix" / "base.faiss").write_bytes(faiss.serialize_index(forged).tobytes())
    loaded = vi.VectorIndex(DIM, use_gpu="off")
    assert "is not the store's" in loaded.load(tmp_path / "ix", feed, MODEL, max_age_s=3600)
    meta = json.loads((tmp_path / "ix" / "state.json").read_text())
    assert meta["dim"] == DIM


def test_the_index_asks_for_a_rebuild_when_recent_writes_outgrow_their_share(store, feed, index, monkeypatch):
    write(store, unit(20, seed=14))
    index.rebuild(feed, MODEL)
    assert not index.needs_rebuild(20)
    monkeypatch.setattr(vi, "REBUILD_MIN", 3)
    index.add(np.arange(90_000, 90_004), unit(4, seed=15), np.zeros(4, np.int64))
    assert index.needs_rebuild(24)
    assert index_plan.plan_for(1_000_000, 512, 1024).factory == "IDMap2,IVF1024,PQ128x4fs,Refine(SQ8)"
    assert index_plan.plan_for(50_000, 512, 1024).factory == "IDMap2,Flat"
    assert index_plan.plan_for(20_000_000, 512, 1024).factory == "IDMap2,IVF4096,PQ128x4fs,Refine(PQ64)"
