"""Prometheus metrics of one server (``--metrics-port``: ``/metrics`` over HTTP).

Each server has a registry of its own (several servers in one process, as the tests run
them, do not share counters).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("origin_id_requests", "RPCs answered, by method and status code",
                                ["method", "code"], registry=r)
        self.latency = Histogram("origin_id_request_seconds", "RPC time, by method", ["method"],
                                 buckets=_SECONDS, registry=r)
        self.stages = Histogram("origin_id_stage_seconds", "time in each stage of a call's work", ["stage"],
                                buckets=_SECONDS, registry=r)
        self.in_flight = Gauge("origin_id_admitted_calls", "compute-bound calls admitted and not finished",
                               registry=r)
        self.rejected = Counter("origin_id_rejected_calls", "calls refused before any work, by reason",
                                ["reason"], registry=r)
        self.index_vectors = Gauge("origin_id_index_vectors", "vectors in the live index", registry=r)
        self.ingested = Counter("origin_id_ingested_images", "images added, by outcome", ["outcome"], registry=r)
        self.postgres_up = Gauge("origin_id_postgres_up", "1 when PostgreSQL answers", registry=r)
        self._server = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``port`` (0 = a free one); returns the port."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
