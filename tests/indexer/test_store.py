"""PostgresStore against a real PostgreSQL, schema made by the Alembic migrations."""

from dataclasses import replace

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from origin_id.indexer.store import NewReference
from origin_id.indexer.store.feed import IndexFeed
from origin_id.indexer.store.migrate import current_revision, head_revision, upgrade
from origin_id.indexer.store.postgres import PostgresStore
from origin_id.indexer.store.schema import metadata


@pytest.fixture
def store(database_url):
    s = PostgresStore.from_url(database_url)
    upgrade(s.engine)
    yield s
    s.close()


def item(sha: str, collection="c", external_id="", regions=1, seed=0, features=b"keypoints") -> NewReference:
    vectors = np.random.default_rng(seed).normal(size=(regions, 8)).astype(np.float32)
    return NewReference(collection=collection, sha256=sha.ljust(64, "0"), width=10, height=20, vectors=vectors,
                        external_id=external_id, labels={"k": "v"}, local_features=features)


def test_migrations_reach_head_and_match_the_table_definitions(store):
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    upgrade(store.engine)  # idempotent


def test_write_is_idempotent_per_collection(store):
    first = store.write([item("a"), item("b")], "m1")
    assert [r.created for r in first] == [True, True]
    assert all(len(r.embeddings) == 1 for r in first)
    again = store.write([item("a")], "m1")[0]
    assert not again.created and again.embeddings == ()
    assert again.reference.id == first[0].reference.id
    other = store.write([item("a", collection="d")], "m1")[0]
    assert other.created and other.reference.id != first[0].reference.id
    assert store.stats() == {"c": 2, "d": 1}


def test_new_model_version_adds_vectors_to_existing_reference(store):
    ref = store.write([item("a")], "m1")[0].reference
    r2 = store.write([item("a")], "m2")[0]
    assert not r2.created and r2.reference.id == ref.id and len(r2.embeddings) == 1
    assert store.count_embeddings("m1") == 1 and store.count_embeddings("m2") == 1


def test_external_id_clash_fails_that_item_only(store):
    results = store.write([item("a", external_id="x"), item("b", external_id="x"), item("c")], "m1")
    assert results[0].created and results[2].created
    assert results[1].reference is None and "already names a different image" in results[1].error
    assert store.stats() == {"c": 2}
    assert store.count_embeddings("m1") == 2  # no vector without its reference


def test_a_copied_batch_answers_as_item_by_item_writes_do(store):
    """Batches go through COPY; each item's outcome is what the item-by-item path gives:
    repeats inside the batch, images already stored, an external id taken, several regions."""
    def batch(collection):
        store.write([item("old", collection, external_id="taken")], "m1")
        return [item("n1", collection, regions=2, seed=3), item("n1", collection, seed=3),
                item("old", collection, external_id="other"), item("n2", collection, external_id="taken"),
                item("n3", collection, external_id="e3"), item("n4", collection, external_id="e3")]

    def outcome(results):
        return [(r.created, r.error.rsplit(" in collection", 1)[0], [region for _, region in r.embeddings],
                 r.reference and (r.reference.sha256, r.reference.external_id)) for r in results]

    copied = store.write(batch("by-copy"), "m1")
    each = store._write_each(batch("each"), "m1")
    assert outcome(copied) == outcome(each)
    assert [r.created for r in copied] == [True, False, False, False, True, False]
    assert "already names a different image" in copied[3].error and copied[1].reference.id == copied[0].reference.id
    ids = [i for i, _ in copied[0].embeddings]
    np.testing.assert_array_equal(np.stack(list(store.vectors_of(ids, "m1").values())),
                                  batch("x")[0].vectors.astype(np.float16))


def test_a_value_the_database_refuses_fails_that_item_only(store):
    bad = item("bad")
    bad.labels["k"] = "nul\x00byte"  # PostgreSQL text cannot hold NUL: the COPY is refused
    results = store.write([item("a"), bad, item("b")], "m1")
    assert [r.created for r in results] == [True, False, True]
    assert results[1].error_kind == "refused" and store.stats() == {"c": 2}


def test_vectors_round_trip_and_a_sample_is_drawn(store):
    written = store.write([item("a", regions=2, seed=1), item("b", seed=2)], "m1")
    ids = [i for r in written for i, _ in r.embeddings]
    stored = store.vectors_of(ids, "m1")
    written_vectors = item("a", regions=2, seed=1).vectors
    # Stored as float16: each value within float16's rounding, not bit-identical.
    np.testing.assert_array_equal(np.stack([stored[i] for i in ids[:2]]), written_vectors.astype(np.float16))
    assert not np.array_equal(np.stack([stored[i] for i in ids[:2]]), written_vectors)
    assert store.vectors_of(ids, "m2") == {}
    assert store.sample_vectors("m1", 10).shape == (3, 8)


