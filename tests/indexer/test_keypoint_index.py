"""The keypoint index: votes from real photographs' ORB keypoints, built from and kept in step
with a real PostgreSQL store."""

import numpy as np
from PIL import ImageOps

from origin_id.indexer import keypoint_index
from origin_id.indexer.keypoint_index import KeypointIndex, list_count
from origin_id.indexer.local_features import LocalFeatures, QueryFeatures, extract
from origin_id.indexer.pipeline import IngestItem
from tests.conftest import encode
from tests.indexer.test_local_features import crop_and_tilt


def stored(images) -> list[bytes]:
    return [extract(im).encode() for im in images]


def test_a_tilted_crop_and_its_mirror_vote_for_their_origin(reference_images):
    index = KeypointIndex()
    ids = np.arange(100, 100 + len(reference_images))
    assert index.add(ids, stored(reference_images)) == len(reference_images)
    assert index.add(ids[:3], stored(reference_images[:3])) == 0  # held already: not twice
    assert len(index) == len(reference_images)
    for origin in (0, 2, 5):
        crop = crop_and_tilt(reference_images[origin])
        assert index.vote(QueryFeatures.of(crop), 3)[0] == ids[origin]
        assert index.vote(QueryFeatures.of(ImageOps.mirror(crop)), 3)[0] == ids[origin]
    assert len(index.vote(QueryFeatures.of(crop), 3)) <= 3


def test_unreadable_rows_are_left_out_and_nothing_found_is_no_vote(reference_images):
    index = KeypointIndex()
    assert index.vote(QueryFeatures.of(reference_images[0]), 5) == []  # empty index
    good = extract(reference_images[0]).encode()
    assert index.add([1, 2], [good, good[:100]]) == 1  # cut inside its descriptors (the picture is not read)
    assert index.descriptors == len(extract(reference_images[0]))
    flat = ImageOps.grayscale(reference_images[0]).point(lambda _: 128)
    assert index.vote(QueryFeatures.of(flat), 5) == []  # no keypoints at all


def test_inverted_lists_past_the_exact_size_find_the_same_origins(origin, images, reference_images, monkeypatch):
    """Built from the store; past ``FLAT_LIMIT`` descriptors the index is split into inverted
    lists and still votes a crop's origin first; growing far past its training calls for a
    rebuild."""
    refs = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(d) for d in images)]
    kept = origin.store.local_features_of([r.id for r in refs])
    total = sum(len(LocalFeatures.decode(d)) for d in kept.values())
    monkeypatch.setattr(keypoint_index, "FLAT_LIMIT", total // 2)
    index = KeypointIndex()
    index.rebuild(origin.feed, origin.bundle.version)
    assert len(index) == len(refs) and index.descriptors == total
    assert f"IVF{list_count(total)}" in index.description()
    assert not index.needs_rebuild()
    for i in (1, 3, 6):
        assert index.vote(QueryFeatures.of(crop_and_tilt(reference_images[i])), 3)[0] == refs[i].id
    monkeypatch.setattr(keypoint_index, "GROWTH_REBUILD", 0.5)
    assert index.needs_rebuild()


def test_maintenance_rebuilds_a_keypoint_index_that_outgrew_its_kind_before_the_vectors(
        origin, images, monkeypatch, caplog):
    """A bulk ingest into a running server grows the exact keypoint index past its size (every
    query then scans all descriptors: seconds at millions); the maintenance round that finds
    it so rebuilds it on inverted lists first, before a vector base that may take minutes."""
    import logging

    from origin_id.indexer import vector_index

    refs = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(d) for d in images)]
    assert "exact" in origin.keypoints.description()
    monkeypatch.setattr(keypoint_index, "FLAT_LIMIT", origin.keypoints.descriptors // 2)
    monkeypatch.setattr(vector_index, "REBUILD_MIN", 0)  # the vectors' delta is due as well
    assert origin.keypoints.needs_rebuild()
    with caplog.at_level(logging.INFO):
        assert origin.rebuild_index_if_due()
    assert "IVF" in origin.keypoints.description() and len(origin.keypoints) == len(refs)
    built = [r.name for r in caplog.records if "built" in r.getMessage()]
    assert built == ["origin_id.indexer.keypoint_index", "origin_id.indexer.vector_index"], built


def test_sync_adds_another_writers_references_and_a_build_drops_deleted_ones(origin, settings, bundle, images,
                                                                           reference_images):
    from origin_id.indexer.origin_index import OriginIndex

    assert origin.keypoints is not None and len(origin.keypoints) == 0
    mine = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(d) for d in images[:4])]
    assert len(origin.keypoints) == 4  # this process's ingest adds at once
    other = OriginIndex.open(settings, bundle=bundle)  # a second writer on the same database
    try:
        assert len(other.keypoints) == 4  # built from the store
        theirs = [o.reference for o in other.pipeline.run(IngestItem.from_bytes(d) for d in images[4:7])]
        other.delete(mine[0].id)
    finally:
        other.close()
    assert origin.keypoints.sync(origin.feed, bundle.version) == 3
    assert origin.keypoints.vote(QueryFeatures.of(crop_and_tilt(reference_images[5])), 1) == [theirs[1].id]
    # The deleted reference still wins votes until a build, but never reaches an answer.
    assert origin.keypoints.vote(QueryFeatures.of(crop_and_tilt(reference_images[0])), 1) == [mine[0].id]
    answer = origin.identify(encode(crop_and_tilt(reference_images[0])), top_k=3)
    assert mine[0].id not in {c.reference.id for c in answer.candidates}
    origin.keypoints.rebuild(origin.feed, bundle.version)
    assert len(origin.keypoints) == 6
    assert mine[0].id not in origin.keypoints.vote(QueryFeatures.of(crop_and_tilt(reference_images[0])), 10)


def test_a_build_reads_each_row_up_to_its_last_descriptor_whatever_its_count(origin, images):
    """ORB may return a few more keypoints than asked, and rows of format 1 have no picture:
    the store cuts each row where the row says its descriptors end, so every reference is
    indexed whole, and the picture stored after them is never read."""
    import struct

    from sqlalchemy import text

    refs = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(d) for d in images[:3])]
    rng = np.random.default_rng(0)

    def points(n):
        return rng.uniform(0, 500, (n, 2)).astype(np.float32), rng.integers(0, 256, (n, 32), dtype=np.uint8)

    many = LocalFeatures(*points(600), 512, picture=np.full((128, 96), 7, np.uint8)).encode()
    legacy_points, legacy_descriptors = points(520)
    legacy = (struct.pack("<HHH", 1, 520, 512) + legacy_points.astype("<f2").tobytes()
              + legacy_descriptors.tobytes())
    with origin.store.engine.begin() as conn:
        conn.execute(text("UPDATE local_features SET data = :d WHERE reference_id = :r"),
                     [{"d": many, "r": refs[0].id}, {"d": legacy, "r": refs[1].id}])
    third = len(LocalFeatures.decode(origin.store.local_features_of([refs[2].id])[refs[2].id]))
    index = KeypointIndex()
    index.rebuild(origin.feed, origin.bundle.version)
    assert len(index) == 3 and index.descriptors == 600 + 520 + third
    with origin.feed.keypoint_snapshot(origin.bundle.version, keypoint_index._KEYPOINTS) as (_, count, chunks):
        rows = {int(r): d for c in chunks for r, d in zip(c.reference_ids, c.data, strict=True)}
    assert count == 3 and len(rows[refs[0].id]) == 6 + 600 * 36 < len(many)
    assert rows[refs[1].id] == legacy
