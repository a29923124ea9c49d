"""The gRPC server process: OriginService + health + reflection.

Start-up order matters for callers: the port is bound and the health service
answers NOT_SERVING at once; the models, the store and the index load in a
background thread, after which health turns SERVING. Load balancers and
``OriginClient.wait_until_serving`` rely on that. ``stop`` drains in-flight
calls, then checkpoints the index and stops the embedded PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from origin_id.indexer.config import Settings
from origin_id.indexer.origin_index import OriginIndex
from origin_id.server.api.origin.v1 import origin_pb2, origin_pb2_grpc
from origin_id.server.client import SERVICE_NAME, channel_options
from origin_id.server.servicer import OriginServicer

log = logging.getLogger(__name__)


class OriginServer:
    def __init__(self, settings: Settings, origin: OriginIndex | None = None):
        """``origin``: an already opened index to serve (tests share one); else opened on start."""
        self.settings = settings
        self._given = origin
        self.origin: OriginIndex | None = None
        self.servicer = OriginServicer()
        self.health = health.HealthServicer()
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
            options=channel_options(settings.max_message_bytes),
            # Beyond this many calls in flight, new ones get RESOURCE_EXHAUSTED instead of queueing forever.
            maximum_concurrent_rpcs=settings.workers * 8,
        )
        origin_pb2_grpc.add_OriginServiceServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (origin_pb2.DESCRIPTOR.services_by_name["OriginService"].full_name,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = 0

    def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def start(self) -> int:
        address = f"{self.settings.host}:{self.settings.port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {address}")
        self.server.start()
        log.info("listening on %s:%d (NOT_SERVING until the index is loaded)", self.settings.host, self.port)
        threading.Thread(target=self._load, name="load-index", daemon=True).start()
        return self.port

    def _load(self) -> None:
        try:
            origin = self._given or OriginIndex.open(self.settings)
            if self._given is None:
                log.info("index: %s; %d vectors", origin.load_report, len(origin.index))
                origin.start_maintenance()
            self.origin = origin
            self.servicer.origin = origin
            self._set_health(health_pb2.HealthCheckResponse.SERVING)
            log.info("SERVING on port %d (model %s, %s)", self.port, origin.bundle.version,
                     origin.index.description)
        except BaseException as exc:
            self.load_error = exc
            log.exception("failed to load the index; the server stays NOT_SERVING")
        finally:
            self.loaded.set()

    def stop(self, grace: float = 10.0) -> None:
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        self.loaded.wait(timeout=300)
        if self.origin is not None and self._given is None:
            self.origin.close()
        log.info("stopped")

    def wait(self) -> None:
        self.server.wait_for_termination()
