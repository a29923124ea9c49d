"""The gRPC service end to end: a real server on a loopback port, a real
PostgreSQL, the real bundled models, real images."""

import io

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from sqlalchemy import func, select

from origin_id.indexer.store.schema import embeddings, references
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from tests.conftest import encode
from tests.indexer.test_decode import png_header_only
from training.edits import apply


def add_all(client, images, collection="news"):
    requests = (pb.AddReferenceRequest(image=data, external_id=f"img-{i}", collection=collection,
                                       source_uri=f"https://example.org/{i}.jpg", labels={"n": str(i)})
                for i, data in enumerate(images))
    return list(client.add_many(requests, timeout=120))


def row_counts(origin):
    """(reference rows, their sets of vector rows): each reference has one vector row per
    region it is indexed by (``reference_regions``), written together or not at all."""
    per_reference = 1 + len(origin.settings.region_layout)
    with origin.store.engine.connect() as conn:
        refs = conn.execute(select(func.count()).select_from(references)).scalar_one()
        rows = conn.execute(select(func.count()).select_from(embeddings)).scalar_one()
    assert rows % per_reference == 0, (rows, per_reference)
    return refs, rows // per_reference


def expect_status(code, fn, *args, match=""):
    with pytest.raises(grpc.RpcError) as info:
        fn(*args)
    assert info.value.code() == code, info.value.details()
    assert match in info.value.details()
    return info.value.details()


def test_edited_copies_are_traced_to_their_origin(client, images, reference_images, origin):
    replies = add_all(client, images)
    assert [r.index for r in replies] == list(range(len(images)))
    assert all(r.created and not r.HasField("error") for r in replies)
    ids = [r.reference.id for r in replies]
    hits = 0
    families = ["tone", "smooth_sharpen", "noise_recompress", "palette"]
    queries = [(i, f) for i in range(0, len(images), 3) for f in families[i % 2::2]]
    for i, family in queries:
        reply = client.identify(encode(apply(family, reference_images[i], seed=i)), top_k=5)
        assert len(reply.candidates) == 5
        scores = [c.score for c in reply.candidates]
        assert scores == sorted(scores, reverse=True)
        hits += reply.candidates[0].reference.id == ids[i]
    assert hits >= 0.9 * len(queries), f"{hits}/{len(queries)} edited copies traced"
    # An exact copy: top-1 with a decisive score and a match.
    reply = client.identify(images[4], top_k=3)
    top = reply.candidates[0]
    assert top.reference.id == ids[4] and top.score > 0.99 and reply.match
    assert top.reference.external_id == "img-4" and top.reference.labels["n"] == "4"
    assert top.reference.source_uri == "https://example.org/4.jpg"
    # Verified by its keypoints: an exact copy fits its origin by many inliers across the query.
    assert top.inliers >= 100 and 0.2 < top.inlier_coverage <= 1.0, (top.inliers, top.inlier_coverage)
    assert top.agreement > 0.95, top.agreement  # and its pixels agree with the stored picture
    assert reply.match_threshold > 0 and reply.query_width == reference_images[4].width
    # The decision is the margin over the background score (the raw score without a set).
    assert reply.match_score == pytest.approx(top.score - reply.background_score, abs=1e-5)
    background = origin.bundle.background
    assert (reply.background_score > 0) == (background is not None and background.weight > 0)
    verdict = reply.inpainting  # the bundled detectors run on every query
    assert verdict.available and 0.0 <= verdict.probability <= 1.0
    assert verdict.decision_threshold == pytest.approx(origin.bundle.inpainting.threshold)
    assert verdict.inpainted == (verdict.probability >= verdict.decision_threshold)
    if verdict.localized:
        mask = Image.open(io.BytesIO(verdict.mask_png))
        assert mask.size == (reply.query_width, reply.query_height)
    else:
        assert not verdict.mask_png and verdict.probability < origin.bundle.inpainting.localize_threshold


def test_unrelated_image_is_no_match(client, images):
    add_all(client, images)
    from training.data import procedural_image

    reply = client.identify(encode(procedural_image(987_654, size=300)), top_k=3)
    assert not reply.match
    assert reply.match_score < reply.match_threshold


def test_re_adding_is_idempotent(client, images, origin):
    first = add_all(client, images[:5])
    again = add_all(client, images[:5])
    assert [r.reference.id for r in again] == [r.reference.id for r in first]
    assert not any(r.created for r in again)
    single = client.add(images[0], collection="news")
    assert not single.created and single.reference.id == first[0].reference.id
    assert row_counts(origin) == (5, 5)
    assert client.stats().indexed_vectors == 5 * (1 + len(origin.settings.region_layout))


