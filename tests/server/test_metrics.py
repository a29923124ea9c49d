"""What an operator watches: Prometheus metrics, and JSON logs that name each call."""

import contextlib
import io
import json
import logging
import urllib.request

import grpc

from origin_id.server import logs
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.app import OriginServer
from origin_id.server.client import OriginClient
from tests.conftest import with_settings
from tests.server.test_cli import free_port


def test_metrics_endpoint_counts_calls_stages_and_state(settings, origin, images):
    server = OriginServer(with_settings(settings, metrics_port=free_port()), origin=origin)
    server.start()
    assert server.loaded.wait(60)
    try:
        with OriginClient(f"127.0.0.1:{server.port}", timeout=60) as client:
            client.add(images[0])
            client.identify(images[0])
            with contextlib.suppress(grpc.RpcError):
                client.get(999)
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    finally:
        server.stop(grace=1)
    for line in ['origin_id_requests_total{code="OK",method="IdentifyOrigin"} 1.0',
                 'origin_id_requests_total{code="NOT_FOUND",method="GetReference"} 1.0',
                 'origin_id_ingested_images_total{outcome="new"} 1.0',
                 f"origin_id_index_vectors {1.0 + len(settings.region_layout)}",  # the reference and its regions
                 "origin_id_postgres_up 1.0", "origin_id_admitted_calls 0.0"]:
        assert line in text, line
    for stage in ("decode", "embed", "search", "detectors", "read", "write"):
        assert f'origin_id_stage_seconds_count{{stage="{stage}"}}' in text, stage
    assert 'origin_id_request_seconds_bucket{le="0.5",method="IdentifyOrigin"}' in text


def test_json_logs_name_each_call_by_its_request_id(client, images):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    calls_log = logging.getLogger("origin_id.server.calls")
    calls_log.addHandler(handler)
    calls_log.setLevel(logging.INFO)
    try:
        _, call = client.stub.GetIndexStats.with_call(pb.GetIndexStatsRequest(), metadata=(("x-request-id", "req-42"),))
        _, other = client.stub.GetIndexStats.with_call(pb.GetIndexStatsRequest())
    finally:
        calls_log.removeHandler(handler)
    assert dict(call.trailing_metadata())["x-request-id"] == "req-42"
    made_up = dict(other.trailing_metadata())["x-request-id"]
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["request_id"] for e in entries] == ["req-42", made_up]
    assert entries[0]["method"] == "GetIndexStats" and entries[0]["code"] == "OK" and entries[0]["ms"] >= 0
