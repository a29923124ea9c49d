"""Index persistence: loaded when it matches PostgreSQL, rebuilt with the same answers when not."""

from origin_id.indexer.origin_index import OriginIndex
from origin_id.indexer.pipeline import IngestItem
from tests.conftest import encode, with_settings
from training.data import procedural_image
from training.edits import apply


def answers(origin, queries):
    return [[(c.reference.id, round(c.score, 4)) for c in origin.identify(q, top_k=3).candidates]
            for q in queries]


def test_index_is_reloaded_or_rebuilt_with_the_same_answers(settings, bundle, images, reference_images):
    queries = [encode(apply("tone", reference_images[i], seed=i)) for i in (0, 5, 9)]
    first = OriginIndex.open(settings, bundle=bundle)
    assert first.load_report.startswith("built (no usable saved index")
    list(first.pipeline.run(IngestItem.from_bytes(d) for d in images))
    expected = answers(first, queries)
    first.close()  # checkpoints the index
    folder = first.index_path
    assert (folder / "base.faiss").exists()

    second = OriginIndex.open(settings, bundle=bundle)
    assert second.load_report == "loaded"
    assert answers(second, queries) == expected
    # A row added behind the checkpoint's back (the process dies before it checkpoints):
    # the change log brings it in at the next start.
    second.pipeline.process([IngestItem.from_bytes(encode(reference_images[0].rotate(90)))])
    second.index.dirty = False
    second.close()
    third = OriginIndex.open(settings, bundle=bundle)
    per_reference = 1 + len(settings.region_layout)  # the index holds every region's vector
    assert third.load_report == "loaded" and len(third.index) == (len(images) + 1) * per_reference
    expected = answers(third, queries)
    third.close()

    (folder / "base.faiss").write_bytes(b"garbage" * 100)
    fourth = OriginIndex.open(settings, bundle=bundle)
    assert "no usable saved index" in fourth.load_report
    assert answers(fourth, queries) == expected and len(fourth.index) == (len(images) + 1) * per_reference
    fourth.close()


def test_query_flip_finds_mirrored_copies(settings, bundle, images, reference_images):
    from dataclasses import replace

    from PIL import ImageOps

    mirrored = encode(ImageOps.mirror(reference_images[3]))
    plain = OriginIndex.open(replace(settings, query_flip=False), bundle=bundle)
    refs = [o.reference for o in plain.pipeline.run(IngestItem.from_bytes(d) for d in images)]
    without = plain.identify(mirrored, top_k=len(images))
    plain.close()
    flipping = OriginIndex.open(settings, bundle=bundle)  # flip is the default
    assert flipping.settings.query_flip
    try:
        found = flipping.identify(mirrored, top_k=3)
        assert found.candidates[0].reference.id == refs[3].id
        assert found.candidates[0].score > 0.99 and found.match
        score_without = next(c.score for c in without.candidates if c.reference.id == refs[3].id)
        assert score_without < found.candidates[0].score - 0.05
        scores = [c.score for c in found.candidates]
        assert scores == sorted(scores, reverse=True)
    finally:
        flipping.close()


def test_reference_regions_find_cropped_copies(settings, bundle, images, reference_images):
    """Each reference is stored and indexed whole and by its regions; a query cropped to
    about its centre half meets its origin through a region, far above the whole image."""
    import io

    from PIL import Image

    from origin_id.indexer.embedder import Embedder
    from origin_id.indexer.query_views import query_batch

    def decode_rgb(data: bytes) -> Image.Image:
        return Image.open(io.BytesIO(data)).convert("RGB")

    picks = (1, 4, 7, 10)
    crops = []
    for i in picks:
        w, h = reference_images[i].size
        crops.append(encode(reference_images[i].crop((round(w * 0.22), round(h * 0.22),
                                                      round(w * 0.78), round(h * 0.78)))))
    origin = OriginIndex.open(settings, bundle=bundle)
    assert settings.reference_regions  # the default
    try:
        refs = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(d) for d in images)]
        per_reference = 1 + len(settings.region_layout)
        assert len(origin.index) == len(images) * per_reference
        assert len(origin.store.candidates(range(1, 10 * len(origin.index)))) == len(origin.index)  # PostgreSQL too
        answers = [origin.identify(q, top_k=1).candidates[0] for q in crops]
        assert [a.reference.id for a in answers] == [refs[i].id for i in picks]
        # Whole images only, scored as the service would without regions.
        plain = Embedder(bundle)
        whole = plain.embed([decode_rgb(images[i]) for i in picks])
        without = [float((plain.project(plain.encode(query_batch(decode_rgb(q)))) @ whole[j]).max())
                   for j, q in enumerate(crops)]
        assert all(a.score > w + 0.1 for a, w in zip(answers, without)), (answers, without)
    finally:
        origin.close()


