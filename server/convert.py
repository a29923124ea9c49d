"""Between the indexer's dataclasses and the wire messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from origin_id.indexer.store import Reference
from origin_id.server.api.origin.v1 import origin_pb2 as pb


def reference_to_pb(ref: Reference) -> pb.Reference:
    created = Timestamp()
    created.FromDatetime(ref.created_at)
    return pb.Reference(
        id=ref.id, collection=ref.collection, external_id=ref.external_id, source_uri=ref.source_uri,
        sha256=ref.sha256, width=ref.width, height=ref.height, labels=ref.labels, created_at=created,
        model_version=ref.model_version)
