"""Every OriginService call passes through ``CallGuard`` before and after its handler.

Before: the request id (``x-request-id`` or a new one), the request message (one that does
not parse is INVALID_ARGUMENT, not the INTERNAL grpc would answer), the database (down:
UNAVAILABLE at once), the caller (``server.auth``), the key's rate and, for compute-bound
calls, a slot (``server.admission``). During: ``GrpcCall`` is the call's
``origin_id.models.compute.CallWatch``: each stage of the work (decode, embed, search,
detectors, read, write) first checks that the caller still waits, so an abandoned call
stops where it is and a write whose deadline passed is not committed. After: one status
code per error kind (``status_for``), metrics, one log line.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from origin_id.indexer.errors import (
    Abandoned,
    Conflict,
    EmptyIndex,
    ImageTooLarge,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from origin_id.models import compute
from origin_id.server import logs
from origin_id.server.admission import Admission, Overloaded, RateLimiter
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.auth import ANONYMOUS, Authenticator, Principal
from origin_id.server.metrics import ServiceMetrics

log = logging.getLogger("origin_id.server.calls")
SERVICE = "origin.v1.OriginService"
#: Longest status message sent: a message never carries unbounded input back.
MAX_MESSAGE = 500

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ImageTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (EmptyIndex, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def status_for(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, Abandoned):
        return grpc.StatusCode.CANCELLED if exc.cancelled else grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, grpc.RpcError):  # the client's side of a stream broke: it has gone
        return grpc.StatusCode.CANCELLED
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class Malformed:
    """What a request message that does not parse deserializes to (the handler refuses it)."""

    type_name: str


class GrpcCall:
    """One call as its handler sees it: who is calling, and whether they still wait."""

    def __init__(self, method: str, context: grpc.ServicerContext, metrics: ServiceMetrics, request_id: str):
        self.method, self.context, self.metrics, self.request_id = method, context, metrics, request_id
        self.principal: Principal = ANONYMOUS
        self.started = time.monotonic()
        self._stage, self._since = "", self.started

    def check(self) -> None:
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Abandoned(self._stage or self.method, cancelled=False)
        if not self.context.is_active():
            raise Abandoned(self._stage or self.method, cancelled=True)

    def stage(self, name: str) -> None:
        self.check()
        self._end_stage()
        self._stage = name

    def _end_stage(self) -> None:
        now = time.monotonic()
        if self._stage:
            self.metrics.stages.labels(self._stage).observe(now - self._since)
        self._since = now

    def finish(self) -> None:
        self._end_stage()
        self._stage = ""


class CallGuard:
    def __init__(self, authenticator: Authenticator, admission: Admission, limiter: RateLimiter,
                 metrics: ServiceMetrics, available: Callable[[], None] = lambda: None):
        """``available``: raises ``Unavailable`` while the server cannot answer (loading, or
        its database down), so such calls are refused before any work."""
        self.authenticator, self.admission, self.limiter = authenticator, admission, limiter
        self.metrics, self.available = metrics, available

    def unary(self, name: str, behavior: Callable, compute_bound: bool) -> Callable:
        def handle(request, context: grpc.ServicerContext):
            call = self._begin(name, context)
            code = grpc.StatusCode.OK
            try:
                with self._admitted(call, request, compute_bound):
                    return behavior(request, call)
            except BaseException as exc:
                code = status_for(exc)
                self._abort(call, exc, code)
            finally:
                self._end(call, code)
        return handle

    def stream(self, name: str, behavior: Callable, compute_bound: bool) -> Callable:
        def handle(request_iterator, context: grpc.ServicerContext) -> Iterator:
            call = self._begin(name, context)
            code = grpc.StatusCode.OK
            try:
                with self._admitted(call, None, compute_bound):
                    yield from behavior(request_iterator, call)
            except GeneratorExit:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException as exc:
                code = status_for(exc)
                self._abort(call, exc, code)
            finally:
                self._end(call, code)
        return handle

    def _begin(self, name: str, context: grpc.ServicerContext) -> GrpcCall:
        given = next((v for k, v in context.invocation_metadata() if k == "x-request-id"), "")
        request_id = given if isinstance(given, str) and 0 < len(given) <= 64 and given.isprintable() \
            else uuid.uuid4().hex[:16]
        context.set_trailing_metadata((("x-request-id", request_id),))
        logs.request_id.set(request_id)
        return GrpcCall(name, context, self.metrics, request_id)

    def _admitted(self, call: GrpcCall, request, compute_bound: bool):
        if isinstance(request, Malformed):
            raise InvalidRequest(f"the request is not a valid {request.type_name} message")
        self.available()
        call.principal = self.authenticator.authenticate(call.context.invocation_metadata())
        self.limiter.take(call.principal.key_id, call.principal.rate_limit)
        return _Admitted(self, call, compute_bound)

    def _abort(self, call: GrpcCall, exc: BaseException, code: grpc.StatusCode) -> None:
        """Answer ``code`` for ``exc`` (raises, as ``context.abort`` does)."""
        if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortedError":
            raise exc  # already a status (the context aborted), or the client's stream broke
        if code == grpc.StatusCode.INTERNAL:
            log.exception("%s failed", call.method)
            message = f"internal error in {call.method}; see the server log (request {call.request_id})"
        else:
            message = str(exc)[:MAX_MESSAGE]
        if isinstance(exc, Overloaded):
            self.metrics.rejected.labels(exc.reason).inc()
        elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            self.metrics.rejected.labels(code.name.lower()).inc()
        call.context.abort(code, message)

    def _end(self, call: GrpcCall, code: grpc.StatusCode) -> None:
        call.finish()
        seconds = time.monotonic() - call.started
        self.metrics.requests.labels(call.method, code.name).inc()
        self.metrics.latency.labels(call.method).observe(seconds)
        log.info("%s %s in %.1f ms", call.method, code.name, seconds * 1000,
                 extra={"method": call.method, "code": code.name, "ms": round(seconds * 1000, 1),
                        "key": call.principal.name})
        logs.request_id.set("")


class _Admitted:
    """A compute-bound call's slot, and the call watched by the compute thread while it holds one."""

    def __init__(self, guard: CallGuard, call: GrpcCall, compute_bound: bool):
        self.guard, self.call, self.compute_bound = guard, call, compute_bound
        self._slot = self._watch = None

    def __enter__(self):
        if self.compute_bound:
            self._slot = self.guard.admission.slot()
            self._slot.__enter__()
            self.guard.metrics.in_flight.inc()
        self._watch = compute.watching(self.call)
        self._watch.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._watch.__exit__(*exc)
        if self._slot is not None:
            self.guard.metrics.in_flight.dec()
            self._slot.__exit__(*exc)


def register(server: grpc.Server, servicer, guard: CallGuard) -> None:
    """OriginService's methods on ``server``: ``servicer``'s handlers behind ``guard``.

    The generated ``add_OriginServiceServicer_to_server`` is not used: its deserializers
    raise on a malformed message, which grpc answers with INTERNAL."""
    service = pb.DESCRIPTOR.services_by_name["OriginService"]
    handlers = {}
    for method in service.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        behavior = getattr(servicer, method.name)
        compute_bound = method.name in servicer.COMPUTE_BOUND
        options = {"request_deserializer": _safe_parser(request_type),
                   "response_serializer": response_type.SerializeToString}
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                guard.stream(method.name, behavior, compute_bound), **options)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                guard.unary(method.name, behavior, compute_bound), **options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _safe_parser(message_type) -> Callable[[bytes], object]:
    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except Exception:
            return Malformed(message_type.DESCRIPTOR.name)
    return parse