def test_keypoints_verify_a_tilted_crop_and_the_calibrated_rule_declares_it(settings, bundle, images,
                                                                            reference_images):
    """References are stored with their keypoints; a tilted crop of one fits its origin with
    many inliers and the other references with few; a background set calibrated for
    verification declares it a match by them (or by their coverage, or by the pixels they
    lay on each other) where its margin alone would not; a reference
    stored without keypoints is left unverified (-1) and decided by its score."""
    import dataclasses

    from sqlalchemy import text

    from tests.indexer.test_local_features import crop_and_tilt

    origin = OriginIndex.open(with_settings(settings, verify_candidates=len(images)), bundle=bundle)
    try:
        refs = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(d) for d in images)]
        assert len(origin.store.local_features_of([r.id for r in refs])) == len(refs)
        query = encode(crop_and_tilt(reference_images[2]))
        found = origin.identify(query, top_k=len(images))
        inliers = {c.reference.id: c.inliers for c in found.candidates}
        assert inliers[refs[2].id] >= 60, inliers
        assert max(n for i, n in inliers.items() if i != refs[2].id) < 20, inliers
        assert found.candidates[0].reference.id == refs[2].id

        # Each clause alone: the shipped agreement clause off until it is tested below.
        strict = dataclasses.replace(bundle.background, match_margin=2.0, verify_inliers=20, verify_margin=-1.0,
                                     dense_inliers=0)
        origin.bundle = dataclasses.replace(bundle, background=strict)
        verified = origin.identify(query, top_k=3)
        assert verified.match and verified.match_basis == "verified"
        coverage = verified.candidates[0].coverage
        assert 0.1 < coverage <= 1.0  # the crop's inliers span the picture (not the padding around it)
        # Declared by coverage alone (no margin is low enough), and not when it asks for more.
        by_cover = dataclasses.replace(strict, verify_margin=2.0, verify_coverage=coverage)
        origin.bundle = dataclasses.replace(bundle, background=by_cover)
        assert origin.identify(query, top_k=3).match_basis == "verified"
        origin.bundle = dataclasses.replace(bundle, background=dataclasses.replace(by_cover,
                                                                                   verify_coverage=coverage + 0.01))
        assert not origin.identify(query, top_k=3).match
        # Declared by the pixels' agreement alone (the verified clause off), and not when it
        # asks for more (the stored picture is the reference's, warped onto the crop).
        agreement = verified.candidates[0].agreement
        assert 0.5 < agreement <= 1.0, agreement
        by_pixels = dataclasses.replace(strict, verify_inliers=0, dense_inliers=20, dense_agreement=agreement)
        origin.bundle = dataclasses.replace(bundle, background=by_pixels)
        assert origin.identify(query, top_k=3).match_basis == "verified"
        origin.bundle = dataclasses.replace(bundle, background=dataclasses.replace(by_pixels,
                                                                                   dense_agreement=agreement + 0.01))
        assert not origin.identify(query, top_k=3).match
        origin.bundle = dataclasses.replace(bundle, background=strict)
        unrelated = origin.identify(encode(procedural_image(77_000, size=320)), top_k=3)
        assert not unrelated.match and unrelated.match_basis == ""

        with origin.store.engine.begin() as conn:
            conn.execute(text("DELETE FROM local_features"))
        unverified = origin.identify(query, top_k=3)
        assert all(c.inliers == -1 for c in unverified.candidates)
        assert not unverified.match  # the margin alone (2.0) declares nothing
    finally:
        origin.close()


def test_keypoint_candidates_bring_back_an_origin_the_vectors_missed(settings, bundle, images, reference_images):
    """When the vectors' candidates lack a tilted crop's origin, the keypoint index finds it,
    verification proves it, and it is ranked first; within its collection only; with
    ``keypoint_candidates`` 0 nothing brings it back."""
    import dataclasses

    from origin_id.indexer.query_views import query_batch
    from tests.indexer.test_local_features import crop_and_tilt

    origin = OriginIndex.open(settings, bundle=bundle)
    try:
        refs = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(d) for d in images)]
        assert origin.rank_lead > 0  # the shipped model's rule is calibrated for verification
        crop = crop_and_tilt(reference_images[4])
        query = origin.decode(encode(crop))
        vectors = origin.embedder.project(origin.embedder.encode(query_batch(query.image)))
        missed = [c for c in origin.search(vectors, 4) if c.reference.id != refs[4].id][:3]
        found = origin.verify(query.image, missed, vectors)
        bar = max(found[1].inliers, 0) + origin.rank_lead  # the vectors' top-1 leads the rest
        assert found[0].reference.id == refs[4].id and found[0].inliers >= bar, found
        assert len(found) == len(missed)
        assert all(c.inliers < bar for c in found[1:])
        assert origin.verify(query.image, missed, vectors, collections=["elsewhere"])[0].reference.id != refs[4].id
        # Listed below the verified ranks, the voted origin is verified where it stands, once.
        own = [c for c in origin.search(vectors, len(images)) if c.reference.id == refs[4].id]
        origin.settings = dataclasses.replace(settings, verify_candidates=1)
        listed = origin.verify(query.image, [*missed, *own], vectors)
        assert listed[0].reference.id == refs[4].id and listed[0].inliers >= origin.rank_lead
        assert [c.reference.id for c in listed].count(refs[4].id) == 1 and len(listed) == len(missed) + 1
        origin.settings = settings
        answer = origin.identify(encode(crop), top_k=1)
        assert answer.candidates[0].reference.id == refs[4].id
        # Ranked by a lead below the count a match is declared by: first, yet not a match;
        # by a lead of the decision's count (files calibrated before the lead), not first.
        wide = dataclasses.replace(bundle.background, match_margin=2.0, verify_inliers=10_000,
                                   rank_lead=found[0].inliers - max(found[1].inliers, 0))
        origin.bundle, origin.rank_lead = dataclasses.replace(bundle, background=wide), wide.ranking_lead
        assert origin.verify(query.image, missed, vectors)[0].reference.id == refs[4].id
        ranked = origin.identify(encode(crop), top_k=1)
        assert ranked.candidates[0].reference.id == refs[4].id and not ranked.match
        origin.rank_lead = dataclasses.replace(wide, rank_lead=0).ranking_lead
        assert origin.verify(query.image, missed, vectors)[0].reference.id != refs[4].id
    finally:
        origin.close()
    plain = OriginIndex.open(with_settings(settings, keypoint_candidates=0), bundle=bundle)
    try:
        assert plain.keypoints is None
        assert refs[4].id not in {c.reference.id for c in plain.verify(query.image, missed, vectors)}
    finally:
        plain.close()