def test_float32_rows_of_earlier_versions_read_back_exactly_beside_float16_ones(store):
    old = np.random.default_rng(5).normal(size=8).astype(np.float32)
    (new,) = store.write([item("n", seed=6)], "m1")
    (kept,) = store.write([item("o", seed=5)], "m1")
    old_id = kept.embeddings[0][0]
    with store.engine.begin() as conn:  # as an earlier version wrote it
        conn.execute(text("UPDATE embeddings SET vector = :v WHERE id = :id"),
                     {"v": old.astype("<f4").tobytes(), "id": old_id})
    np.testing.assert_array_equal(store.vectors_of([old_id], "m1")[old_id], old)
    np.testing.assert_array_equal(store.candidates([old_id])[old_id][1], old)
    with IndexFeed(store).snapshot("m1") as (_, chunks):
        chunk = next(chunks)
    by_id = dict(zip(chunk.ids.tolist(), chunk.vectors, strict=True))
    np.testing.assert_array_equal(by_id[old_id], old)
    np.testing.assert_array_equal(by_id[new.embeddings[0][0]], item("n", seed=6).vectors[0].astype(np.float16))
    assert store.sample_vectors("m1", 10).shape == (2, 8)


def test_delete_removes_reference_and_vectors(store):
    ref = store.write([item("a", regions=2)], "m1")[0].reference
    deleted, embedding_ids = store.delete(ref.id)
    assert deleted.id == ref.id and len(embedding_ids) == 2
    assert store.get(ref.id) is None
    assert store.count_embeddings("m1") == 0
    assert store.delete(ref.id) is None


def test_lookup_by_external_id_and_sha(store):
    ref = store.write([item("a", external_id="photo-1")], "m1")[0].reference
    assert store.get_by_external_id("c", "photo-1").id == ref.id
    assert store.get_by_external_id("other", "photo-1") is None
    assert set(store.find_by_sha256("c", [ref.sha256, "f" * 64], "m1")) == {ref.sha256}
    assert store.find_by_sha256("c", [ref.sha256], "another-model") == {}


def test_candidates_are_current_references_with_their_vectors(store):
    a, b = store.write([item("a"), item("b", collection="d")], "m1")
    ids = [a.embeddings[0][0], b.embeddings[0][0]]
    found = store.candidates(ids)
    assert set(found) == set(ids) and found[ids[1]][0].collection == "d"
    np.testing.assert_array_equal(found[ids[0]][1], item("a").vectors[0].astype(np.float16))
    assert store.collection_ids(["d", "nowhere"]) == {"d": b.collection_id}
    store.delete(a.reference.id)
    assert set(store.candidates(ids)) == {ids[1]}


def test_local_features_are_written_with_their_reference_by_either_path(store):
    """Keypoints travel with the reference (COPY batch or item by item), are read back
    by reference id, are not written twice, and go when the reference goes."""
    def with_features(sha, payload, **kw):
        return replace(item(sha, **kw), local_features=payload)

    copied = store.write([with_features("k1", b"one"), with_features("k2", b"two"), item("k3", features=b"")],
                         "m1")
    each = store._write_each([with_features("k4", b"four")], "m1")
    ids = [r.reference.id for r in [*copied, *each]]
    assert store.local_features_of(ids) == {ids[0]: b"one", ids[1]: b"two", ids[3]: b"four"}
    # A re-add (another model's vectors) keeps the first keypoints.
    store.write([with_features("k1", b"changed")], "m2")
    assert store.local_features_of(ids[:1]) == {ids[0]: b"one"}
    store.delete(ids[0])
    assert store.local_features_of(ids[:2]) == {ids[1]: b"two"}
    assert store.local_features_of([]) == {}


def test_a_reference_stored_without_keypoints_is_not_done_until_it_has_them(store):
    """References stored before keypoints existed are not reported as stored, so a re-run of
    ingest over the same files writes their keypoints (and no vector twice)."""
    old = store.write([item("old", features=b"")], "m1")[0]
    assert store.find_by_sha256("c", [item("old").sha256], "m1") == {}
    again = store.write([replace(item("old"), local_features=b"kp")], "m1")[0]
    assert not again.created and again.embeddings == () and again.reference.id == old.reference.id
    assert set(store.find_by_sha256("c", [item("old").sha256], "m1")) == {item("old").sha256}
    assert store.local_features_of([old.reference.id]) == {old.reference.id: b"kp"}
