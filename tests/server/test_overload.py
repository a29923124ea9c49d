"""Overload and deadlines: work stops when the caller has gone, the server admits what it
can serve and refuses the rest at once, and a write past its deadline is safe to retry."""

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from sqlalchemy import func, select

from origin_id.indexer.store.schema import references
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.app import OriginServer
from origin_id.server.client import OriginClient
from tests.conftest import encode, with_settings
from tests.indexer.test_decode import png_header_only
from tests.server.test_servicer import add_all, expect_status


def stage_count(server: OriginServer, stage: str) -> float:
    return server.metrics.registry.get_sample_value("origin_id_stage_seconds_count", {"stage": stage}) or 0.0


def timed_query(client, image) -> float:
    start = time.monotonic()
    client.identify(image, top_k=3)
    return time.monotonic() - start


def test_calls_whose_callers_gave_up_are_not_computed(client, grpc_server, images):
    add_all(client, images[:6])
    alone = min(timed_query(client, images[1]) for _ in range(3))
    before = stage_count(grpc_server, "detectors")
    request = pb.IdentifyOriginRequest(image=images[2], top_k=3)
    futures = [client.stub.IdentifyOrigin.future(request, timeout=0.5) for _ in range(80)]
    codes = []
    for f in futures:
        try:
            f.result()
            codes.append("OK")
        except grpc.RpcError as exc:
            codes.append(exc.code().name)
    # The next query, right after the 80 ran out of time: refused at once while gRPC's own queue
    # of their handlers drains, and retried (as a client does), then answered.
    start = time.monotonic()
    while True:
        try:
            client.identify(images[3], top_k=3)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    waited = time.monotonic() - start
    # Refused at once (beyond the admission or the RPC limit), or abandoned when their deadline passed.
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, set(codes)
    computed = stage_count(grpc_server, "detectors") - before - 1  # less the timed query's own
    assert computed <= grpc_server.settings.max_admitted, (computed, codes.count("OK"))
    # The next query waits for its own work and what was in flight, not for 80 queries.
    assert waited < 2 * alone + 1.5, (waited, alone)


def test_beyond_the_admission_limit_calls_are_refused_at_once(settings, origin, images):
    server = OriginServer(with_settings(settings, max_admitted=1), origin=origin)
    server.start()
    assert server.loaded.wait(60)
    try:
        with OriginClient(f"127.0.0.1:{server.port}", timeout=60) as c:
            c.add(images[0])

            def one(_):
                start = time.monotonic()
                try:
                    c.identify(images[0])
                    return "OK", time.monotonic() - start
                except grpc.RpcError as exc:
                    return exc.code().name, time.monotonic() - start
            with ThreadPoolExecutor(6) as pool:
                results = list(pool.map(one, range(6)))
        refused = [t for code, t in results if code == "RESOURCE_EXHAUSTED"]
        assert refused and all(t < 0.5 for t in refused), results
        assert {code for code, _ in results} <= {"OK", "RESOURCE_EXHAUSTED"}
        assert server.metrics.registry.get_sample_value("origin_id_rejected_calls_total",
                                                        {"reason": "overloaded"}) == len(refused)
    finally:
        server.stop(grace=1)


def test_an_add_past_its_deadline_is_safe_to_retry(client, reference_images, origin):
    """A write whose caller's deadline passed before it committed is not committed; one whose
    deadline passed during the commit is, and the client saw DEADLINE_EXCEEDED: retrying is
    safe either way (the same bytes in the same collection are one reference)."""
    expired = []
    large = [encode(im.resize((1600, 1200)), "PNG") for im in reference_images[:8]]  # slow to decode
    for i, data in enumerate(large):
        try:
            client.stub.AddReference(pb.AddReferenceRequest(image=data, external_id=f"e{i}"), timeout=0.02)
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
            expired.append(i)
    assert expired, "no add ran past a 20 ms deadline"
    time.sleep(1.0)
    for i in expired:
        client.add(large[i], external_id=f"e{i}")
    with origin.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(references)).scalar_one() == 8


def test_an_image_decoded_whole_is_bounded_by_what_the_pipeline_needs(client, images):
    client.add(images[0])
    start = time.monotonic()
    expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, client.identify, png_header_only(7999, 7999),
                  match="decoded whole")
    assert time.monotonic() - start < 1.0
