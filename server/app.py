"""The gRPC server process: OriginService + health + reflection (+ Prometheus metrics).

Start-up order matters for callers: the port is bound and the health service answers
NOT_SERVING at once; the models, the store and the index load in a background thread,
after which health turns SERVING. Load balancers and ``OriginClient.wait_until_serving``
rely on that. While PostgreSQL is down health is NOT_SERVING and calls are UNAVAILABLE;
the database watch brings an embedded cluster back and turns health SERVING again.
``stop`` drains in-flight calls, then checkpoints the index and stops the embedded
PostgreSQL.

What may face a network (``check_exposure``): on an address other than loopback, API keys
are required unless ``--auth off``, and serving plaintext without them needs ``--insecure``.
Health and reflection stay open to all, for load balancers and tools.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from origin_id.indexer.config import Settings
from origin_id.indexer.errors import NotReady, Unavailable
from origin_id.indexer.origin_index import OriginIndex
from origin_id.server import memory
from origin_id.server.admission import Admission, RateLimiter
from origin_id.server.api.origin.v1 import origin_pb2
from origin_id.server.auth import Authenticator
from origin_id.server.calls import CallGuard, register
from origin_id.server.client import SERVICE_NAME, channel_options
from origin_id.server.metrics import ServiceMetrics
from origin_id.server.servicer import OriginServicer

log = logging.getLogger(__name__)
#: How often freed memory is handed back to the system (``server.memory``).
TRIM_INTERVAL_S = 10.0


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(settings: Settings) -> bool:
    if settings.auth not in ("auto", "on", "off"):
        raise ValueError(f"auth must be auto, on or off, not {settings.auth!r}")
    return settings.auth == "on" or (settings.auth == "auto" and not is_loopback(settings.host))


def check_exposure(settings: Settings) -> None:
    """Refuse a server that anyone on the network could use, unless told so."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if settings.tls_client_ca and not settings.tls_cert:
        raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if is_loopback(settings.host):
        return
    if not settings.tls_cert and not auth_required(settings) and not settings.insecure:
        raise ValueError(f"refusing to serve {settings.host} in plaintext without API keys: pass --tls-cert and "
                         f"--tls-key, or --auth on, or --insecure if this network is trusted")
    if not settings.tls_cert:
        log.warning("serving %s in plaintext: API keys and images cross the network unencrypted "
                    "(pass --tls-cert and --tls-key)", settings.host)


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    chain = Path(settings.tls_cert).read_bytes()
    key = Path(settings.tls_key).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


class OriginServer:
    def __init__(self, settings: Settings, origin: OriginIndex | None = None):
        """``origin``: an already opened index to serve (tests share one); else opened on start."""
        check_exposure(settings)
        self.settings = settings
        self._given = origin
        self.origin: OriginIndex | None = None
        self.database_up = True
        self.servicer = OriginServicer()
        self.health = health.HealthServicer()
        self.metrics = ServiceMetrics()
        self.authenticator = Authenticator(auth_required(settings))
        self.guard = CallGuard(self.authenticator, Admission(settings.max_admitted), RateLimiter(settings.rate_limit),
                               self.metrics, self._available)
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        self._stopping = threading.Event()
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
            options=channel_options(settings.max_message_bytes),
            # Beyond this many calls in flight, new ones get RESOURCE_EXHAUSTED instead of queueing forever.
            maximum_concurrent_rpcs=settings.workers * 8,
        )
        register(self.server, self.servicer, self.guard)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (origin_pb2.DESCRIPTOR.services_by_name["OriginService"].full_name,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = 0
        self.metrics_port = 0

    def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _available(self) -> None:
        if self.origin is None:
            raise NotReady("the index is still loading; retry shortly")
        if not self.database_up:
            raise Unavailable("the database is unavailable; retry shortly")

    def start(self) -> int:
        address = f"{self.settings.host}:{self.settings.port}"
        if self.settings.tls_cert:
            self.port = self.server.add_secure_port(address, server_credentials(self.settings))
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {address}")
        self.server.start()
        if self.settings.metrics_port:
            self.metrics_port = self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)
        log.info("listening on %s:%d (%s, API keys %s; NOT_SERVING until the index is loaded)",
                 self.settings.host, self.port, "TLS" if self.settings.tls_cert else "plaintext",
                 "required" if self.authenticator.enabled else "off")
        threading.Thread(target=self._load, name="load-index", daemon=True).start()
        return self.port

    def _load(self) -> None:
        try:
            origin = self._given or OriginIndex.open(self.settings)
            if self._given is None:
                log.info("index: %s; %d vectors", origin.load_report, len(origin.index))
                origin.start_maintenance()
            self.authenticator.keys = origin.keys
            self.metrics.index_vectors.set_function(lambda: len(origin.index))
            self.metrics.postgres_up.set(1)
            self.origin = origin
            self.servicer.origin = origin
            memory.trim()  # what building the index took and let go
            self._set_health(health_pb2.HealthCheckResponse.SERVING)
            log.info("SERVING on port %d (model %s, %s)", self.port, origin.bundle.version,
                     origin.index.description)
            threading.Thread(target=self._watch_database, name="database-watch", daemon=True).start()
        except BaseException as exc:
            self.load_error = exc
            log.exception("failed to load the index; the server stays NOT_SERVING")
        finally:
            self.loaded.set()

    def _watch_database(self) -> None:
        """Every few tenths of a second (and trims the heap every ``TRIM_INTERVAL_S``).

        PostgreSQL down: NOT_SERVING and UNAVAILABLE at once, and recovery attempts until it
        answers; then SERVING again, after picking up what other processes wrote meanwhile."""
        origin = self.origin
        last_trim = time.monotonic()
        while not self._stopping.wait(self.settings.db_check_interval_s):
            if time.monotonic() - last_trim >= TRIM_INTERVAL_S:
                memory.trim()
                last_trim = time.monotonic()
            up = origin.database_answers()
            if not up:
                if self.database_up:  # reported first: recovery can take a while
                    self.database_up = False
                    self.metrics.postgres_up.set(0)
                    self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
                    log.warning("PostgreSQL is unavailable: NOT_SERVING until it is back")
                up = origin.recover_database()
            if up == self.database_up:
                continue
            try:
                origin.sync_index()
            except Exception:
                log.exception("index sync after the database came back failed")
            self.database_up = True
            self.metrics.postgres_up.set(1)
            self._set_health(health_pb2.HealthCheckResponse.SERVING)
            log.info("PostgreSQL is back: SERVING")

    def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        self.metrics.close()
        self.loaded.wait(timeout=300)
        if self.origin is not None and self._given is None:
            self.origin.close()
        log.info("stopped")

    def wait(self) -> None:
        self.server.wait_for_termination()