def test_collections_scope_queries(client, images):
    a = client.add(images[0], collection="agency-a", external_id="x").reference
    b = client.add(images[0], collection="agency-b", external_id="x").reference
    assert a.id != b.id
    only_b = client.identify(images[0], top_k=5, collection="agency-b")
    assert [c.reference.id for c in only_b.candidates] == [b.id]
    both = client.identify(images[0], top_k=5)
    assert {c.reference.id for c in both.candidates} == {a.id, b.id}
    stats = client.stats()
    assert {c.name: c.references for c in stats.collections} == {"agency-a": 1, "agency-b": 1}


def test_delete_takes_effect_at_once(client, images, origin):
    replies = add_all(client, images[:6])
    victim = replies[2].reference
    deleted = client.delete(victim.id)
    assert deleted.id == victim.id
    reply = client.identify(images[2], top_k=6)
    assert victim.id not in [c.reference.id for c in reply.candidates]
    expect_status(grpc.StatusCode.NOT_FOUND, client.get, victim.id)
    expect_status(grpc.StatusCode.NOT_FOUND, client.delete, victim.id)
    by_key = client.delete(0, collection="news", external_id="img-3")
    assert by_key.id == replies[3].reference.id
    assert client.stats().indexed_vectors == 4 * (1 + len(origin.settings.region_layout))


def test_get_by_id_and_external_id(client, images):
    ref = client.add(images[1], collection="news", external_id="AP-1", labels={"desk": "photo"}).reference
    assert client.get(ref.id).sha256 == ref.sha256
    got = client.get(collection="news", external_id="AP-1")
    assert got.id == ref.id and got.labels["desk"] == "photo" and got.created_at.seconds > 0
    expect_status(grpc.StatusCode.NOT_FOUND, client.get, 987654321, match="987654321")
    expect_status(grpc.StatusCode.NOT_FOUND, client.get, 0, "news", "nope")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.stub.GetReference, pb.GetReferenceRequest())


def test_bad_inputs_get_clear_statuses_and_nothing_is_written(client, images, origin):
    client.add(images[0])
    before = row_counts(origin)
    truncated = images[1][: len(images[1]) // 3]
    cases = [
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (truncated, grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
        (b"GIF89a-not-really", grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image"),
        (b"%PDF-1.7 hello", grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image"),
        (png_header_only(19_000, 19_000), grpc.StatusCode.RESOURCE_EXHAUSTED, "pixels"),
    ]
    for data, code, fragment in cases:
        expect_status(code, client.identify, data, match=fragment)
        expect_status(code, client.add, data, match=fragment)
    import io

    ppm = io.BytesIO()
    Image.new("RGB", (32, 32)).save(ppm, format="PPM")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.add, ppm.getvalue(), match="unsupported image format")
    # Oversize message: over the server's 4 MiB limit (this client allows 64).
    expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, client.identify, b"\0" * (5 * 1024 * 1024))
    # top_k out of range.
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.identify, images[0], -1, match="top_k")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.identify, images[0], 100_000, match="top_k")
    # Metadata out of range.
    with pytest.raises(grpc.RpcError) as info:
        client.add(images[2], labels={f"k{i}": "v" for i in range(100)})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "labels" in info.value.details()
    # An external_id that already names another image.
    client.add(images[3], external_id="same")
    with pytest.raises(grpc.RpcError) as info:
        client.add(images[4], external_id="same")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert row_counts(origin) == (before[0] + 1, before[1] + 1)
    # Still serving, still right.
    assert client.health_status() == "SERVING"
    assert client.identify(images[0], top_k=1).candidates[0].score > 0.99


def test_bulk_stream_reports_per_item_errors_and_keeps_going(client, images, origin):
    stream = [images[0], b"junk", images[1], png_header_only(30_000, 30_000), images[2]]
    replies = list(client.add_many(pb.AddReferenceRequest(image=d) for d in stream))
    assert [r.index for r in replies] == [0, 1, 2, 3, 4]
    assert [r.HasField("error") for r in replies] == [False, True, False, True, False]
    assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert replies[3].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert row_counts(origin) == (3, 3)


def test_health_and_reflection(client, grpc_server):
    reply = client.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"origin.v1.OriginService", "grpc.health.v1.Health"} <= names


def test_writes_from_another_process_are_picked_up(client, images, origin, settings, bundle):
    from origin_id.indexer.origin_index import OriginIndex
    from origin_id.indexer.pipeline import IngestItem

    other = OriginIndex.open(settings, bundle=bundle)  # a second writer on the same database
    try:
        (outcome,) = other.pipeline.process([IngestItem.from_bytes(images[5], collection="elsewhere")])
        assert outcome.created
    finally:
        other.close()
    import time

    deadline = time.monotonic() + 10
    origin.start_maintenance()
    while time.monotonic() < deadline and client.stats().indexed_vectors < 1:
        time.sleep(0.2)
    assert client.identify(images[5], top_k=1).candidates[0].reference.id == outcome.reference.id


