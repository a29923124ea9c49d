"""A small client for the service, used by the CLI, the demo and the tests.

The channel's message limits are raised to match the server's (gRPC's
default receive limit, 4 MiB, is too small for photos), and every call has
a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.api.origin.v1 import origin_pb2_grpc as pb_grpc

SERVICE_NAME = "origin.v1.OriginService"


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


class OriginClient:
    def __init__(self, address: str, max_message_mib: int = 32, timeout: float = 60.0):
        self.channel = grpc.insecure_channel(address, options=channel_options(max_message_mib * 1024 * 1024))
        self.stub = pb_grpc.OriginServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> OriginClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health_status(self, service: str = SERVICE_NAME) -> str:
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_until_serving(self, timeout: float = 300.0) -> None:
        """Block until health says SERVING (the index is loaded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health_status() == "SERVING":
                    return
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not SERVING after {timeout:.0f}s")
            time.sleep(0.25)

    def identify(self, image: bytes, top_k: int = 0, collection: str = "") -> pb.IdentifyOriginResponse:
        return self.stub.IdentifyOrigin(
            pb.IdentifyOriginRequest(image=image, top_k=top_k, collection=collection), timeout=self.timeout)

    def add(self, image: bytes, **fields) -> pb.AddReferenceResponse:
        return self.stub.AddReference(pb.AddReferenceRequest(image=image, **fields), timeout=self.timeout)

    def add_many(self, requests: Iterable[pb.AddReferenceRequest],
                 timeout: float | None = None) -> Iterator[pb.AddReferenceResponse]:
        return self.stub.AddReferences(iter(requests), timeout=timeout)

    def get(self, reference_id: int = 0, collection: str = "", external_id: str = "") -> pb.Reference:
        request = (pb.GetReferenceRequest(external=pb.ExternalKey(collection=collection, external_id=external_id))
                   if external_id else pb.GetReferenceRequest(id=reference_id))
        return self.stub.GetReference(request, timeout=self.timeout).reference

    def list(self, collection: str = "", page_size: int = 0, page_token: str = "") -> pb.ListReferencesResponse:
        """One page of references in id order; pass its ``next_page_token`` for the next."""
        return self.stub.ListReferences(
            pb.ListReferencesRequest(collection=collection, page_size=page_size, page_token=page_token),
            timeout=self.timeout)

    def delete(self, reference_id: int = 0, collection: str = "", external_id: str = "") -> pb.Reference:
        request = (pb.DeleteReferenceRequest(external=pb.ExternalKey(collection=collection, external_id=external_id))
                   if external_id else pb.DeleteReferenceRequest(id=reference_id))
        return self.stub.DeleteReference(request, timeout=self.timeout).reference

    def stats(self) -> pb.GetIndexStatsResponse:
        return self.stub.GetIndexStats(pb.GetIndexStatsRequest(), timeout=self.timeout)
