"""A small client for the service, used by the CLI, the demo and the tests.

The channel's message limits are raised to match the server's (gRPC's
default receive limit, 4 MiB, is too small for photos), and every call has
a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.api.origin.v1 import origin_pb2_grpc as pb_grpc

SERVICE_NAME = "origin.v1.OriginService"


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


class OriginClient:
    def __init__(self, address: str, max_message_mib: int = 32, timeout: float = 60.0, *, api_key: str = "",
                 tls_ca: bytes | None = None, client_cert: bytes | None = None, client_key: bytes | None = None):
        """``api_key`` is sent as ``authorization: Bearer KEY`` on every call. ``tls_ca`` (PEM)
        makes the channel TLS, verifying the server against it; ``client_cert`` and
        ``client_key`` (PEM) are shown to a server that asks for mutual TLS."""
        options = channel_options(max_message_mib * 1024 * 1024)
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca, private_key=client_key,
                                                       certificate_chain=client_cert)
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.OriginServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    @property
    def _options(self) -> dict:
        return {"timeout": self.timeout, "metadata": self.metadata}

    @classmethod
    def from_settings(cls, settings, address: str = "", timeout: float = 60.0) -> OriginClient:
        """A client as the settings describe it (``server``, ``api_key``, ``tls_*``)."""
        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None
        return cls(address or settings.server, settings.max_message_mib, timeout, api_key=settings.api_key,
                   tls_ca=read(settings.tls_ca), client_cert=read(settings.tls_client_cert),
                   client_key=read(settings.tls_client_key))

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
            pb.IdentifyOriginRequest(image=image, top_k=top_k, collection=collection), **self._options)

    def add(self, image: bytes, **fields) -> pb.AddReferenceResponse:
        return self.stub.AddReference(pb.AddReferenceRequest(image=image, **fields), **self._options)

    def add_many(self, requests: Iterable[pb.AddReferenceRequest],
                 timeout: float | None = None) -> Iterator[pb.AddReferenceResponse]:
        return self.stub.AddReferences(iter(requests), timeout=timeout, metadata=self.metadata)

    def get(self, reference_id: int = 0, collection: str = "", external_id: str = "") -> pb.Reference:
        request = (pb.GetReferenceRequest(external=pb.ExternalKey(collection=collection, external_id=external_id))
                   if external_id else pb.GetReferenceRequest(id=reference_id))
        return self.stub.GetReference(request, **self._options).reference

    def list(self, collection: str = "", page_size: int = 0, page_token: str = "") -> pb.ListReferencesResponse:
        """One page of references in id order; pass its ``next_page_token`` for the next."""
        return self.stub.ListReferences(
            pb.ListReferencesRequest(collection=collection, page_size=page_size, page_token=page_token),
            **self._options)

    def delete(self, reference_id: int = 0, collection: str = "", external_id: str = "") -> pb.Reference:
        request = (pb.DeleteReferenceRequest(external=pb.ExternalKey(collection=collection, external_id=external_id))
                   if external_id else pb.DeleteReferenceRequest(id=reference_id))
        return self.stub.DeleteReference(request, **self._options).reference

    def stats(self) -> pb.GetIndexStatsResponse:
        return self.stub.GetIndexStats(pb.GetIndexStatsRequest(), **self._options)