def test_inpainted_query_gets_a_localized_verdict(client, images, reference_images, origin):
    """A painted-in copy of an indexed photo: traced to its origin, flagged, and a mask where the paint is."""
    import numpy as np

    from training.inpainting import finish, inpaint

    ids = [r.reference.id for r in add_all(client, images)]
    rng = np.random.default_rng(3)
    photo = reference_images[0].resize((384, 384))
    fake = inpaint(photo, "rectangle", "telea", rng)
    data, truth = finish(fake.image, fake.mask, rng)
    reply = client.identify(data, top_k=1)
    assert reply.candidates[0].reference.id == ids[0]
    v = reply.inpainting
    assert v.available and v.localized, v
    mask = np.asarray(Image.open(io.BytesIO(v.mask_png))) > 127
    assert mask.shape == truth.shape
    assert v.mask_area_fraction == pytest.approx(mask.mean(), abs=1e-6)
    # The mask overlaps the painted region better than chance would.
    overlap = (mask & truth).sum() / max(mask.sum(), 1)
    assert overlap > truth.mean(), (overlap, truth.mean())


def test_large_query_is_answered_in_its_own_pixels(client, images, reference_images):
    """A 1,600 px JPEG is decoded at half scale (indexer.decode), but the answer reports its
    own size and draws the mask at that size, over the painted region."""
    import numpy as np

    from training.inpainting import inpaint

    ids = [r.reference.id for r in add_all(client, images)]
    fake = inpaint(reference_images[0].resize((384, 384)), "rectangle", "telea", np.random.default_rng(3))
    large = fake.image.resize((1600, 1600), Image.Resampling.BICUBIC)
    truth = np.asarray(Image.fromarray(fake.mask).resize((1600, 1600))) > 0
    buf = io.BytesIO()
    large.save(buf, format="JPEG", quality=90)
    reply = client.identify(buf.getvalue(), top_k=1)
    assert reply.candidates[0].reference.id == ids[0]
    assert (reply.query_width, reply.query_height) == (1600, 1600)
    v = reply.inpainting
    assert v.available and v.localized, v
    mask = np.asarray(Image.open(io.BytesIO(v.mask_png))) > 127
    assert mask.shape == (1600, 1600)
    x, y, w, h = v.mask_bbox.x, v.mask_bbox.y, v.mask_bbox.width, v.mask_bbox.height
    assert mask[y:y + h, x:x + w].sum() == mask.sum() > 0
    assert (mask & truth).sum() / mask.sum() > truth.mean()


def test_an_empty_index_and_an_unknown_collection_are_errors_not_empty_answers(client, images):
    """An empty "no match" would read as "the origin is not indexed": a caller who asked the
    wrong place gets told so instead."""
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, client.identify, images[0], match="holds no references")
    client.add(images[0], collection="agency-a")
    expect_status(grpc.StatusCode.NOT_FOUND, client.identify, images[0], 3, "agency-b", match="agency-b")
    expect_status(grpc.StatusCode.NOT_FOUND, client.list, "agency-b")
    # Past the longest name a collection may have: refused, without repeating it.
    details = expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.identify, images[0], 3, "x" * 10_000)
    assert len(details) < 200
    client.delete(client.list("agency-a").references[0].id)
    # A collection that exists but was emptied answers as usual: nothing there, no match.
    reply = client.identify(images[0], top_k=3, collection="agency-a")
    assert not reply.match and not reply.candidates


def test_references_are_listed_in_pages(client, images):
    add_all(client, images[:7], collection="news")
    client.add(images[7], collection="other")
    first = client.list("news", page_size=3)
    assert [r.external_id for r in first.references] == ["img-0", "img-1", "img-2"] and first.next_page_token
    rest, token = [], first.next_page_token
    while token:
        page = client.list("news", page_size=3, page_token=token)
        rest += [r.external_id for r in page.references]
        token = page.next_page_token
    assert rest == [f"img-{i}" for i in range(3, 7)]
    everything = client.list(page_size=1000)
    assert len(everything.references) == 8 and not everything.next_page_token
    assert {r.collection for r in everything.references} == {"news", "other"}
    for bad in ({"page_size": 1001}, {"page_size": -1}, {"page_token": "not-ours"}, {"page_token": "9" * 40}):
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.stub.ListReferences, pb.ListReferencesRequest(**bad))


def test_stats_say_whether_the_inpainting_models_are_loaded(client):
    assert client.stats().detectors_loaded
